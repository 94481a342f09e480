"""Behaviour dedup within a tolerance: a real rewrite (another reduction order, a
helper function) of a causal linear attention computes the same outputs up to
float32 reassociation noise but not bit for bit, so the hash of rounded outputs
differs. The gate must still find the twin, reuse its result and name the
distance and the tolerance; a changed epsilon that matters must stay apart and
is reported as behaviourally close instead."""
from __future__ import annotations

from pathlib import Path

import pytest

from archlab.behaviour import Tolerance, compare
from archlab.config import load_config

MIXERS = Path(__file__).parent / "fixtures" / "mixers"
EINSUM = MIXERS / "linear_einsum.py"            # the original
REWRITE = MIXERS / "linear_broadcast_helper.py"  # broadcast multiply-and-sum, a helper feature map
EPSILON = MIXERS / "linear_broadcast_eps.py"     # the rewrite with eps 1e-6 -> 1e-3: a different mixer


def _record(values: list[float], params: int = 10) -> dict:
    return {"values": values, "params": params, "shape": [[1, len(values)]], "probes": 1}


def test_compare_is_allclose_with_a_ratio_and_refuses_what_is_not_comparable():
    tol = Tolerance(rtol=1e-5, atol=1e-6, close=1e3)
    base = _record([1.0, -2.0, 0.0])
    noise = compare(base, _record([1.0 + 2e-7, -2.0, 1e-7]), tol)
    assert noise.within and noise.ratio < 1 and noise.distance == pytest.approx(2e-7)
    near = compare(base, _record([1.0 + 1e-3, -2.0, 0.0]), tol)
    assert not near.within and near.close and near.ratio == pytest.approx(1e-3 / (1e-6 + 1e-5 * 1.001), rel=1e-6)
    far = compare(base, _record([3.0, -2.0, 0.0]), tol)
    assert not far.within and not far.close
    assert compare(base, _record([1.0, -2.0, 0.0], params=11), tol) is None  # another size: another mixer
    assert compare(base, _record([1.0, -2.0]), tol) is None


def _check(task, path: Path, tmp: Path) -> dict:
    from archlab.sandbox.process import ProcessBackend

    result = ProcessBackend().run(task.check_job(path.read_text(), tmp / path.stem, 0, task.limits("check")))
    assert result.ok, result.reason
    return result.result


@pytest.mark.slow
def test_harness_probes_two_inputs_under_two_seeds_and_the_rewrite_agrees_within_tolerance(tmp_path):
    from archlab.tasks import get_task

    task = get_task("lm", {}, "tiny")
    a, b, c = (_check(task, p, tmp_path) for p in (EINSUM, REWRITE, EPSILON))
    assert a["behaviour"]["probes"] == 4 and len(a["behaviour"]["values"]) == 2048
    assert [s[1] for s in a["behaviour"]["shape"]][:2] == [136, 77]  # two lengths
    assert a["fingerprint"] != b["fingerprint"]  # the exact hash misses this rewrite
    same = compare(a["behaviour"], b["behaviour"], task.behaviour_tolerance)
    assert same.within and 0 < same.distance < 1e-5
    apart = compare(b["behaviour"], c["behaviour"], task.behaviour_tolerance)
    assert not apart.within and apart.close


def _eval(tmp_path: Path, path: Path, memory: bool = True):
    from archlab.single_candidate import eval_file

    cfg = load_config(None, env={}, overrides={"workspace": str(tmp_path / "runs"), "task": {"name": "lm", "steps": 4},
                                               "memory": {"enabled": memory, "embeddings": "hash"}})
    return eval_file(cfg, path)


def _ledger(tmp_path: Path):
    from archlab.memory.ledger import Ledger

    return Ledger(next((tmp_path / "runs").glob("eval-lm-*")) / "ledger.sqlite")


@pytest.mark.slow
def test_archlab_eval_twice_trains_once_and_names_distance_and_tolerance(tmp_path, cli_env):
    """The acceptance run: `archlab eval` of the mixer, then of its rewrite, in one workspace."""
    import subprocess

    from conftest import ARCHLAB

    toml = tmp_path / "archlab.toml"
    toml.write_text(f'workspace = "{tmp_path / "runs"}"\n[task]\nname = "lm"\nsteps = 4\n'
                    '[memory]\nembeddings = "hash"\n')
    from archlab.memory.behaviour import BehaviourIndex
    from archlab.memory.vector import VectorMemory

    def archlab_eval(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*ARCHLAB, "eval", str(path), "--config", str(toml)], capture_output=True, text=True,
                              env=cli_env, timeout=600)

    runs = [archlab_eval(EINSUM)]
    # Ten earlier campaigns of the workspace evaluated the same mixer: their vectors are as near as this
    # campaign's own and sort first, yet only this campaign's can be reused: the lookup must still see it.
    index = BehaviourIndex(VectorMemory(tmp_path / "runs" / "memory", embeddings="hash"), "lm")
    [name] = [c.name for c in index.memory.client().list_collections() if c.name.startswith("behaviour-lm-")]
    key = name.split("-")[2]
    [mine] = index.nearest(key, {"values": [0.0] * 2048}, k=1, campaign=first_campaign(tmp_path))
    for i in range(10):
        index.add(f"aaa-earlier-{i}", 1, key, mine.behaviour)
    del index
    runs.append(archlab_eval(REWRITE))
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert "#1 (eval): done" in runs[0].stdout
    said = " ".join(runs[1].stdout.split())
    assert "#2 (eval): duplicate, duplicate of #1 (result reused, nothing trained): same behaviour as #1" in said
    assert "within rtol 1e-05, atol 1e-06" in said and "largest difference" in said
    ledger = _ledger(tmp_path)
    [dup] = ledger.events(kind="gate.duplicate")
    assert dup["data"]["layer"] == "behaviour" and dup["data"]["neighbour"] == 1
    assert 0 < dup["data"]["distance"] < 1e-5 and dup["data"]["ratio"] <= 1
    assert dup["data"]["tolerance"] == "rtol 1e-05, atol 1e-06"
    assert [e["experiment"] for e in ledger.events(kind="train.end")] == [1]
    index = BehaviourIndex(VectorMemory(tmp_path / "runs" / "memory", embeddings="hash"), "lm")
    ids = [f"{first_campaign(tmp_path)}:{i}" for i in (1, 2)]
    assert index.collection(key, 2048).get(ids=ids, include=[])["ids"] == ids[:1]  # a duplicate claims none


@pytest.mark.slow
def test_the_campaigns_check_results_find_a_twin_the_index_lacks(tmp_path):
    """The index is rebuilt from the campaign folders: a first eval made without the memory
    (or a memory folder deleted since) left no vector; the second finds the twin anyway,
    from the check results, and puts the missing vector back."""
    first = _eval(tmp_path, EINSUM, memory=False)
    assert not (tmp_path / "runs" / "memory").exists()
    second = _eval(tmp_path, REWRITE, memory=True)
    assert first.status == "done"
    assert second.status == "duplicate" and second.duplicate_of == first.id and second.metrics == first.metrics
    [dup] = _ledger(tmp_path).events(kind="gate.duplicate")
    assert dup["data"]["layer"] == "behaviour" and "within rtol 1e-05" in dup["data"]["reason"]
    from archlab.memory.behaviour import BehaviourIndex
    from archlab.memory.vector import VectorMemory

    client = BehaviourIndex(VectorMemory(tmp_path / "runs" / "memory", embeddings="hash"), "lm").memory.client()
    [name] = [c.name for c in client.list_collections() if c.name.startswith("behaviour-lm-")]
    assert client.get_collection(name).get(include=[])["ids"] == [f"{first_campaign(tmp_path)}:{first.id}"]


def first_campaign(tmp_path: Path) -> str:
    return next((tmp_path / "runs").glob("eval-lm-*")).name


@pytest.mark.slow
def test_a_changed_epsilon_trains_and_is_reported_close_to_the_researcher(tmp_path):
    from archlab.agents import evidence

    first, other = _eval(tmp_path, EINSUM), _eval(tmp_path, EPSILON)
    assert first.status == "done" and other.status == "done"  # different mixers: both trained
    ledger = _ledger(tmp_path)
    assert not ledger.events(kind="gate.duplicate")
    [close] = ledger.events(kind="gate.behaviour_close")
    assert close["experiment"] == other.id and close["data"]["neighbour"] == f"#{first.id}"
    assert close["data"]["ratio"] > 1 and not close["data"]["within"]

    from archlab.campaign import Campaign

    root = next((tmp_path / "runs").glob("eval-lm-*"))
    campaign = Campaign.open(root.parent, root.name)
    view = evidence.for_researcher(campaign.ctx, other.id + 1)
    shown = view["items"][f"{campaign.folder.id}:{other.id}"]
    assert shown["close"].startswith(f"behaves like #{first.id}: largest output difference")
    from archlab.prompts import render

    shown = {k: [] for k in evidence.ORDER} | evidence.sections(view)
    prompt = render("researcher.j2", task=campaign.ctx.task, metric="bpb", direction="lower", rejections=[],
                    schema="{}", ideas=1, parent_note=None, predictions=[], **shown)
    assert f"behaves like #{first.id}" in prompt
