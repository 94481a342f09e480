"""The LLM path of the whole graph, driven through litellm by the scripted mock
model (a hosted LLM cannot be reached here): proposals, code, a failed check
repaired, a duplicate refused by the gate, malformed answers retried with
feedback and then recorded as failures while the campaign goes on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def proposal(name: str, parent: int | None = None, genome: bool = True) -> str:
    """A researcher's answer as models write it: a fenced JSON object amid prose, with
    nb201's design as data (the genome its schema asks for) unless `genome` is False."""
    body = json.dumps({"name": name, "motivation": f"{name}: deeper convolution paths help",
                       "design": f"{name}: a cell with more 3x3 convolutions", "parent_id": parent,
                       **({"genome": {"edges": ["nor_conv_3x3"] * 6}} if genome else {})})
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


# --- a provider that misbehaves: nothing is recorded as failed for a reason the model could not see ---

def scripted_config(tmp_path: Path, table: Path, rules: list[dict], **over) -> tuple[Path, dict]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": rules}))
    cfg = {"workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(table)},
           "llm": {"model": f"scripted/{script}", "retries": 2, "backoff_s": 0.0}, "budget": {"experiments": 2},
           "search": {"baselines": False}}
    for section, values in over.items():
        cfg.setdefault(section, {}).update(values)
    return script, cfg


GOOD_RULES = [
    {"step": "research:0", "experiment": 1, "response": proposal("a")},
    {"step": "code:0", "experiment": 1, "response": code(CELL_A)},
    {"step": "research:0", "experiment": 2, "response": proposal("b", 1)},
    {"step": "code:0", "experiment": 2, "response": code(CELL_B)},
    {"step": "analyse:0", "response": "fine"},
]


def test_an_outage_pauses_the_campaign_and_resume_continues_it(tmp_path: Path, nb201_table: Path):
    """Every research call rate-limited: before, 10 of 10 experiments failed in 17 s and the
    campaign ended 'budget reached'; now it pauses with the experiment resumable."""
    script, over = scripted_config(tmp_path, nb201_table, [{"step": "research:0", "status": 429, "error": "slow down"}],
                                   budget={"experiments": 10})
    campaign = Campaign.create(load_config(None, env={}, overrides=over))
    summary = campaign.run()
    assert summary.paused == "unreachable" and "model unreachable" in summary.stop_reason
    assert f"archlab resume {campaign.folder.id}" in summary.stop_reason
    rows = campaign.ledger.experiments()
    assert [(e.id, e.status) for e in rows] == [(1, "running")], "nothing failed, nothing else started"
    assert summary.counts.get("campaign.failed", 0) == 0 and campaign.ledger.spend()["tokens"] == 0
    assert campaign.ledger.events(1, "campaign.paused")
    calls = [json.loads(line) for line in campaign.folder.llm_log.read_text().splitlines()]
    assert len(calls) == 3 and all(c["response"] is None for c in calls)  # 1 try + 2 retries, then the pause

    script.write_text(json.dumps({"rules": GOOD_RULES}))  # the provider is back
    resumed = Campaign.open(tmp_path / "runs", campaign.folder.id, {"budget": {"experiments": 2}})
    summary = resumed.run()
    assert summary.paused is None and summary.stop_reason.startswith("experiment budget reached")
    assert [(e.id, e.status) for e in resumed.ledger.experiments()] == [(1, "done"), (2, "done")]


def test_a_refused_key_stops_at_once_with_what_to_fix(tmp_path: Path, nb201_table: Path, cli_env):
    import subprocess

    from conftest import ARCHLAB

    script, over = scripted_config(tmp_path, nb201_table, [{"step": "research:0", "status": 401,
                                                            "error": "Incorrect API key provided"}])
    (tmp_path / "archlab.toml").write_text(
        f'workspace = "{tmp_path / "runs"}"\n[task]\nname = "nb201"\ntable = "{nb201_table}"\n'
        f'[llm]\nmodel = "scripted/{script}"\nretries = 5\n[search]\nbaselines = false\n')
    res = subprocess.run([*ARCHLAB, "run", "-c", str(tmp_path / "archlab.toml"), "-q", "--budget", "3"],
                         capture_output=True, text=True, env=cli_env, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "model refused" in err and "API key" in err and "archlab resume" in err
    calls = [json.loads(line) for f in (tmp_path / "runs").glob("*/llm.jsonl") for line in f.read_text().splitlines()]
    assert len(calls) == 1, "a 401 is never retried"


def test_usd_budget_overshoots_by_at_most_one_call(tmp_path: Path, nb201_table: Path):
    """$0.018 a call (5,000 + 1,000 tokens at gpt-4.1's price); the researcher's answers never
    validate. Before, --usd 0.025 spent three attempts ($0.054) before the budget was looked at."""
    priced = {"usage": {"prompt_tokens": 5000, "completion_tokens": 1000}, "priced_as": "gpt-4.1"}
    script, over = scripted_config(tmp_path, nb201_table, [{"step": "research:0", "response": "no idea", **priced}],
                                   budget={"usd": 0.025})
    campaign = Campaign.create(load_config(None, env={}, overrides=over))
    summary = campaign.run()
    spend = campaign.ledger.spend()
    assert summary.stop_reason.startswith("USD budget reached")
    assert spend["llm_calls"] == 2 and spend["usd"] == pytest.approx(0.036)  # the one call past $0.025, no more
    assert campaign.ledger.get(1).status == "running", "the experiment is left to resume with a larger budget"


def test_the_analyst_lesson_never_holds_reasoning(tmp_path: Path, nb201_table: Path):
    rules = [r for r in GOOD_RULES if r["step"] != "analyse:0"] + [
        {"step": "analyse:0", "response": "<think>\nLesson: scratchpad guess\n</think>\nDeeper paths helped.\n"
                                          "Lesson: keep 3x3 convolutions on x1.", "reasoning": "more thoughts"}]
    _, over = scripted_config(tmp_path, nb201_table, rules)
    campaign = Campaign.create(load_config(None, env={}, overrides=over))
    campaign.run()
    from archlab.memory.vector import lesson

    analysis = campaign.ledger.get(1).analysis
    assert "scratchpad" not in analysis and "think" not in analysis
    assert lesson(analysis) == "keep 3x3 convolutions on x1."


def test_code_from_design_renders_the_researchers_genome_and_asks_no_coder(tmp_path: Path, nb201_table: Path):
    """GENIUS's protocol ([llm] code_from_design): the model chooses the cell, the task's
    template writes it. A proposal without a genome still goes to the coder."""
    from archlab.tasks import get_task

    edges = ["nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "skip_connect"]
    designed = json.dumps({"name": "designed", "motivation": "mixed paths", "design": "one of each op",
                           "genome": {"edges": edges}})
    rules = [{"step": "research:0", "experiment": 1, "response": designed},
             {"step": "research:0", "experiment": 2, "response": proposal("no-genome", genome=False)},
             {"step": "code:0", "experiment": 2, "response": code(CELL_B)},
             {"step": "analyse:0", "response": "Mixed ops were fine."}]
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": rules}))
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "llm": {"model": f"scripted/{script}", "code_from_design": True}, "budget": {"experiments": 2},
        "search": {"baselines": False}})
    campaign = Campaign.create(cfg)
    campaign.run()
    first, second = campaign.ledger.get(1), campaign.ledger.get(2)
    assert first.status == "done" and second.status == "done"
    space = get_task("nb201", {"table": str(nb201_table)}, None).space
    assert campaign.folder.experiment(1).joinpath("candidate.py").read_text() == space.render({"edges": edges})
    steps = [(r["experiment"], r["step"]) for r in map(json.loads, campaign.folder.llm_log.read_text().splitlines())]
    assert (1, "code:0") not in steps and (2, "code:0") in steps


def test_the_random_control_arm_asks_the_model_nothing(tmp_path: Path, nb201_table: Path):
    """With the llm strategy and control = 0.5, every second experiment is a uniform sample of the
    task's space, rendered by its template: no research or code call, no repair, no novelty judge."""
    _, over = scripted_config(tmp_path, nb201_table, GOOD_RULES[:2] + GOOD_RULES[4:], search={"control": 0.5})
    campaign = Campaign.create(load_config(None, env={}, overrides=over))
    campaign.run()
    first, second = campaign.ledger.get(1), campaign.ledger.get(2)
    assert first.status == second.status == "done"
    assert "arm" not in first.proposal and second.proposal["arm"] == "control"
    assert second.proposal["motivation"].startswith("random search")
    calls = [json.loads(line) for line in campaign.folder.llm_log.read_text().splitlines()]
    assert {c["step"] for c in calls if c["experiment"] == 1} >= {"research:0", "code:0"}
    assert not [c for c in calls if c["experiment"] == 2 and c["step"].startswith(("research", "code", "judge"))]
