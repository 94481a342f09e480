"""The surrogate strategy beside regularised evolution on the lm task, THROUGH the real campaign
loop (graph, checkpointer, ledger, gate, process sandbox, real CPU training at `tiny`), under the
same campaign seed: each campaign trains the task's baselines, then `--budget` experiments.

    python benchmarks/lm_search.py --budget 20 --seed 0 --strategies surrogate,evolution

Prints per strategy: the best val_bpb (lower is better), the best baseline's, how many of the
campaign's trainings it took to beat that baseline (in the order they finished), how many were
refused before compute (duplicates) or failed, the wall time, and the best-so-far curve. About a minute per training at
`tiny` on 2 cores: 20 experiments and 4 baselines per strategy take about half an hour.
"""
from __future__ import annotations

import argparse
import tempfile
import time


def one_campaign(strategy: str, seed: int, budget: int, preset: str) -> dict:
    from archlab.campaign import Campaign
    from archlab.config import load_config

    with tempfile.TemporaryDirectory(prefix="lm-search-") as tmp:
        cfg = load_config(None, env={}, overrides={
            "workspace": tmp, "task": {"name": "lm", "preset": preset}, "budget": {"experiments": budget},
            "memory": {"enabled": False}, "search": {"strategy": strategy, "seed": seed}})
        start = time.perf_counter()
        campaign = Campaign.create(cfg)
        campaign.run()
        wall = time.perf_counter() - start
        ledger = campaign.ledger
        done = ledger.experiments(status=["done"], origin=["campaign"], order="finished, id")
        base = [e.score for e in ledger.experiments(status=["done"], origin=["baseline"]) if e.score is not None]
        counts = ledger.counts()
        ledger.close()
    best_base = min(base) if base else None
    beat = next((i for i, e in enumerate(done, 1) if best_base is not None and e.score < best_base), None)
    curve = [min(e.score for e in done[:n]) for n in range(1, len(done) + 1)]
    return {"strategy": strategy, "best": curve[-1] if curve else None, "baseline": best_base, "curve": curve,
            "beat_at": beat, "trained": len(done), "counts": counts, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default="surrogate,evolution")
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="tiny")
    args = ap.parse_args()
    rows = [one_campaign(s, args.seed, args.budget, args.preset) for s in args.strategies.split(",")]
    print(f"lm at {args.preset}, campaign seed {args.seed}, {args.budget} experiments per strategy")
    print(f"{'strategy':<12} {'best val_bpb':>12} {'best baseline':>13} {'beat it at':>10} {'trained':>8} "
          f"{'refused':>8} {'failed':>7} {'wall':>7}")
    for r in rows:
        best, base = (f"{v:.4f}" if v is not None else "-" for v in (r["best"], r["baseline"]))
        refused = r["counts"].get("campaign.rejected", 0) + r["counts"]["reused"]
        print(f"{r['strategy']:<12} {best:>12} {base:>13} {r['beat_at'] or 'never':>10} {r['trained']:>8} "
              f"{refused:>8} {r['counts'].get('campaign.failed', 0):>7} {r['wall_s']:>6.0f}s")
    print("best val_bpb so far after each training (the warm-up's uniform samples are the same under one seed):")
    for r in rows:
        print(f"  {r['strategy']:<12} " + " ".join(f"{v:.3f}" for v in r["curve"]))


if __name__ == "__main__":
    main()
