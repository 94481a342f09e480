"""The two races behind the flaky `--parallel` replay-fork test, each of which
recorded an experiment as failed ("internal error"), so the fork finished 9 of 10:

1. Parallel experiments parse candidate code at the same time. CPython 3.11's AST
   constructor keeps its recursion depth in interpreter-wide state, so two threads'
   parses interleaved by a garbage-collector finalizer failed with "SystemError: AST
   constructor recursion depth mismatch" in the gate step.
2. The first experiment threads of a campaign (a fork is a fresh one) each compiled
   the graph, opening several checkpointers on one new SQLite file; one failed
   switching it to WAL with "database is locked"."""
from __future__ import annotations

import subprocess
import sys

HAMMER = r"""
import gc, sys, threading
from pathlib import Path
from archlab.code_hashes import hashes
from archlab.tasks import get_task

code = Path(sys.argv[1]).read_text()
task = get_task("lm")
errors = []

class Finalised:  # cyclic garbage with a finalizer: the collector runs Python code mid-parse
    def __del__(self):
        sum(range(50))

def work():
    for i in range(40):
        junk = [Finalised() for _ in range(20)]
        for j in junk:
            j.me = j
        del junk
        try:
            hashes(code + f"\n# {i}\n")
            task.static_errors(code)
        except SystemError as exc:
            errors.append(str(exc))
            return

gc.set_threshold(50)
sys.setswitchinterval(1e-6)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(errors), errors[:1])
sys.exit(1 if errors else 0)
"""


def test_code_hashes_from_many_threads_never_crash():
    from archlab import code_hashes as fingerprint

    res = subprocess.run([sys.executable, "-c", HAMMER, fingerprint.__file__], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_parallel_experiments_share_one_graph_and_checkpointer(tmp_path, nb201_table):
    import threading

    from archlab.campaign import Campaign
    from archlab.config import load_config

    campaign = Campaign.create(load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "search": {"parallel": 8}}))
    start, graphs, errors = threading.Barrier(8), [], []

    def first_step() -> None:
        start.wait()
        try:
            graphs.append(campaign.graph)
        except Exception as exc:  # noqa: BLE001 - the race raised "database is locked"
            errors.append(exc)

    threads = [threading.Thread(target=first_step) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len({id(g) for g in graphs}) == 1
