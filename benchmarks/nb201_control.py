"""Strategy against random, inside one campaign: evolution with `[search] control = 0.5` on
NAS-Bench-201, THROUGH the real campaign loop (graph, checkpointer, ledger, gate, process
sandbox). Half of each campaign's queries go, interleaved, to uniform random sampling of the
same space; the other half to regularised evolution, which never sees the control's samples.

    python benchmarks/nb201_control.py --seeds 50 --budget 100

Prints, over the campaign seeds, the test accuracy of each arm's best-by-validation candidate
when the campaign has made `budget` queries (budget/2 per arm): mean ± std, the paired
difference with its 95 % interval, and Wilcoxon's signed-rank test paired by campaign seed.
The search sees validation only, as in the literature.
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


def one_campaign(args: tuple[int, str, str, int, float]) -> dict:
    seed, table, dataset, budget, control = args
    from archlab.campaign import Campaign
    from archlab.config import load_config

    with tempfile.TemporaryDirectory(prefix="nb201-control-") as tmp:
        cfg = load_config(None, env={}, overrides={
            "workspace": tmp, "task": {"name": "nb201", "table": table, "dataset": dataset},
            "budget": {"experiments": budget}, "memory": {"enabled": False},
            "search": {"strategy": "evolution", "seed": seed, "baselines": False, "control": control}})
        start = time.perf_counter()
        campaign = Campaign.create(cfg)
        campaign.run()
        wall = time.perf_counter() - start
        rows = campaign.ledger.experiments(status=["done"], origin=["campaign"])
        campaign.ledger.close()

    def best(arm: str) -> float:
        mine = [e for e in rows if ((e.proposal or {}).get("arm") == "control") == (arm == "control")]
        return float(max(mine, key=lambda e: e.metrics["val_acc"]).metrics["test_acc"])

    n_control = sum((e.proposal or {}).get("arm") == "control" for e in rows)
    return {"seed": seed, "strategy": best("strategy"), "control": best("control"), "n": len(rows),
            "n_control": n_control, "wall_s": wall}


def main() -> None:
    from scipy import stats

    from archlab.analysis.stats import mean_ci

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--control", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if not args.table.exists():
        sys.exit(f"no NB201 table at {args.table}: pass --table PATH (CSV with arch and <dataset>_val/_test columns)")
    jobs = [(seed, str(args.table), args.dataset, args.budget, args.control) for seed in range(args.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(one_campaign, jobs))
    total = time.perf_counter() - t0
    strat, ctrl = [r["strategy"] for r in results], [r["control"] for r in results]
    diffs = [a - b for a, b in zip(strat, ctrl, strict=True)]
    ci = mean_ci(diffs)
    test = stats.wilcoxon(strat, ctrl) if any(diffs) else None
    per_arm = (statistics.mean(r["n"] - r["n_control"] for r in results),
               statistics.mean(r["n_control"] for r in results))
    print(f"NB201 {args.dataset}, {args.seeds} campaign seeds, {args.budget} queries each "
          f"(control = {args.control}: {per_arm[0]:.0f} evolution, {per_arm[1]:.0f} random), table {args.table.name}")
    print(f"test accuracy of each arm's best-by-validation at {args.budget} queries:")
    print(f"  evolution      {statistics.mean(strat):.2f} ± {statistics.stdev(strat):.2f}")
    print(f"  random control {statistics.mean(ctrl):.2f} ± {statistics.stdev(ctrl):.2f}")
    if ci is not None:
        print(f"  evolution - random: {ci.mean:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] (95% CI, paired by seed)")
    if test is not None:
        print(f"  Wilcoxon signed-rank (paired by campaign seed): W = {test.statistic:.1f}, p = {test.pvalue:.3g}")
    wins = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    print(f"  evolution ahead in {wins[0]}, random ahead in {wins[1]}, tied in {len(diffs) - sum(wins)} campaigns")
    print(f"total {total:.0f} s on {args.workers} workers, {statistics.mean(r['wall_s'] for r in results):.1f} s "
          "per campaign")


if __name__ == "__main__":
    main()
