"""archlab replay: a logged campaign re-executes with zero divergence; an edited
llm.jsonl entry or a changed prompt template stops it at the right step; an
offline campaign (run in parallel) replays too; --fork continues live."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ARCHLAB
from test_llm_campaign import RULES

from archlab.campaign import Campaign
from archlab.config import load_config
from archlab.replay import replay


@pytest.fixture
def llm_campaign(tmp_path: Path, nb201_table: Path) -> tuple[Path, str]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": RULES}))
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "llm": {"model": f"scripted/{script}"}, "budget": {"experiments": 5}, "search": {"baselines": False}})
    campaign = Campaign.create(cfg)
    campaign.run()
    script.unlink()  # the replay must need nothing but the campaign folder
    return tmp_path / "runs", campaign.folder.id


def test_scripted_llm_campaign_replays_without_divergence(llm_campaign, cli_env):
    ws, cid = llm_campaign
    res = subprocess.run([*ARCHLAB, "replay", cid, "--workspace", str(ws)], capture_output=True, text=True, env=cli_env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "replayed 5 experiments" in res.stdout and "no divergence" in res.stdout
    story = subprocess.run([*ARCHLAB, "replay", cid, "--timeline", "--workspace", str(ws)],
                           capture_output=True, text=True, env=cli_env).stdout
    assert "#2 [campaign] conv1x1-shortcut: done" in story
    assert "gate: duplicate — same ast hash as #1" in story
    assert "model research:0 attempt 2: invalid" in story


def test_edited_llm_record_stops_at_that_step(llm_campaign):
    ws, cid = llm_campaign
    log = ws / cid / "llm.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for rec in records:  # someone edits the model's answer for experiment 2's second proposal
        if rec["experiment"] == 2 and rec["step"] == "code:1":
            rec["response"] = rec["response"].replace("nor_conv_1x1(x0)", "nor_conv_3x3(x0)")
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = replay(ws, cid)
    assert not report.ok and report.experiments == [1]
    div = report.divergence
    assert div.experiment == 2 and "gate" in div.step, str(div)
    assert "duplicate" in str(div) or "ast" in str(div)


def test_changed_prompt_template_stops_at_the_first_call_using_it(llm_campaign, tmp_path, monkeypatch):
    import archlab.prompts as prompts

    ws, cid = llm_campaign
    changed = tmp_path / "prompts"
    shutil.copytree(prompts.TEMPLATE_DIR, changed, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (changed / "repair.j2").read_text().replace("Fix the module", "Please fix the module")
    (changed / "repair.j2").write_text(text)
    monkeypatch.setattr(prompts, "TEMPLATE_DIR", changed)
    prompts.environment.cache_clear()
    try:
        report = replay(ws, cid)
    finally:
        prompts.environment.cache_clear()
    div = report.divergence
    assert div is not None and div.experiment == 1 and div.step == "code:1 attempt 0", str(div)
    assert "request differs" in div.detail and "+[user] Please fix the module" in div.detail


def test_offline_parallel_campaign_replays_and_forks(tmp_path, nb201_table):
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "budget": {"experiments": 12}, "search": {"parallel": 3, "population": 4, "tournament": 2}})
    campaign = Campaign.create(cfg)
    campaign.run()
    report = replay(tmp_path / "runs", campaign.folder.id)
    assert report.ok, str(report.divergence)
    assert report.experiments == list(range(1, 16))
    forked = replay(tmp_path / "runs", campaign.folder.id, to=8, fork=True, overrides={"budget": {"experiments": 10}})
    assert forked.ok and forked.experiments == list(range(1, 9))
    assert forked.forked.counts["campaign.done"] == 10


def test_retrain_reexecutes_jobs_and_matches(tmp_path, nb201_table):
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "budget": {"experiments": 4}, "search": {"strategy": "random", "baselines": False}})
    campaign = Campaign.create(cfg)
    campaign.run()
    report = replay(tmp_path / "runs", campaign.folder.id, retrain=True)
    assert report.ok and report.experiments == [1, 2, 3, 4]
    replayed = tmp_path / "runs" / report.replay / "experiments" / "1" / "train-1"
    assert (replayed / "log").exists(), "--retrain must run the job again"
