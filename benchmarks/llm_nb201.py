"""The LLM strategy with the real local model, beside random search under the same
seeds, THROUGH the real campaign loop on the shared NAS-Bench-201 table.

    python benchmarks/llm_nb201.py [--seeds 3] [--first-seed 0] [--queries 10] [--out DIR]
        [--api-base URL --model openai/NAME] [--strategies random,llm,llm+filter] [--ideas 3]

`llm+filter` is the LLM strategy with [search] proposals_per_step = --ideas: the researcher
answers several ideas, the gate and the surrogate rank them, only the best is trained.

By default the researcher's proposed cell (its genome) is rendered by the task's template
([llm] code_from_design): the model chooses the design, as GENIUS asks GPT-4 for the cell.
--coder asks the coder for each module as well: on 2 CPU cores that is 5-20 min per LLM
experiment (research, code, repairs, analysis; calls of 30-600 s), hours for 3 seeds x 10.

Without --api-base it starts llama.cpp's server with the test model (see
scripts/local_model.py). Prints, per strategy, mean ± std over seeds of the test
accuracy of the best-by-validation evaluated candidate (the literature's protocol;
the search sees validation only), and for the LLM the valid-proposal rate (research
answers that validated), the evaluated rate, tokens and seconds per experiment.
Campaigns go to --out; run again with the same --out, a campaign left unfinished (stopped,
killed) is continued from its checkpoints and a finished one is only read.
A 0.5B model is not expected to beat GENIUS's GPT-4 (93.79 ± 0.09 at 10 queries on
CIFAR-10); the point is an honest figure through the real path.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO.parent / "shared" / "data" / "nb201" / "nb201_genius_combined.csv.gz"
sys.path.insert(0, str(REPO / "scripts"))


def campaign(strategy: str, seed: int, table: Path, queries: int, model: str | None, api_base: str | None,
             out: Path, coder: bool, ideas: int = 1) -> dict:
    name = strategy
    strategy, filtered = strategy.removesuffix("+filter"), strategy.endswith("+filter")
    over = {"workspace": str(out / f"{name}-{seed}"), "task": {"name": "nb201", "table": str(table)},
            "budget": {"experiments": queries}, "search": {"strategy": strategy, "seed": seed, "baselines": False,
                                                           "proposals_per_step": ideas if filtered else 1}}
    if strategy == "llm":
        # A 0.5B model on 2 CPU cores takes 30-90 s a call, more while other work shares the cores.
        over["llm"] = {"model": model, "api_base": api_base, "timeout_s": 900, "max_tokens": {"analyse": 300},
                       "code_from_design": not coder}
    c = _open_or_create(over)
    summary = c.run()
    wall = summary.spend["wall_s"]  # every run of the campaign, where it was stopped and continued
    rows = c.ledger.experiments(origin=["campaign"])
    done = [e for e in rows if e.status == "done" and e.metrics]
    best = max(done, key=lambda e: e.metrics["val_acc"]) if done else None
    research = [json.loads(line) for line in c.folder.llm_log.read_text().splitlines()] \
        if c.folder.llm_log.exists() else []
    research = [r for r in research if r["step"].startswith("research") and r["response"] is not None]
    offered = sum(len(e["data"]["value"]["ideas"]) for e in c.ledger.events(kind="seen.ideas"))
    return {"strategy": name, "seed": seed, "ideas_offered": offered,
            "test": best.metrics["test_acc"] if best else None,
            "evaluated": len(done), "experiments": len(rows), "tokens": summary.spend["tokens"], "wall_s": wall,
            "research": len(research), "valid_research": sum(r["valid"] for r in research),
            "paused": summary.paused}


def _open_or_create(over: dict) -> Any:
    """The campaign of an earlier, stopped run of this benchmark in the same --out, continued where it
    stopped (the server's address is this run's); else a new one."""
    from archlab.campaign import Campaign
    from archlab.campaign_folder import list_campaigns
    from archlab.config import load_config

    found = list_campaigns(Path(over["workspace"]))
    if not found:
        return Campaign.create(load_config(None, env={}, overrides=over))
    print(f"continuing {found[-1].id} in {over['workspace']}", file=sys.stderr, flush=True)
    llm = {k: v for k, v in over.get("llm", {}).items() if k in ("model", "api_base")}
    return Campaign.open(Path(over["workspace"]), found[-1].id, overrides={"llm": llm} if llm else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="campaign seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--model", default=None, help="default: the local test model, openai/qwen2.5-coder-0.5b")
    ap.add_argument("--out", type=Path, default=None, help="where the campaigns go (default: a new temp folder); "
                    "a campaign an earlier run left there unfinished is continued, a finished one is read")
    ap.add_argument("--api-base", default=None, help="default: start llama.cpp's server with the test model")
    ap.add_argument("--coder", action="store_true",
                    help="the coder writes each cell too (default: the researcher's genome is rendered by the "
                         "task's template, [llm] code_from_design, as GENIUS asks its model for the cell)")
    ap.add_argument("--strategies", default="random,llm", help="comma-separated: random, llm, llm+filter")
    ap.add_argument("--ideas", type=int, default=3, help="llm+filter: ideas per experiment")
    args = ap.parse_args()
    strategies = args.strategies.split(",")
    if not args.table.exists():
        sys.exit(f"no NB201 table at {args.table}: pass --table PATH (the shared data's nb201 table)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the server (finally below)
    server = None
    if args.api_base is None:
        from local_model import LlamaServer, real_model_paths

        python, gguf = real_model_paths()
        if not (python.exists() and gguf.exists()):
            sys.exit(f"no local model ({python}, {gguf}): run `python scripts/local_model.py` or pass --api-base")
        server = LlamaServer(python, gguf, Path(tempfile.mkdtemp()) / "server.log")
        args.api_base, args.model = server.url, args.model or server.model
    results = []
    try:
        # Kept, not a TemporaryDirectory: an hours-long run stopped half-way still has its campaigns
        # (`archlab show ID -w DIR`, llm.jsonl) for the figures.
        out = args.out or Path(tempfile.mkdtemp(prefix="llm-nb201-"))
        print(f"campaigns in {out}", file=sys.stderr, flush=True)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in strategies:
                r = campaign(strategy, seed, args.table, args.queries, args.model, args.api_base, out, args.coder,
                             args.ideas)
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"\nNB201 CIFAR-10, {args.queries} queries, {args.seeds} seeds (select by val, report test); "
          f"model {args.model}; code from {'the coder' if args.coder else 'the proposed genome'}")
    for strategy in strategies:
        rs = [r for r in results if r["strategy"] == strategy]
        tests = [r["test"] for r in rs if r["test"] is not None]
        spread = f"{statistics.mean(tests):.2f} ± {statistics.stdev(tests):.2f}" if len(tests) > 1 else \
            (f"{tests[0]:.2f}" if tests else "n/a")
        line = f"{strategy:<7} test {spread} (seeds with a result: {len(tests)}/{len(rs)})"
        if strategy.startswith("llm"):
            research = sum(r["research"] for r in rs)
            valid = sum(r["valid_research"] for r in rs)
            exps = sum(r["experiments"] for r in rs)
            line += (f"; valid proposals {valid}/{research} ({valid / max(1, research):.0%}); evaluated "
                     f"{sum(r['evaluated'] for r in rs)}/{exps}; {sum(r['tokens'] for r in rs) / max(1, exps):,.0f} "
                     f"tokens and {sum(r['wall_s'] for r in rs) / max(1, exps):.0f} s per experiment")
            if strategy.endswith("+filter"):
                line += f"; {sum(r['ideas_offered'] for r in rs)} ideas ranked"
        print(line)


if __name__ == "__main__":
    main()
