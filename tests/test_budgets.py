"""Hard budget stops: an LLM token budget stops the campaign before the next
model call, leaves the experiment resumable, and a larger budget finishes it."""
from __future__ import annotations

import json
from pathlib import Path

from test_llm_campaign import CELL_A, CELL_B, code, proposal

from archlab.campaign import Campaign
from archlab.config import load_config


def test_token_budget_stops_then_resume_with_more(tmp_path: Path, nb201_table: Path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": [
        {"step": "research:0", "experiment": 1, "response": proposal("a")},
        {"step": "code:0", "experiment": 1, "response": code(CELL_A)},
        {"step": "research:0", "experiment": 2, "response": proposal("b", 1)},
        {"step": "code:0", "experiment": 2, "response": code(CELL_B)},
        {"step": "analyse:0", "response": "fine"},
    ]}))
    over = {"workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
            "llm": {"model": f"scripted/{script}"}, "budget": {"experiments": 2, "tokens": 100},
            "search": {"baselines": False}}
    campaign = Campaign.create(load_config(None, env={}, overrides=over))
    summary = campaign.run()
    # litellm's mock reports 30 tokens a call: research, code, analyse of #1, research of #2, then stop
    assert summary.stop_reason.startswith("token budget reached (120 of 100)"), summary.stop_reason
    assert campaign.ledger.get(1).status == "done"
    assert campaign.ledger.get(2).status == "running"
    assert summary.spend["tokens"] == 120 and summary.spend["llm_calls"] == 4

    resumed = Campaign.open(tmp_path / "runs", campaign.folder.id, {"budget": {"tokens": 10_000}})
    summary = resumed.run()
    assert summary.stop_reason.startswith("experiment budget reached")
    assert resumed.ledger.get(2).status == "done" and resumed.ledger.get(2).name == "b"
    steps = [json.loads(line)["step"] for line in resumed.folder.llm_log.read_text().splitlines()]
    assert steps.count("research:0") == 2, "the resumed experiment asked its researcher again"
    assert json.loads((resumed.folder.config).read_text())["budget"]["tokens"] == 10_000


def test_experiment_budget_counts_failures_and_not_baselines(tmp_path: Path, nb201_table: Path):
    over = {"workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
            "budget": {"experiments": 4}, "search": {"strategy": "random"}}
    campaign = Campaign.create(load_config(None, env={}, overrides=over))
    summary = campaign.run()
    assert summary.counts["campaign.done"] == 4 and summary.counts["baseline.done"] == 3
    assert summary.spend["wall_s"] > 0 and summary.spend["train_s"] > 0
