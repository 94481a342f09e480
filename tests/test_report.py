"""`archlab report`: Markdown and HTML with plots, over the real offline nb201
campaign of test_chat (built once per session), and over a copy of it given
what that campaign lacks: failures, a gate refusal, seeds, spend and curves."""
from __future__ import annotations

import json
import time

import pytest
from test_chat import copy_workspace, ranked, shared_campaign

from archlab.analysis.report import build_report
from archlab.campaign_folder import CampaignFolder
from archlab.memory.ledger import Ledger

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(nb201_table, tmp_path_factory):
    return shared_campaign(nb201_table, tmp_path_factory)


@pytest.fixture
def ws(built, tmp_path):
    return copy_workspace(built[0], tmp_path / "runs"), built[1]


def test_report_renders_with_its_plots(ws):
    ws, cid = ws
    made = build_report(CampaignFolder(ws / cid))
    assert made.markdown == ws / cid / "report" / "report.md"
    names = sorted(p.name for p in made.images)
    assert names == ["best_so_far.png", "best_so_far_compute.png", "distribution.png", "lineage.png"]
    assert all(p.read_bytes()[:8] == PNG and p.stat().st_size > 5000 for p in made.images)
    md, page = made.markdown.read_text(), made.html.read_text()
    best = ranked(ws, cid)[0]
    assert f"Best: **#{best.id} {best.name}** ({best.origin}), val_acc = {best.score:.4g}" in md
    assert "| rank | id | origin | name | parent | val_acc | test_acc |" in md
    assert "Every candidate was run once (no seeds)" in md
    assert "No training curves to plot: the `nb201` task's results carry none" in md
    assert "against train seconds (no GPU used)" in md and "No experiment failed." in md
    for name in names:
        assert f"({name})" in md and f"<img src='{name}'" in page
    assert f"<strong>#{best.id} {best.name}</strong>" in page and "<table>" in page


def test_report_counts_savings_failures_seeds_spend_and_curves(ws, tmp_path):
    ws, cid = ws
    ledger = Ledger(ws / cid / "ledger.sqlite")
    for reason in ("check timeout: no result within 30 s", "check timeout: no result within 30 s",
                   "coder: openai/x gave no valid CodeAnswer in 3 attempts"):
        exp = ledger.allocate("campaign")
        ledger.update(exp, status="failed", failure_reason=reason, finished=time.time())
    top = ranked(ws, cid)[0]
    ledger.event(top.id, "gate.duplicate", {"layer": "ast_hash", "neighbour": 2, "reason": "same ast hash as #2"},
                 key="test-dup")
    ledger.event(top.id, "gate.near_duplicate", {"layer": "embedding", "neighbour": 2, "reason": "too close"},
                 key="test-near")
    ledger.update(top.id, metrics={**top.metrics, "seeds": [{"val_acc": v} for v in (92.0, 93.0, 93.5)]})
    ledger.add_spend(tokens=1234, usd=0.5, llm_calls=3, gpu_s=7200)
    campaign = [e for e in ranked(ws, cid) if e.origin == "campaign"][:2]
    baseline = next(e for e in ranked(ws, cid) if e.origin == "baseline")
    for i, e in enumerate([*campaign, baseline]):
        curves = {"train": [[s, 3.0 - 0.1 * s - 0.05 * i] for s in range(1, 11)], "val": [[5, 2.7 - i / 10], [10, 2.4]]}
        (ws / cid / "experiments" / str(e.id) / "metrics.json").write_text(json.dumps({"metrics": e.metrics,
                                                                                     "curves": curves}))
    made = build_report(CampaignFolder(ws / cid), tmp_path / "out")
    md = made.markdown.read_text()
    assert made.markdown.parent == tmp_path / "out"
    assert "| check timeout | 2 |" in md and "| coder | 1 |" in md
    assert "3 failed" in md and "**1** (1 by ast hash)" in md and "novelty check: **1**" in md
    assert "| 1 | #" in md and "seeds | 95% interval |" in md and "| 3 | [" in md
    assert "| tokens | 1,234 |" in md and "| USD | 0.5000 |" in md and "| GPU-hours | 2.0000 |" in md
    assert "top campaign candidates (2, solid) against the baselines (1, dashed)" in md
    assert (tmp_path / "out" / "curves.png").read_bytes()[:8] == PNG
