"""The web page under load: a 1,000-experiment NAS-Bench-201 campaign (built once, through the
real campaign loop, then reused from --workspace), its campaign page rendered server-side
(median and p95 over --renders), and the JSON API's throughput from a real `archlab serve`
on loopback, driven by --clients concurrent keep-alive connections.

    python benchmarks/serve_load.py --experiments 1000 --workspace /tmp/serve-load

Targets (issue 14): page median under 300 ms; API at least 200 requests/s from 2 cores.
"""
from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_genius_combined.csv.gz"


def build(workspace: Path, table: Path, experiments: int) -> str:
    from archlab.campaign import Campaign
    from archlab.campaign_folder import list_campaigns
    from archlab.config import load_config

    done = [f for f in list_campaigns(workspace) if f.id.startswith("nb201-")]
    if done:
        return done[-1].id
    cfg = load_config(None, env={}, overrides={
        "workspace": str(workspace), "task": {"name": "nb201", "table": str(table)},
        "budget": {"experiments": experiments}, "memory": {"enabled": False},
        "search": {"strategy": "evolution", "seed": 0, "parallel": 2}})
    start = time.perf_counter()
    campaign = Campaign.create(cfg)
    campaign.run()
    print(f"built {campaign.folder.id}: {experiments} experiments in {time.perf_counter() - start:.0f} s")
    return campaign.folder.id


def render_times(workspace: Path, cid: str, n: int, cache: bool) -> list[float]:
    from fastapi.testclient import TestClient

    from archlab.config import load_config
    from archlab.web.app import create_app

    cfg = load_config(None, env={}, overrides={"workspace": str(workspace), "memory": {"enabled": False}})
    client = TestClient(create_app(workspace, cfg, cache=cache), base_url="http://127.0.0.1")
    client.get(f"/c/{cid}")  # the first: imports, the reader's cache
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = client.get(f"/c/{cid}")
        times.append(time.perf_counter() - start)
        assert r.status_code == 200 and "leaderboard" in r.text
    return times


def api_rate(workspace: Path, cid: str, seconds: float, clients: int) -> tuple[float, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "archlab.cli", "serve", "--port", str(port),
                               "-w", str(workspace)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/api/campaigns")
                break
            except OSError:
                time.sleep(0.1)
        paths = [f"/api/campaigns/{cid}/live", "/api/campaigns", f"/api/campaigns/{cid}/experiments/500/metrics",
                 f"/api/campaigns/{cid}/experiments/7"]
        counts, errors = [0] * clients, [0] * clients
        stop = time.perf_counter() + seconds

        def hammer(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            i = k
            while time.perf_counter() < stop:
                conn.request("GET", paths[i % len(paths)])
                reply = conn.getresponse()
                reply.read()
                counts[k] += 1
                errors[k] += reply.status != 200
                i += 1

        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - start), sum(errors)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    ap.add_argument("--experiments", type=int, default=1000)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/archlab-serve-load"))
    ap.add_argument("--renders", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    if not a.table.exists():
        sys.exit(f"skipped: the NAS-Bench-201 table is not at {a.table} (see ../shared/data/README.md)")
    cid = build(a.workspace, a.table, a.experiments)
    for cache, what in ((False, "computed afresh each time"), (True, "kept until the ledger moves")):
        times = sorted(render_times(a.workspace, cid, a.renders, cache))
        print(f"campaign page of {cid} ({a.experiments} experiments), {a.renders} renders server-side, {what}: "
              f"median {statistics.median(times) * 1000:.1f} ms, "
              f"p95 {times[int(0.95 * (len(times) - 1))] * 1000:.1f} ms (target: median under 300 ms)")
    rate, errors = api_rate(a.workspace, cid, a.seconds, a.clients)
    print(f"API on loopback, {a.clients} keep-alive clients for {a.seconds:.0f} s: {rate:.0f} requests/s, "
          f"{errors} non-200 (target: 200 requests/s from 2 cores)")


if __name__ == "__main__":
    main()
