"""Retrieval into the agents: a second campaign on the same task sees the first
one's experiments in its researcher prompt; the analyst sees parent, siblings
and neighbours; views are deterministic and logged, so the prompt can be
rebuilt; offline strategies steer clear of near neighbours of failures."""
from __future__ import annotations

import json
from pathlib import Path

from test_gate_cascade import proposal  # ideas in words: the memory's novelty layers apply to them
from test_llm_campaign import CELL_A, CELL_B, CELL_C, code

from archlab.agents import evidence
from archlab.agents.evidence import for_researcher, mmr
from archlab.agents.state import proposal_schema
from archlab.campaign import Campaign
from archlab.config import load_config
from archlab.llm.schemas import for_prompt
from archlab.memory.vector import Item
from archlab.prompts import render


def test_mmr_prefers_a_diverse_set_deterministically():
    fam = [Item(f"a{i}", "experiments", "", {}, 0.95 - i * 0.01, [1.0, 0.0, 0.01 * i]) for i in range(4)]
    other = [Item("b0", "experiments", "", {}, 0.80, [0.0, 1.0, 0.0])]
    picked = mmr(fam + other, 2)
    assert [p.id for p in picked] == ["a0", "b0"]  # not the two best of one family
    assert [p.id for p in mmr(fam + other, 2)] == [p.id for p in picked]


def _config(ws: Path, table: Path, **over) -> object:
    data = {"workspace": str(ws), "task": {"name": "nb201", "table": str(table)}, "search": {"baselines": False}}
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value}
    return load_config(None, env={}, overrides=data)


RULES = [
    {"step": "research:0", "experiment": 1, "response": proposal("deep-conv")},
    {"step": "code:0", "experiment": 1, "response": code(CELL_A)},
    {"step": "research:0", "experiment": 2, "response": proposal("conv1x1-shortcut", 1)},
    {"step": "code:0", "experiment": 2, "response": code(CELL_B)},
    {"step": "research:0", "experiment": 3, "response": proposal("avg-pool-shortcut", 1)},
    {"step": "code:0", "experiment": 3, "response": code(CELL_C)},
    {"step": "analyse:0", "response": "Convolutions help.\nLesson: keep 3x3 convolutions on the deep path."},
]


def test_second_campaign_retrieves_the_first_into_its_prompts(tmp_path, nb201_table):
    ws = tmp_path / "runs"
    first = Campaign.create(_config(ws, nb201_table, budget={"experiments": 6}, search={"strategy": "evolution"}))
    first.run()
    best = first.ctx.best()
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": RULES}))
    second = Campaign.create(_config(ws, nb201_table, budget={"experiments": 3}, llm={"model": f"scripted/{script}"}))
    second.run()
    assert [second.ledger.get(i).status for i in (1, 2, 3)] == ["done"] * 3

    calls = [json.loads(line) for line in second.folder.llm_log.read_text().splitlines()]
    prompt = next(c for c in calls
                  if c["experiment"] == 1 and c["step"] == "research:0")["request"]["messages"][0]["content"]
    assert f"{first.folder.id}#{best.id} {best.name}: val_acc={best.score}" in prompt  # the first campaign's best
    assert "```python\n" in prompt and "def cell(x0, ops)" in prompt                     # code exemplars

    # what it was shown is logged and kept in the state: the same prompt rebuilds from it
    seen = second.ledger.events(1, "seen.research")[0]["data"]["value"]
    assert any(i.startswith(f"{first.folder.id}:") for i in evidence.ids(seen))
    state = second.graph.get_state({"configurable": {"thread_id": "1"}}).values
    assert state["view"] == evidence.ids(seen)
    shown = {k: [] for k in ("elites", "parent", "near_parent", "near_idea", "failures", "insights", "notes",
                             "exemplars")} | evidence.sections(seen)
    rebuilt = render("researcher.j2", task=second.ctx.task, metric="val_acc", direction="higher", **shown,
                     rejections=[], schema=for_prompt(proposal_schema(second.ctx.task)), ideas=1,
                     parent_note=None, predictions=[])
    assert rebuilt == prompt

    # the analyst: parent, siblings ranked by score, nearest neighbours across the workspace
    analysis = next(c for c in calls
                    if c["experiment"] == 3 and c["step"] == "analyse:0")["request"]["messages"][0]["content"]
    assert "Parent: #1 deep-conv" in analysis
    assert "Other children of the parent, best first:\n- #2 conv1x1-shortcut" in analysis
    assert f"{first.folder.id}#" in analysis.split("Nearest past experiments")[1]
    # the analyst's lesson became an insight the next researcher reads
    third = next(c for c in calls
                 if c["experiment"] == 3 and c["step"] == "research:0")["request"]["messages"][0]["content"]
    assert "Lessons the analyst drew:\n- from #1 deep-conv: keep 3x3 convolutions on the deep path." in third


def test_views_are_deterministic_for_the_same_memory(tmp_path, nb201_table):
    ws = tmp_path / "runs"
    Campaign.create(_config(ws, nb201_table, budget={"experiments": 5},
                            search={"strategy": "random", "baselines": True},
                            memory={"embeddings": "hash"})).run()
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": []}))
    other = Campaign.create(_config(ws, nb201_table, llm={"model": f"scripted/{script}"},
                                    memory={"embeddings": "hash"}))
    one, two = for_researcher(other.ctx, 1), for_researcher(other.ctx, 1)
    assert one == two and len(one["sections"]["elites"]) == 5
    assert len(one["sections"]["exemplars"]) == 3
    # without a memory: this campaign's ledger only, and no vector store anywhere
    plain = Campaign.create(_config(tmp_path / "plain", nb201_table, llm={"model": f"scripted/{script}"},
                                    memory={"enabled": False}))
    assert for_researcher(plain.ctx, 1) == {"sections": {"elites": [], "failures": []}, "items": {}}


def test_offline_strategy_redraws_a_near_neighbour_of_a_failure(tmp_path, nb201_table):
    from archlab.agents.strategies import propose_offline

    campaign = Campaign.create(_config(tmp_path / "runs", nb201_table, search={"strategy": "random"},
                                       memory={"embeddings": "hash"}))
    ctx = campaign.ctx
    planned = ctx.task.space.sample(ctx.rng(2, "propose", 0))  # what experiment #2 would draw first
    failed = campaign.ledger.allocate("campaign")
    path = campaign.folder.experiment(failed) / "candidate.py"
    path.write_text(ctx.task.space.render(planned))
    campaign.ledger.update(failed, status="failed", code_path=str(path), failure_reason="train nan: diverged",
                           proposal={"name": "bad", "motivation": "m", "design": "d", "genome": planned})
    exp = campaign.ledger.allocate("campaign")
    proposal_, _ = propose_offline(ctx, exp, 0)
    assert proposal_["genome"] != planned and "too close to failures (#1 at 1.000" in proposal_["motivation"]
    skipped = campaign.ledger.events(exp, "seen.avoid")[0]["data"]["value"]["skipped"]
    assert skipped[0] == "#1 at 1.000"

    class Recorded:  # a replay answers from the log: the same proposal, no memory needed
        def seen(self, experiment, kind, attempt):
            return {"skipped": skipped} if kind == "avoid" else None

    ctx.recorded = Recorded()
    ctx.memory.close()
    ctx.memory.path = tmp_path / "elsewhere"  # an empty memory: only the log can give the same answer
    assert propose_offline(ctx, exp, 0)[0]["genome"] == proposal_["genome"]


def test_a_broken_memory_is_reported_and_the_lab_goes_on(tmp_path, nb201_table):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": RULES[:2] + RULES[-1:]}))
    campaign = Campaign.create(_config(tmp_path / "runs", nb201_table, budget={"experiments": 1},
                                       llm={"model": f"scripted/{script}"},
                                       memory={"url": "http://127.0.0.1:9", "embeddings": "hash"}))  # nothing listens
    campaign.run()
    assert campaign.ledger.get(1).status == "done"
    errors = [e["data"]["error"] for e in campaign.ledger.events(kind="memory.error")]
    assert any(e.startswith("research view:") for e in errors) and any(e.startswith("gate novelty:") for e in errors)
