"""Random search and regularised evolution THROUGH the real campaign loop
(graph, checkpointer, ledger, gate, process sandbox) on a NAS-Bench-201 table.

    python benchmarks/nb201_search.py --table ../shared/data/nb201/nb201_genius_combined.csv.gz --seeds 50

Prints mean ± std over seeds of the test accuracy of the best-by-validation
candidate after 10 and 100 evaluated experiments, and the loop's overhead per
experiment. Protocol as in the literature: the search sees validation only.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_genius_combined.csv.gz"


def one_campaign(args: tuple[str, int, str, str, int]) -> dict:
    strategy, seed, table, dataset, budget = args
    from archlab.campaign import Campaign
    from archlab.config import load_config

    with tempfile.TemporaryDirectory(prefix="nb201-bench-") as tmp:
        cfg = load_config(None, env={}, overrides={
            "workspace": tmp, "task": {"name": "nb201", "table": table, "dataset": dataset},
            "budget": {"experiments": budget}, "search": {"strategy": strategy, "seed": seed, "baselines": False}})
        start = time.perf_counter()
        campaign = Campaign.create(cfg)
        campaign.run()
        wall = time.perf_counter() - start
        rows = [e for e in campaign.ledger.experiments(status=["done"], origin=["campaign"])]
        reused = campaign.ledger.counts().get("reused", 0)
        campaign.ledger.close()

    def pick(n: int) -> float:
        best = max(rows[:n], key=lambda e: e.metrics["val_acc"])
        return float(best.metrics["test_acc"])

    return {"strategy": strategy, "seed": seed, "at10": pick(10), "at100": pick(min(budget, len(rows))),
            "evaluated": len(rows), "reused": reused, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategies", default="random,evolution")
    args = ap.parse_args()
    if not args.table.exists():
        sys.exit(f"no NB201 table at {args.table}: pass --table PATH (CSV with arch and <dataset>_val/_test columns)")
    jobs = [(s, seed, str(args.table), args.dataset, args.budget)
            for s in args.strategies.split(",") for seed in range(args.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(one_campaign, jobs))
    total = time.perf_counter() - t0
    print(f"NB201 {args.dataset}, {args.seeds} seeds, budget {args.budget}, table {args.table.name}")
    print(f"{'strategy':<10} {'@10 queries':>16} {'@' + str(args.budget) + ' queries':>16} "
          f"{'reused/run':>11} {'s/experiment':>13}")
    for strategy in args.strategies.split(","):
        rs = [r for r in results if r["strategy"] == strategy]
        a10, a100 = [r["at10"] for r in rs], [r["at100"] for r in rs]
        per_exp = statistics.mean(r["wall_s"] / max(1, r["evaluated"]) for r in rs)
        print(f"{strategy:<10} {statistics.mean(a10):>8.2f} ± {statistics.stdev(a10):<5.2f} "
              f"{statistics.mean(a100):>8.2f} ± {statistics.stdev(a100):<5.2f} "
              f"{statistics.mean(r['reused'] for r in rs):>11.1f} {per_exp:>13.3f}")
    print(f"total {total:.0f} s on {args.workers} workers")


if __name__ == "__main__":
    main()
