"""Offline campaigns end to end through the real graph, checkpointer, ledger,
gate and process sandbox, on the nb201 task with a synthetic table."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ARCHLAB

from archlab.campaign import Campaign
from archlab.config import load_config


def config(tmp_path: Path, table: Path, **over):
    data = {"workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(table)},
            "budget": {"experiments": 12}, "search": {"strategy": "evolution", "population": 5, "tournament": 2}}
    for section, values in over.items():
        data.setdefault(section, {}).update(values)
    return load_config(None, env={}, overrides=data)


def test_cli_run_show_and_json(tmp_path, nb201_table, cli_env):
    ws = tmp_path / "runs"
    run = subprocess.run([*ARCHLAB, "run", "--task", "nb201", "--table", str(nb201_table), "--budget", "15",
                          "--workspace", str(ws), "-q"], capture_output=True, text=True, env=cli_env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert ("no model configured: running the offline `evolution` strategy (set one with --model provider/name, "
            "ARCHLAB_LLM_MODEL, or [llm] model in archlab.toml)") in run.stderr
    assert "leaderboard" in run.stdout and "val_acc" in run.stdout
    campaign_id = next(p.name for p in ws.iterdir() if (p / "config.json").exists())
    shown = subprocess.run([*ARCHLAB, "show", campaign_id, "--json", "--workspace", str(ws)],
                           capture_output=True, text=True, env=cli_env, timeout=60)
    data = json.loads(shown.stdout)
    assert data["counts"]["campaign.done"] == 15
    assert data["counts"]["baseline.done"] == 3
    assert data["best"]["val_acc"] == max(e["score"] for e in data["experiments"] if e["score"] is not None)
    assert data["reported"]["test_acc"] == data["best"]["test_acc"]
    one = subprocess.run([*ARCHLAB, "show", campaign_id, "5", "--json", "--workspace", str(ws)],
                         capture_output=True, text=True, env=cli_env, timeout=60)
    exp = json.loads(one.stdout)
    assert exp["id"] == 5 and "def cell" in exp["code"] and any(e["kind"] == "train.end" for e in exp["events"])
    listed = subprocess.run([*ARCHLAB, "ls", "--workspace", str(ws)], capture_output=True, text=True, env=cli_env)
    assert campaign_id in listed.stdout


def test_evolution_reuses_duplicates_and_never_trains_one_twice(tmp_path, nb201_table):
    campaign = Campaign.create(config(tmp_path, nb201_table, budget={"experiments": 40}, search={"baselines": False}))
    summary = campaign.run()
    ledger = campaign.ledger
    done = ledger.experiments(status=["done"], origin=["campaign"])
    assert len(done) == 40 and summary.counts.get("failed", 0) == 0
    assert len({e.ast_hash for e in done}) == 40, "a duplicate was trained"
    assert len({e.metrics["arch"] for e in done}) == 40
    assert summary.counts["reused"] >= 1, "40 one-edge mutations among 15k cells should hit a seen cell"
    reuse = ledger.events(kind="gate.duplicate")[0]["data"]
    assert reuse["reused_metrics"]["val_acc"] == ledger.get(reuse["neighbour"]).score
    trains = [e["experiment"] for e in ledger.events(kind="train.end")]
    assert len(trains) == len(set(trains)) == 40
    # evolution uses its population: most proposals after the first generation have a parent
    assert sum(e.parent is not None for e in done) >= 25


def test_parallel_campaign_meets_budget_exactly(tmp_path, nb201_table):
    campaign = Campaign.create(config(tmp_path, nb201_table, search={"parallel": 3, "strategy": "random"}))
    summary = campaign.run()
    assert summary.counts["campaign.done"] == 12 and summary.counts.get("pending", 0) == 0
    assert len({e.ast_hash for e in campaign.ledger.experiments(status=["done"])}) == 15


def test_same_seed_same_campaign(tmp_path, nb201_table):
    runs = []
    for name in ("a", "b"):
        c = Campaign.create(config(tmp_path / name, nb201_table, search={"baselines": False}))
        c.run()
        runs.append([e.ast_hash for e in c.ledger.experiments(origin=["campaign"])])
    assert runs[0] == runs[1]


def test_eval_twice_trains_once(tmp_path, nb201_table, cli_env):
    cell = tmp_path / "mine.py"
    cell.write_text("def cell(x0, ops):\n    a = ops.nor_conv_3x3(x0)\n"
                    "    b = ops.nor_conv_3x3(x0) + ops.skip_connect(a)\n"
                    "    return ops.nor_conv_3x3(x0) + ops.nor_conv_1x1(a) + ops.nor_conv_3x3(b)\n")
    renamed = tmp_path / "copy.py"
    renamed.write_text("def cell(inp, ops):\n    # same cell, other names\n    n1 = ops.nor_conv_3x3(inp)\n"
                       "    n2 = ops.nor_conv_3x3(inp)  +  ops.skip_connect(n1)\n"
                       "    return ops.nor_conv_3x3(inp) + ops.nor_conv_1x1(n1) + ops.nor_conv_3x3(n2)\n")
    args = ["--task", "nb201", "--table", str(nb201_table), "--workspace", str(tmp_path / "runs")]
    first = subprocess.run([*ARCHLAB, "eval", str(cell), *args], capture_output=True, text=True, env=cli_env)
    assert first.returncode == 0 and "done" in first.stdout, first.stdout + first.stderr
    second = subprocess.run([*ARCHLAB, "eval", str(renamed), *args], capture_output=True, text=True, env=cli_env)
    assert second.returncode == 0 and "duplicate of #1" in second.stdout, second.stdout + second.stderr
    from archlab.memory.ledger import Ledger

    ledger = Ledger(next((tmp_path / "runs").glob("eval-nb201-*")) / "ledger.sqlite")
    assert [e["experiment"] for e in ledger.events(kind="train.end")] == [1]
    assert ledger.get(2).metrics == ledger.get(1).metrics


HOSTILE = {
    "loops forever": ("def cell(x0, ops):\n    import signal\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      "    while True:\n        pass\n", "timeout"),
    "allocates without bound": ("def cell(x0, ops):\n    hoard = []\n    while True:\n"
                                "        hoard.append(bytearray(50_000_000))\n", "oom"),
    "reads the API key": ("def cell(x0, ops):\n    env = __import__('o' + 's').environ\n"
                          "    found = [k for k in env if 'KEY' in k or 'TOKEN' in k]\n"
                          "    raise RuntimeError(f'visible secrets: {found}')\n", "crash"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_candidates_are_contained_and_recorded(tmp_path, nb201_table, monkeypatch, name):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-should-not-leak")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    code, status = HOSTILE[name]
    cfg = config(tmp_path, nb201_table, sandbox={"check_wall_s": 3, "memory_mb": 512})
    path = tmp_path / "bad.py"
    path.write_text(code)
    from archlab.single_candidate import eval_file

    row = eval_file(cfg, path)
    assert row.status == "failed"
    assert row.failure_reason.startswith(f"check {status}"), row.failure_reason
    if name == "reads the API key":
        assert "visible secrets: []" in row.failure_reason
    log = (Path(row.code_path).parent / "check-0" / "log").read_text()
    assert "sk-secret" not in log
