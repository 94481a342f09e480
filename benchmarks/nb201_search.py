"""Random search, regularised evolution and the surrogate strategy THROUGH the real
campaign loop (graph, checkpointer, ledger, gate, process sandbox) on a NAS-Bench-201 table.

    python benchmarks/nb201_search.py --seeds 50 --budget 300 --datasets cifar10,cifar100,imagenet16 \
        --strategies random,evolution,surrogate,evolution:islands,evolution:map_elites,evolution:ucb

A strategy is `name`, `name:parents` ([search] parents: tournament, islands, map_elites, ucb),
`name:parents:candidates` (the surrogate's [search] candidates: neighbours, mutants), e.g. `surrogate::mutants`,
or `name:parents:candidates:restart` (the surrogate's [search] restart_after), e.g. `surrogate:::0`;
an empty field is the default.

Prints, per dataset, mean ± std over seeds of the test accuracy of the best-by-validation
candidate after each of --at evaluated experiments (10, 30, 100, 300 up to the budget), and
the loop's overhead per experiment; then each strategy against --against (regularised evolution
by default), paired by seed: the mean difference with its 95 % interval and Wilcoxon's p.
Every strategy runs under the same campaign seeds. Protocol as in the literature: the search sees validation only.

With --out FILE each finished campaign is appended to FILE (one JSON line) as it ends, the
campaigns already in FILE are not run again, and the table covers every line in FILE that
matches the arguments: a long run can be stopped and continued, or split over machines.
Campaigns run lowest seed first, so a run stopped early still compares the strategies
under the same seeds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_genius_combined.csv.gz"


def one_campaign(args: tuple[str, int, str, str, int, tuple[int, ...]]) -> dict:
    strategy, seed, table, dataset, budget, at = args
    from archlab.campaign import Campaign
    from archlab.config import load_config

    name, parents, candidates, restart = (strategy.split(":") + ["", "", ""])[:4]
    with tempfile.TemporaryDirectory(prefix="nb201-bench-") as tmp:
        cfg = load_config(None, env={}, overrides={
            "workspace": tmp, "task": {"name": "nb201", "table": table, "dataset": dataset},
            "budget": {"experiments": budget}, "memory": {"enabled": False},
            "search": {"strategy": name, "parents": parents or "tournament", "candidates": candidates or "neighbours",
                       "seed": seed, "baselines": False, **({"restart_after": int(restart)} if restart else {})}})
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

    return {"strategy": strategy, "dataset": dataset, "seed": seed, "at": {n: pick(min(n, len(rows))) for n in at},
            "evaluated": len(rows), "reused": reused, "wall_s": wall}


def previous_results(path: Path, budget: int, table: str) -> dict[tuple[str, str, int], dict]:
    """The campaigns of an earlier --out run with the same budget and table (by file name: the
    folder may differ between machines), by (strategy, dataset, seed)."""
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["budget"] == budget and Path(r["table"]).name == Path(table).name:
            r["at"] = {int(n): v for n, v in r["at"].items()}
            found[(r["strategy"], r["dataset"], r["seed"])] = r
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    ap.add_argument("--datasets", default="cifar10", help="comma-separated: cifar10,cifar100,imagenet16")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=0, help="campaign seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--at", default="10,30,100,300", help="query counts to report (those within the budget)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategies", default="random,evolution,surrogate")
    ap.add_argument("--out", type=Path, help="append each campaign's result here; skip those already in it")
    ap.add_argument("--against", default="evolution",
                    help="the strategy every other is compared with, paired by seed (when it is among --strategies)")
    args = ap.parse_args()
    if not args.table.exists():
        sys.exit(f"no NB201 table at {args.table}: pass --table PATH (CSV with arch and <dataset>_val/_test columns)")
    at = tuple(n for n in map(int, args.at.split(",")) if n <= args.budget)
    strategies, datasets = args.strategies.split(","), args.datasets.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    done = previous_results(args.out, args.budget, str(args.table)) if args.out else {}
    results = [r for key, r in done.items() if key[0] in strategies and key[1] in datasets and key[2] in seeds]
    jobs = [(s, seed, str(args.table), d, args.budget, at) for seed in seeds for d in datasets for s in strategies
            if (s, d, seed) not in done]
    print(f"{len(jobs)} campaigns to run, {len(results)} read from {args.out}" if args.out else
          f"{len(jobs)} campaigns to run", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        for future in as_completed([pool.submit(one_campaign, job) for job in jobs]):
            result = future.result()
            results.append(result)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps({**result, "budget": args.budget, "table": str(args.table)}) + "\n")
    total = time.perf_counter() - t0
    n_seeds = len({r["seed"] for r in results})
    print(f"NB201, {n_seeds} seeds from {args.first_seed}, budget {args.budget}, table {args.table.name}; "
          f"test accuracy of the best-by-validation candidate, mean ± std over seeds")
    for d in datasets:
        print(f"{d:<11}" + "".join(f"{'@' + str(n):>16}" for n in at)
              + f" {'reused/run':>11} {'s/experiment':>13} {'seeds':>6}")
        for strategy in strategies:
            rs = [r for r in results if r["strategy"] == strategy and r["dataset"] == d]
            if not rs:
                continue
            cells = "".join(f"{statistics.mean(v):>9.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:<4.2f}"
                            for n in at if (v := [r["at"][n] for r in rs]))
            per_exp = statistics.mean(r["wall_s"] / max(1, r["evaluated"]) for r in rs)
            reused = statistics.mean(r["reused"] for r in rs)
            print(f"  {strategy:<21}{cells} {reused:>11.1f} {per_exp:>13.3f} {len(rs):>6}")
    if args.against in strategies:
        print_paired(results, datasets, [s for s in strategies if s != args.against], args.against, at)
    print(f"total {total:.0f} s on {args.workers} workers")


def print_paired(results: list[dict], datasets: list[str], strategies: list[str], against: str,
                 at: tuple[int, ...]) -> None:
    """Each strategy minus `against` under the same seeds: mean difference with its 95 % interval
    (Student t over the seeds' differences) and Wilcoxon's signed-rank p, paired by campaign seed."""
    from scipy import stats

    from archlab.analysis.stats import mean_ci

    print(f"\npaired by seed, strategy - {against}: mean difference [95% CI], Wilcoxon p")
    for d in datasets:
        ref = {r["seed"]: r for r in results if r["strategy"] == against and r["dataset"] == d}
        for strategy in strategies:
            mine = {r["seed"]: r for r in results if r["strategy"] == strategy and r["dataset"] == d}
            seeds = sorted(set(mine) & set(ref))
            if len(seeds) < 2:
                continue
            cells = []
            for n in at:
                diffs = [mine[s]["at"][n] - ref[s]["at"][n] for s in seeds]
                ci = mean_ci(diffs)
                p = stats.wilcoxon(diffs).pvalue if any(diffs) else 1.0
                cells.append(f"@{n} {ci.mean:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}] p={p:.2g}")
            print(f"  {d:<11}{strategy:<21}" + "   ".join(cells) + f"   ({len(seeds)} seeds)")


if __name__ == "__main__":
    main()
