"""Per-job start-up overhead of each sandbox backend: the wall time of jobs whose
harness does nothing but write result.json (python -I -S, stdlib only).

usage: python benchmarks/sandbox_overhead.py [--jobs 20] [--backends process,process-none,docker,ray,ray-docker]

Prints, per backend, the median and 90th percentile of the time `backend.run(job)`
takes (what a campaign pays per job besides the work), and of the job's own
wall_s. Docker needs an engine and the runner image (`archlab sandbox build`);
ray starts a local cluster (its start-up is reported once, not per job); ray-docker
is ray with the docker backend on the worker. process is the isolated default
(bubblewrap); process-none runs the same jobs unisolated (`[sandbox] isolation = "none"`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from archlab.sandbox import get_backend
from archlab.sandbox.base import Job, Limits

HARNESS = "import sys\nopen(sys.argv[2] + '/result.json', 'w').write('{\"status\": \"ok\"}')\n"


def job(root: Path, i: int) -> Job:
    return Job(name="noop", workdir=root / f"job{i}", command=["{python}", "-I", "-S", "{input}/harness.py",
                                                             "{input}", "{output}"],
               files={"harness.py": HARNESS}, limits=Limits(wall_time_s=60, memory_mb=256, cpus=1))


def measure(name: str, n: int, root: Path) -> tuple[list[float], list[float]]:
    t0 = time.perf_counter()
    kind, _, inner = name.partition("-")
    if kind == "ray":
        options = {"num_cpus": os.cpu_count(), "inner": inner or "process"}
    else:
        options = {"isolation": "none" if inner == "none" else "bwrap"} if kind == "process" else {}
    backend = get_backend(kind, **options)
    print(f"{name}: backend ready in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    backend.run(job(root, -1))  # warm-up: first image access, first ray worker
    calls, inside = [], []
    for i in range(n):
        t = time.perf_counter()
        res = backend.run(job(root, i))
        calls.append(time.perf_counter() - t)
        inside.append(res.wall_s)
        assert res.ok, (name, res.status, res.reason, res.log_tail)
    backend.close()  # ray: the next ray backend starts its own cluster
    return calls, inside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--backends", default="process,process-none,docker,ray,ray-docker")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="archlab-overhead-") as tmp:
        rows = []
        for name in args.backends.split(","):
            calls, inside = measure(name, args.jobs, Path(tmp) / name)
            q = statistics.quantiles(calls, n=10)
            rows.append((name, statistics.median(calls), q[-1], statistics.median(inside)))
    print(f"{'backend':12} {'median s':>9} {'p90 s':>7} {'job wall_s':>10}   ({args.jobs} jobs each)")
    for name, med, p90, wall in rows:
        print(f"{name:12} {med:9.3f} {p90:7.3f} {wall:10.3f}")


if __name__ == "__main__":
    main()
