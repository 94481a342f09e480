"""One ranking: `archlab show`, `archlab report`, the chat's leaderboard tool and the
researcher's elites name the same best experiment of a campaign whose runs carry seeds,
where the best single number and the best mean over seeds are different experiments."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from conftest import ARCHLAB

from archlab.agents.evidence import for_researcher
from archlab.analysis.chat_tools import Lab, call_tool
from archlab.campaign import Campaign
from archlab.config import load_config


def _seeded(val: list[float]) -> dict:
    """A run of several seeds as a harness records it; its first seed is also its headline number."""
    return {"val_acc": val[0], "test_acc": val[0] + 2.0, "seeds": [{"val_acc": v, "test_acc": v + 2.0} for v in val]}


def test_show_report_chat_and_researcher_agree_on_the_best(tmp_path: Path, nb201_table: Path, cli_env):
    ws = tmp_path / "runs"
    cfg = load_config(None, env={}, overrides={
        "workspace": str(ws), "task": {"name": "nb201", "table": str(nb201_table)},
        "budget": {"experiments": 6}, "search": {"strategy": "random", "baselines": False},
        "memory": {"embeddings": "hash"}})
    campaign = Campaign.create(cfg)
    campaign.run()
    cid, task, ledger = campaign.folder.id, campaign.ctx.task, campaign.ledger
    done = [e for e in ledger.experiments(status=["done"])]
    top = max(e.score for e in done)
    lucky, steady = done[0].id, done[1].id
    # `lucky`: the best single number, but its seeds average low; `steady`: the best mean over seeds
    for exp, seeds in ((lucky, [top + 5.0, top - 9.0, top - 9.0]), (steady, [top + 1.0, top + 1.5, top + 2.0])):
        metrics = _seeded(seeds)
        ledger.update(exp, metrics=metrics, score=task.score(metrics))  # what the analyst's record step writes
    campaign.close_memory()

    shown = subprocess.run([*ARCHLAB, "show", cid, "--json", "--workspace", str(ws)], capture_output=True,
                           text=True, env=cli_env)
    assert shown.returncode == 0, shown.stderr
    best_show = json.loads(shown.stdout)["best"]["id"]

    made = subprocess.run([*ARCHLAB, "report", cid, "--out", str(tmp_path / "report"), "--workspace", str(ws)],
                          capture_output=True, text=True, env=cli_env)
    assert made.returncode == 0, made.stderr
    best_report = int(re.search(r"Best: \*\*#(\d+) ", (tmp_path / "report" / "report.md").read_text()).group(1))

    board = call_tool(Lab(ws, cid), "leaderboard", {"campaign": cid, "limit": 3})["boards"][0]
    best_chat = board["rows"][0]["id"]

    reopened = Campaign.open(ws, cid)
    view = for_researcher(reopened.ctx, max(e.id for e in ledger.experiments()) + 1)
    first_elite = view["items"][view["sections"]["elites"][0]]
    best_elites = int(first_elite["ref"].lstrip("#"))

    assert best_show == best_report == best_chat == best_elites == steady
    assert board["rows"][0]["seeds"] == 3
