"""What the behaviour layer costs: the lm check step with the new fingerprint beside
the one it replaces, and the lookup against a full behaviour index.

    python benchmarks/behaviour_cost.py [--runs 9] [--vectors 10000] [--baseline REV]

1. Check step: the real lm check job (process sandbox, tiny preset) on a ~350-line
   module, alternately with this tree's probes.py and with probes.py of git
   revision REV (default a81d7e0, the last with the single-probe fingerprint);
   median and 90th percentile of the job's wall time, and the ratio (target <= 1.5x).
2. Lookup: a BehaviourIndex in a fresh chromadb filled with N stored vectors of
   2,048 values (random, under the lm key), then what the gate does per candidate:
   the nearest 8 of the same key, and the exact tolerance comparison on them;
   median and 90th percentile over 30 queries (target < 50 ms at 10,000); then
   the gate's whole look: its own campaign's claimed ids (--campaign of the N)
   checked as stored, that campaign's nearest 8, the workspace's nearest 8, compared.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from dedup import lm_module  # noqa: E402 - the module dedup.py times its gate on, grown to 350 lines


def stats(walls: list[float]) -> tuple[float, float]:
    walls = sorted(walls)
    return statistics.median(walls), walls[min(len(walls) - 1, int(0.9 * len(walls)))]


def check_step(runs: int, baseline: str) -> None:
    from archlab.agents.context import job_limits
    from archlab.config import SandboxConfig
    from archlab.sandbox.process import ProcessBackend
    from archlab.tasks import get_task

    old = subprocess.run(["git", "show", f"{baseline}:archlab/tasks/lm/probes.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    task, backend, code = get_task("lm", {}, "tiny"), ProcessBackend(), lm_module(350)
    limits = job_limits(task, SandboxConfig(), "check")
    walls: dict[str, list[float]] = {"new": [], baseline: []}
    with tempfile.TemporaryDirectory(prefix="behaviour-cost-") as tmp:
        for i in range(runs + 1):  # the first round warms the page cache; not counted
            for name in ("new", baseline):  # alternated, so drift on the machine hits both
                job = task.check_job(code, Path(tmp) / f"{name}-{i}", 0, limits)
                if name != "new":
                    job.files["probes.py"] = old
                res = backend.run(job)
                assert res.ok, res.reason
                if i:
                    walls[name].append(res.wall_s)
    new, base = stats(walls["new"]), stats(walls[baseline])
    print(f"check step, {len(code.splitlines())}-line module, {runs} runs each (process sandbox):")
    print(f"  probes.py of {baseline:<8} median {base[0]:.2f} s  p90 {base[1]:.2f} s")
    print(f"  this tree's        median {new[0]:.2f} s  p90 {new[1]:.2f} s   ratio {new[0] / base[0]:.2f}x "
          f"(target <= 1.5x)")


def lookup(n_vectors: int, n_campaign: int, queries: int = 30) -> None:
    import numpy as np

    from archlab.behaviour import compare, key
    from archlab.memory.behaviour import BehaviourIndex
    from archlab.memory.vector import VectorMemory
    from archlab.tasks import get_task

    task = get_task("lm", {}, "tiny")
    k = key("lm", "tiny", {}, task.interface)
    rs = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="behaviour-index-") as tmp:
        index = BehaviourIndex(VectorMemory(Path(tmp) / "memory", embeddings="hash"), "lm")
        t0 = time.perf_counter()
        col = index.collection(k, 2048)  # filled in bulk: add() goes one at a time
        for start in range(0, n_vectors, 1000):
            ids = range(start, min(n_vectors, start + 1000))
            vecs = rs.standard_normal((len(ids), 2048)).astype(np.float32)
            owner = ["own" if j < n_campaign else "filler" for j in ids]  # the looking campaign's first
            col.add(ids=[f"{o}:{j}" for o, j in zip(owner, ids, strict=True)], embeddings=vecs,
                    documents=[""] * len(ids), metadatas=[{"campaign": o, "experiment": j, "key": k, "params": 1000,
                                "shape": "[[2, 136, 64], [1, 77, 64], [2, 136, 64], [1, 77, 64]]"}
                                                         for o, j in zip(owner, ids, strict=True)])
        fill = time.perf_counter() - t0
        walls, whole = [], []
        for _ in range(queries + 1):
            q = {"values": rs.standard_normal(2048).astype(np.float32).tolist(), "params": 1000,
                 "shape": [[2, 136, 64], [1, 77, 64], [2, 136, 64], [1, 77, 64]]}
            t0 = time.perf_counter()
            near = index.nearest(k, q)
            [compare(q, n.behaviour, task.behaviour_tolerance) for n in near]
            walls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()  # the gate's whole look: also every claimed vector of its campaign, by id
            index.stored("own", list(range(n_campaign)), k, 2048)
            own = index.nearest(k, q, campaign="own")
            [compare(q, n.behaviour, task.behaviour_tolerance) for n in own + near]
            whole.append(time.perf_counter() - t0 + walls[-1])
        med, p90 = stats(walls[1:])
        wmed, wp90 = stats(whole[1:])
    print(f"lookup, {n_vectors} stored vectors of 2,048 values (filled in {fill:.0f} s), {queries} queries:")
    print(f"  nearest 8 + tolerance comparison: median {med * 1000:.1f} ms  p90 {p90 * 1000:.1f} ms "
          f"(target < 50 ms)")
    print(f"  the gate's whole look (this campaign's {n_campaign} claimed vectors checked by id, its nearest 8 "
          f"and the workspace's nearest 8, compared): "
          f"median {wmed * 1000:.1f} ms  p90 {wp90 * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--vectors", type=int, default=10_000)
    ap.add_argument("--campaign", type=int, default=100, help="claimed experiments of the looking campaign")
    ap.add_argument("--baseline", default="a81d7e0", help="git revision whose probes.py is the old fingerprint")
    ap.add_argument("--skip-check", action="store_true")
    args = ap.parse_args()
    if not args.skip_check:
        check_step(args.runs, args.baseline)
    lookup(args.vectors, args.campaign)


if __name__ == "__main__":
    main()
