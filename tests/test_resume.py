"""kill -9 of `archlab run` at arbitrary moments, then `archlab resume`: the
campaign ends with exactly the budgeted count, nothing lost, nothing evaluated twice."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ARCHLAB

from archlab.memory.ledger import Ledger

BUDGET = 10


def _events(ledger_path: Path, kind: str) -> list[int]:
    if not ledger_path.exists():
        return []
    try:
        with sqlite3.connect(ledger_path, timeout=5) as db:
            return [r[0] for r in db.execute("SELECT experiment FROM events WHERE kind = ?", (kind,))]
    except sqlite3.OperationalError:  # schema not created yet
        return []


def _mid_training(ledger_path: Path) -> bool:
    starts, ends = _events(ledger_path, "train.start"), _events(ledger_path, "train.end")
    return len(starts) > len(ends) and len(ends) >= 2


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"campaign ended before the kill point: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "parents"), [("evolution", "tournament"), ("surrogate", "tournament"),
                                                    ("evolution", "islands"), ("evolution", "map_elites"),
                                                    ("surrogate", "ucb")])
def test_kill9_at_several_points_then_resume(tmp_path, nb201_table, cli_env, strategy, parents):
    (tmp_path / "archlab.toml").write_text(
        f'workspace = "runs"\n[task]\nname = "nb201"\ntable = "{nb201_table}"\ndelay_s = 0.4\n'
        f'[budget]\nexperiments = {BUDGET}\n[search]\nparallel = 2\npopulation = 4\ntournament = 2\n'
        f'strategy = "{strategy}"\nparents = "{parents}"\n')
    ws = tmp_path / "runs"

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([*ARCHLAB, *args, "-q"], cwd=tmp_path, env=cli_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    proc = start("run")
    # 1: as soon as the campaign folder has a ledger (baselines allocated, maybe a step in)
    _kill_when(proc, lambda: any(ws.glob("*/ledger.sqlite")) and _events(next(ws.glob("*/ledger.sqlite")), "allocated"))
    campaign_id = next(p.name for p in ws.iterdir() if p.is_dir() and p.name != "memory")
    ledger_path = ws / campaign_id / "ledger.sqlite"
    # 2: in the middle of a training job
    proc = start("resume", campaign_id)
    _kill_when(proc, lambda: _mid_training(ledger_path))
    killed_mid = set(_events(ledger_path, "train.start")) - set(_events(ledger_path, "train.end"))
    assert killed_mid, "the kill did not land mid-training"
    # 3: right after an experiment finished
    n_done = len(_events(ledger_path, "experiment.done"))
    proc = start("resume", campaign_id)
    _kill_when(proc, lambda: len(_events(ledger_path, "experiment.done")) > n_done)
    # 4: let it finish
    proc = start("resume", campaign_id)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    ledger = Ledger(ledger_path)
    counts = ledger.counts()
    assert counts.get("campaign.done", 0) + counts.get("campaign.failed", 0) == BUDGET
    assert counts.get("pending", 0) == counts.get("running", 0) == 0
    assert counts.get("baseline.done") == 3
    ends = _events(ledger_path, "train.end")
    assert len(ends) == len(set(ends)), f"an experiment was trained twice: {sorted(ends)}"
    done = ledger.experiments(status=["done"])
    assert len({e.ast_hash for e in done}) == len(done)
    assert set(ends) == {e.id for e in done}
    for exp in killed_mid:  # the interrupted training ran again, to completion, once
        assert ledger.get(exp).status == "done"
    # no orphan sandbox job survived the kills
    ps = subprocess.run(["pgrep", "-f", str(ws / campaign_id)], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
