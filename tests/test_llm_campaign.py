"""The LLM path of the whole graph, driven through litellm by the scripted mock
model (a hosted LLM cannot be reached here): proposals, code, a failed check
repaired, a duplicate refused by the gate, malformed answers retried with
feedback and then recorded as failures while the campaign goes on."""
from __future__ import annotations

import json
from pathlib import Path

from archlab.campaign import Campaign
from archlab.config import load_config

CELL_A = """def cell(x0, ops):
    x1 = ops.nor_conv_3x3(x0)
    x2 = ops.nor_conv_3x3(x0) + ops.nor_conv_3x3(x1)
    return ops.skip_connect(x0) + ops.nor_conv_3x3(x1) + ops.nor_conv_3x3(x2)
"""
CELL_A_RENAMED = """def cell(inp, ops):
    # a 'new' idea that is the same cell
    h = ops.nor_conv_3x3(inp)
    g = ops.nor_conv_3x3(inp) + ops.nor_conv_3x3(h)
    return ops.skip_connect(inp) + ops.nor_conv_3x3(h) + ops.nor_conv_3x3(g)
"""
CELL_B = CELL_A.replace("ops.skip_connect(x0)", "ops.nor_conv_1x1(x0)")
CELL_C = CELL_A.replace("ops.skip_connect(x0)", "ops.avg_pool_3x3(x0)")
BROKEN = CELL_A.replace("ops.nor_conv_3x3(x1)\n    return", "ops.conv_5x5(x1)\n    return")


def proposal(name: str, parent: int | None = None) -> str:
    body = json.dumps({"name": name, "motivation": f"{name}: deeper convolution paths help",
                       "design": f"{name}: a cell with more 3x3 convolutions", "parent_id": parent})
    return f"Here is my proposal.\n```json\n{body}\n```\nLet me know."


def code(source: str) -> str:
    return "```json\n" + json.dumps({"code": source}) + "\n```"


RULES = [
    # experiment 1: a check failure (unknown op) repaired by the coder
    {"step": "research:0", "experiment": 1, "response": proposal("deep-conv")},
    {"step": "code:0", "experiment": 1, "response": code(BROKEN)},
    {"step": "code:1", "experiment": 1, "response": code(CELL_A)},
    # experiment 2: a renamed copy of #1 refused by the gate, then a new proposal
    {"step": "research:0", "experiment": 2, "response": proposal("deep-conv-v2", 1)},
    {"step": "code:0", "experiment": 2, "response": code(CELL_A_RENAMED)},
    {"step": "research:1", "experiment": 2, "response": proposal("conv1x1-shortcut", 1)},
    {"step": "code:1", "experiment": 2, "response": code(CELL_B)},
    # experiment 3: the researcher never answers usefully (not JSON, missing fields, empty)
    {"step": "research:0", "experiment": 3, "attempt": 0, "response": "I think we should try attention!"},
    {"step": "research:0", "experiment": 3, "attempt": 1, "response": '{"name": "x"}'},
    {"step": "research:0", "experiment": 3, "attempt": 2, "response": ""},
    # experiment 4: the coder's code never validates (does not parse, wrong name, empty)
    {"step": "research:0", "experiment": 4, "response": proposal("pool-first")},
    {"step": "code:0", "experiment": 4, "attempt": 0, "response": code("def cell(x0, ops):\n    return ops.none(x0")},
    {"step": "code:0", "experiment": 4, "attempt": 1, "response": code("def cel(x0, ops):\n    return x0\n")},
    {"step": "code:0", "experiment": 4, "attempt": 2, "response": code("")},
    # experiment 5: fine again: the campaign went on
    {"step": "research:0", "experiment": 5, "response": proposal("avg-pool-shortcut", 2)},
    {"step": "code:0", "experiment": 5, "response": code(CELL_C)},
    {"step": "analyse:0", "response": "More 3x3 convolutions helped; next, vary the shortcut."},
]


def test_scripted_llm_campaign_runs_the_whole_graph(tmp_path: Path, nb201_table: Path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": RULES}))
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "llm": {"model": f"scripted/{script}"}, "budget": {"experiments": 5}, "search": {"baselines": False}})
    assert cfg.strategy == "llm"
    campaign = Campaign.create(cfg)
    summary = campaign.run()
    ledger = campaign.ledger
    status = {e.id: e.status for e in ledger.experiments()}
    assert status == {1: "done", 2: "done", 3: "failed", 4: "failed", 5: "done"}, status

    one = ledger.get(1)
    assert Path(one.code_path).read_text() == CELL_A
    checks = [e["data"]["status"] for e in ledger.events(1, "check.end")]
    assert checks[0] != "ok" and checks[-1] == "ok", checks
    assert one.analysis.startswith("More 3x3 convolutions helped")

    dup = ledger.events(2, "gate.duplicate")
    assert len(dup) == 1 and dup[0]["data"]["neighbour"] == 1
    assert ledger.get(2).name == "conv1x1-shortcut" and ledger.get(2).parent == 1
    assert summary.counts["reused"] == 1

    assert ledger.get(3).failure_reason.startswith("researcher:")
    assert "3 attempts" in ledger.get(3).failure_reason or "attempts" in ledger.get(3).failure_reason
    assert ledger.get(4).failure_reason.startswith("coder:")

    calls = [json.loads(line) for line in campaign.folder.llm_log.read_text().splitlines()]
    # the repair prompt carried the check's error; the second proposal named the neighbour
    repair = next(c for c in calls if c["experiment"] == 1 and c["step"] == "code:1")
    assert "conv_5x5" in repair["request"]["messages"][0]["content"]
    again = next(c for c in calls if c["experiment"] == 2 and c["step"] == "research:1")
    assert "#1" in again["request"]["messages"][0]["content"]
    # malformed answers were retried with the validation error fed back
    retried = [c for c in calls if c["experiment"] == 3]
    assert [c["valid"] for c in retried] == [False, False, False]
    assert "could not be used" in retried[1]["request"]["messages"][-1]["content"]
    bad_code = [c for c in calls if c["experiment"] == 4 and c["step"] == "code:0"]
    assert "cell" in bad_code[2]["request"]["messages"][-1]["content"]
    assert summary.spend["tokens"] > 0 and summary.spend["llm_calls"] == len(calls)
