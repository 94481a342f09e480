"""The duplicate gate, layer by layer, cheapest first: text hash -> AST hash ->
behaviour fingerprint (the task harness, in the process sandbox) -> embedding
novelty against memory -> LLM judge in the grey band. True duplicates:
reformatted, renamed, comments changed, independent statements reordered,
algebraically equal, dead code. True non-duplicates: one op changed, one
constant changed, a statement moved into a loop."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from test_llm_campaign import CELL_A, CELL_B, CELL_C, code
from test_llm_campaign import proposal as proposal_with_genome

from archlab.campaign import Campaign
from archlab.code_hashes import ast_hash, text_hash
from archlab.config import load_config


def proposal(name: str, parent: int | None = None) -> str:
    """Ideas in words only: a genome is exact, and the embedding layers apply to free-form proposals."""
    return proposal_with_genome(name, parent, genome=False)

LOOP = """import torch


def scan(x, w):
    state = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        state = state * 0.9 + x[t] * w
        out.append(state)
    state = state * 2
    return torch.stack(out), state
"""
LOOP_INTO = LOOP.replace("        out.append(state)\n    state = state * 2\n",
                         "        out.append(state)\n        state = state * 2\n")
REFORMATTED = LOOP.replace("    ", "  ").replace("x[t] * w", "x[t]*w").replace("\n\n\n", "\n\n")
RENAMED = """import torch


def scan(inp, weight):
    h = torch.zeros_like(inp[0])
    ys = []
    for step in range(inp.shape[0]):
        h = h * 0.9 + inp[step] * weight
        ys.append(h)
    h = h * 2
    return torch.stack(ys), h
"""
COMMENTED = LOOP.replace("def scan(x, w):\n",
                         'def scan(x, w):\n    """A decayed running sum."""\n    # the state starts empty\n')
CONSTANT = LOOP.replace("0.9", "0.8")
OP = LOOP.replace("torch.stack", "torch.cat")


def lemur(code: str) -> str:
    return hashlib.md5(re.sub(r"\s+", "", code).encode()).hexdigest()


# -- layers 1 and 2: text and AST hashes ------------------------------------------------

def test_text_hash_sees_layout_only_and_keeps_loop_bodies_apart():
    assert text_hash(LOOP.replace("\n", "\n\n").replace(" = ", " =  ")) == text_hash(LOOP)
    assert text_hash(LOOP.replace("    ", "\t")) == text_hash(LOOP)
    assert text_hash(REFORMATTED) != text_hash(LOOP)  # x[t]*w: a token-level change is the AST layer's job
    # NNGPT/LEMUR's whitespace-stripped MD5 calls a statement inside a loop equal to the same after it
    assert lemur(LOOP_INTO) == lemur(LOOP)
    assert text_hash(LOOP_INTO) != text_hash(LOOP)


@pytest.mark.parametrize("variant", [REFORMATTED, RENAMED, COMMENTED], ids=["reformatted", "renamed", "comments"])
def test_ast_hash_equal_for_cosmetic_copies(variant):
    assert ast_hash(variant) == ast_hash(LOOP)


@pytest.mark.parametrize("variant", [LOOP_INTO, CONSTANT, OP], ids=["into loop", "constant", "op"])
def test_ast_hash_differs_for_real_changes(variant):
    assert ast_hash(variant) != ast_hash(LOOP)


# -- layer 3: the behaviour fingerprint, from the task harness in the sandbox ----------------

CELL = """def cell(x0, ops):
    x1 = ops.nor_conv_3x3(x0)
    x2 = ops.skip_connect(x0) + ops.nor_conv_1x1(x1)
    return ops.avg_pool_3x3(x0) + ops.none(x1) + ops.nor_conv_3x3(x2)
"""
CELL_REORDERED = """def cell(x0, ops):
    first = ops.nor_conv_3x3(x0)
    scale = 3  # dead code
    second = ops.nor_conv_1x1(first) + ops.skip_connect(x0)
    return ops.nor_conv_3x3(second) + (ops.avg_pool_3x3(x0) + ops.none(first))
"""
CELL_OTHER_OP = CELL.replace("ops.none(x1)", "ops.skip_connect(x1)")


def _fingerprint(task, code_text: str, tmp: Path) -> str | None:
    from archlab.sandbox.process import ProcessBackend

    result = ProcessBackend().run(task.check_job(code_text, tmp, 0, task.default_limits))
    return (result.result or {}).get("fingerprint") if result.ok else None


def test_nb201_fingerprint_equal_for_reordered_terms_and_dead_code(tmp_path, nb201_table):
    from archlab.tasks import get_task

    task = get_task("nb201", {"table": str(nb201_table)}, None)
    assert ast_hash(CELL_REORDERED) != ast_hash(CELL)  # the static layers cannot see this one
    a, b, c = (_fingerprint(task, src, tmp_path / name) for name, src in
               (("a", CELL), ("b", CELL_REORDERED), ("c", CELL_OTHER_OP)))
    assert a and a == b
    assert c and c != a


def test_eval_of_a_reordered_copy_trains_once(tmp_path, nb201_table):
    """The check step refuses a fingerprint seen before: the copy reuses the first result."""
    from archlab.single_candidate import eval_file

    cfg = load_config(None, env={}, overrides={"workspace": str(tmp_path / "runs"),
                                               "task": {"name": "nb201", "table": str(nb201_table)}})
    (tmp_path / "a.py").write_text(CELL)
    (tmp_path / "b.py").write_text(CELL_REORDERED)
    first, second = eval_file(cfg, tmp_path / "a.py"), eval_file(cfg, tmp_path / "b.py")
    assert first.status == "done" and second.status == "duplicate" and second.duplicate_of == first.id
    from archlab.memory.ledger import Ledger

    ledger = Ledger(next((tmp_path / "runs").glob("eval-nb201-*")) / "ledger.sqlite")
    assert [e["data"]["layer"] for e in ledger.events(kind="gate.duplicate")] == ["fingerprint"]
    assert [e["experiment"] for e in ledger.events(kind="train.end")] == [first.id]
    assert second.metrics == first.metrics


MIXER = """import torch
import torch.nn as nn


class TokenMixer(nn.Module):
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.q = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)

    def forward(self, x):
        q = torch.sigmoid(self.q(x))
        v = self.v(x) * 2
        return torch.cumsum(q * v, dim=1) / 4
"""
MIXER_SAME = MIXER.replace("        q = torch.sigmoid(self.q(x))\n        v = self.v(x) * 2\n",
                           "        v = 2 * self.v(x)\n        q = torch.sigmoid(self.q(x))\n")
MIXER_CONSTANT = MIXER.replace("/ 4", "/ 3")


@pytest.mark.slow
def test_lm_fingerprint_equal_for_reordered_and_commuted_but_not_for_a_constant(tmp_path):
    from archlab.tasks import get_task

    task = get_task("lm", {}, "tiny")
    a, b, c = (_fingerprint(task, src, tmp_path / name) for name, src in
               (("a", MIXER), ("b", MIXER_SAME), ("c", MIXER_CONSTANT)))
    assert a and a == b
    assert c and c != a


# -- layers 4 and 5: embedding novelty and the LLM judge (the LLM path) -----------------------

DEAD = CELL_A.replace("def cell(x0, ops):\n", "def cell(x0, ops):\n    width = 16  # unused\n")


def _campaign(tmp_path: Path, nb201_table: Path, rules: list, memory: dict, experiments: int = 2) -> Campaign:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": rules + [{"step": "analyse:0", "response": "ok\nLesson: fine"}]}))
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "llm": {"model": f"scripted/{script}"}, "budget": {"experiments": experiments},
        "search": {"baselines": False}, "memory": {"embeddings": "hash", **memory}})
    return Campaign.create(cfg)


def test_embedding_layer_refuses_a_reproposal_and_names_the_neighbour(tmp_path, nb201_table):
    again = proposal("deep-conv").replace('"name": "deep-conv"', '"name": "deep-conv again"')
    campaign = _campaign(tmp_path, nb201_table, [
        {"step": "research:0", "experiment": 1, "response": proposal("deep-conv")},
        {"step": "code:0", "experiment": 1, "response": code(CELL_A)},
        # GENIUS's failure: the same idea again, as code the hashes cannot match (dead code added)
        {"step": "research:0", "experiment": 2, "response": again},
        {"step": "code:0", "experiment": 2, "response": code(DEAD)},
        {"step": "research:1", "experiment": 2, "response": proposal("conv1x1-shortcut", 1)},
        {"step": "code:1", "experiment": 2, "response": code(CELL_B)},
    ], {"near_duplicate": 0.93, "judge_above": 0.93})
    summary = campaign.run()
    ledger = campaign.ledger
    assert [ledger.get(i).status for i in (1, 2)] == ["done", "done"]
    near = ledger.events(2, "gate.near_duplicate")
    assert len(near) == 1 and near[0]["data"]["layer"] == "embedding" and near[0]["data"]["neighbour"] == 1
    assert "near duplicate of #1 (deep-conv)" in near[0]["data"]["reason"]
    assert summary.counts["near_duplicates"] == 1 and summary.counts["reused"] == 0  # refused, nothing reused
    calls = [json.loads(line) for line in campaign.folder.llm_log.read_text().splitlines()]
    again_prompt = next(c for c in calls if c["experiment"] == 2 and c["step"] == "research:1")
    assert "near duplicate of #1" in again_prompt["request"]["messages"][0]["content"]
    assert not any(c["step"].startswith("judge") for c in calls)  # above the band: no judge needed
    assert [e["experiment"] for e in ledger.events(kind="train.end")] == [1, 2]


@pytest.mark.parametrize("same", [True, False])
def test_judge_decides_the_grey_band(tmp_path, nb201_table, same):
    verdict = {"same": same, "reason": "a shortcut is a shortcut" if same else "the shortcut op differs"}
    campaign = _campaign(tmp_path, nb201_table, [
        {"step": "research:0", "experiment": 1, "response": proposal("deep-conv")},
        {"step": "code:0", "experiment": 1, "response": code(CELL_A)},
        {"step": "research:0", "experiment": 2, "response": proposal("deep-conv-bis", 1)},
        {"step": "code:0", "experiment": 2, "response": code(CELL_B)},  # one op changed: close, not equal
        {"step": "judge:1", "experiment": 2, "response": json.dumps(verdict)},
        {"step": "research:1", "experiment": 2, "response": proposal("pool-shortcut", 1)},
        {"step": "code:1", "experiment": 2, "response": code(CELL_C)},
        {"step": "judge:2", "experiment": 2, "response": json.dumps({"same": False, "reason": "new op"})},
    ], {"near_duplicate": 0.9999, "judge_above": 0.3})
    campaign.run()
    ledger = campaign.ledger
    calls = [json.loads(line) for line in campaign.folder.llm_log.read_text().splitlines()]
    judge = next(c for c in calls if c["experiment"] == 2 and c["step"] == "judge:1")
    prompt = judge["request"]["messages"][0]["content"]
    assert "nor_conv_1x1(x0)" in prompt and "skip_connect(x0)" in prompt  # both codes
    assert "Past experiment #1: deep-conv" in prompt
    near = ledger.events(2, "gate.near_duplicate")
    if same:
        assert len(near) == 1 and near[0]["data"]["layer"] == "judge" and near[0]["data"]["neighbour"] == 1
        assert "a shortcut is a shortcut" in near[0]["data"]["reason"]
        assert ledger.get(2).name == "pool-shortcut"
    else:
        assert not near and ledger.events(2, "gate.judged_novel")
        assert ledger.get(2).name == "deep-conv-bis" and ledger.get(2).status == "done"


def test_a_campaign_with_near_duplicates_replays_without_the_memory(tmp_path, nb201_table):
    from archlab.replay import replay

    verdict = {"same": True, "reason": "a shortcut is a shortcut"}
    campaign = _campaign(tmp_path, nb201_table, [
        {"step": "research:0", "experiment": 1, "response": proposal("deep-conv")},
        {"step": "code:0", "experiment": 1, "response": code(CELL_A)},
        {"step": "research:0", "experiment": 2, "response": proposal("deep-conv-bis", 1)},
        {"step": "code:0", "experiment": 2, "response": code(CELL_B)},
        {"step": "judge:1", "experiment": 2, "response": json.dumps(verdict)},
        {"step": "research:1", "experiment": 2, "response": proposal("pool-shortcut", 1)},
        {"step": "code:1", "experiment": 2, "response": code(CELL_C)},
        {"step": "judge:2", "experiment": 2, "response": json.dumps({"same": False, "reason": "new op"})},
    ], {"near_duplicate": 0.9999, "judge_above": 0.3})
    campaign.run()
    import shutil

    shutil.rmtree(campaign.folder.root.parent / "memory")  # what the agents saw is in the log
    report = replay(campaign.folder.root.parent, campaign.folder.id)
    assert report.ok, str(report.divergence)
    assert report.experiments == [1, 2]
