"""The lm task's harness. It runs inside the sandbox and never imports archlab:
stdlib, numpy and torch only.

    python harness.py INPUT/spec.json OUTPUT_DIR

The (read-only) input folder holds spec.json, candidate.py, probes.py and, for
training, train.bin / val.bin (uint8 bytes). mode "check" builds the
candidate's TokenMixer and runs the integrity probes (probes.py), no training.
mode "train" trains the fixed byte-level LM around it and scores validation
bits per byte. Progress goes to stdout as JSON lines, the outcome to
OUTPUT_DIR/result.json (status ok | nan | oom | error, or integrity in check).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256  # bytes
ON_DEVICE_MAX_BYTES = 1 << 30  # data up to this size is held on the device; larger stays memory-mapped


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# -- the fixed model around the candidate ----------------------------------------
class MLP(nn.Module):
    def __init__(self, d: int, ratio: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, ratio * d, bias=False)
        self.proj = nn.Linear(ratio * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, mixer: nn.Module, d: int, ratio: int) -> None:
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(d, bias=False), mixer
        self.norm2, self.mlp = nn.LayerNorm(d, bias=False), MLP(d, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LM(nn.Module):
    """Byte embedding, pre-norm blocks (mixer + MLP), final norm, tied head. No
    positional embedding: the mixer supplies whatever position signal it needs."""

    def __init__(self, mixer_cls: type, cfg: dict[str, Any]) -> None:
        super().__init__()
        d, layers = cfg["d_model"], cfg["n_layers"]
        self.embed = nn.Embedding(VOCAB, d)
        self.blocks = nn.ModuleList(
            Block(mixer_cls(d, cfg["n_heads"], **cfg["mixer_kwargs"]), d, cfg["mlp_ratio"]) for _ in range(layers))
        self.norm = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, VOCAB, bias=False)
        self.head.weight = self.embed.weight
        # Only the harness's own weights are initialised here; the mixer keeps its own init.
        nn.init.normal_(self.embed.weight, std=0.02)
        for block in self.blocks:
            nn.init.normal_(block.mlp.fc.weight, std=0.02)
            nn.init.normal_(block.mlp.proj.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, VOCAB), targets.reshape(-1))


# -- candidate loading and error text ----------------------------------------------
def load_module(name: str, path: Path) -> Any:
    sys.dont_write_bytecode = True  # the input folder is read-only
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_candidate(path: Path) -> type:
    cls = getattr(load_module("candidate", path), "TokenMixer", None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError("candidate.py must define `class TokenMixer(nn.Module)` at top level")
    return cls


def describe(exc: BaseException) -> str:
    """The exception's last line, plus the deepest line of candidate.py it passed through."""
    text = traceback.format_exception_only(type(exc), exc)[-1].strip()
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
             if os.path.basename(f.filename) == "candidate.py"]
    if isinstance(exc, SyntaxError) and exc.filename and os.path.basename(exc.filename) == "candidate.py":
        lines.append(exc.lineno or 0)
    return f"{text} (candidate.py line {lines[-1]})" if lines else text


# -- data ------------------------------------------------------------------------------
class Tokens:
    """A .bin file of bytes; windows of T+1 are cut from it by start offset."""

    def __init__(self, path: Path, device: str) -> None:
        arr = np.memmap(path, dtype=np.uint8, mode="r")
        self.n, self.device = len(arr), device
        self.on_device = self.n <= ON_DEVICE_MAX_BYTES
        self.data = torch.from_numpy(np.array(arr)).to(device) if self.on_device else arr

    def windows(self, starts: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.on_device:
            chunk = self.data[starts.to(self.device)[:, None] + torch.arange(T + 1, device=self.device)]
        else:
            idx = starts.cpu().numpy()[:, None] + np.arange(T + 1)
            chunk = torch.from_numpy(np.asarray(self.data[idx])).to(self.device, non_blocking=True)
        chunk = chunk.long()
        return chunk[:, :-1], chunk[:, 1:]


def unigram_bpb(train: Path, val: Path) -> float:
    counts = np.bincount(np.memmap(train, dtype=np.uint8, mode="r"), minlength=256).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    val_counts = np.bincount(np.memmap(val, dtype=np.uint8, mode="r"), minlength=256)
    return float(-(val_counts * logp).sum() / max(val_counts.sum(), 1))


@torch.no_grad()
def evaluate(model: nn.Module, val: Tokens, cfg: dict[str, Any], amp: Any) -> float:
    """Bits per byte over fixed, evenly spaced validation windows."""
    T = cfg["seq_len"]
    n = max(1, min(cfg["eval_tokens"] // T, (val.n - 1) // T))
    batch = min(cfg["batch_size"], n)
    n -= n % batch  # whole batches only: one shape, no recompiles
    starts = torch.linspace(0, val.n - T - 1, n).long()
    model.eval()
    total = torch.zeros((), device=val.device)
    for i in range(0, n, batch):
        x, y = val.windows(starts[i:i + batch], T)
        with amp:
            total += model(x, y).float()
    model.train()
    return (total / (n // batch)).item() / math.log(2)


# -- training ------------------------------------------------------------------------
def compile_failed(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))


def train(cls: type, cfg: dict[str, Any], spec: dict[str, Any], input_dir: Path, t0: float) -> dict[str, Any]:
    # long: one training loop read top to bottom (set-up, steps, evaluation), like nanoGPT's train.py
    device, seed = spec["device"], spec["seed"]
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed)
    model = LM(cls, cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": cfg["weight_decay"]},
              {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, cfg["beta2"]), fused=cuda)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    runner: nn.Module = torch.compile(model) if cfg["compile"] else model

    train_data, val_data = Tokens(input_dir / "train.bin", device), Tokens(input_dir / "val.bin", device)
    gen = torch.Generator(device=device if train_data.on_device else "cpu").manual_seed(seed)
    T, B, steps = cfg["seq_len"], cfg["batch_size"], cfg["steps"]
    warmup = int(cfg["warmup"] * steps)
    eval_at = {max(1, round(k * steps / cfg["evals"])) for k in range(1, cfg["evals"] + 1)}
    skip = min(10, steps // 5)  # steps left out of tokens_per_s (compilation, warm-up of kernels)

    def lr_at(step: int) -> float:
        if step <= warmup:
            return cfg["lr"] * step / max(1, warmup)
        frac = (step - warmup) / max(1, steps - warmup)
        return cfg["lr"] * (cfg["min_lr_frac"] + (1 - cfg["min_lr_frac"]) * 0.5 * (1 + math.cos(math.pi * frac)))

    def one_step(step: int) -> torch.Tensor:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        starts = torch.randint(train_data.n - T - 1, (B,), device=gen.device, generator=gen)
        x, y = train_data.windows(starts, T)
        with amp:
            loss = runner(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def eager(exc: BaseException) -> nn.Module:
        emit("log", message=f"torch.compile failed, continuing eagerly: {describe(exc)}")
        metrics["compile"] = "failed"
        return model

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    curves: dict[str, list[list[float]]] = {"train": [], "val": []}
    metrics: dict[str, Any] = {"params": params, "steps": steps, "tokens": steps * B * T,
                               "unigram_bpb": unigram_bpb(input_dir / "train.bin", input_dir / "val.bin")}
    loss_sum, loss_n, excluded, timed_from = torch.zeros((), device=device), 0, 0.0, time.perf_counter()
    last_log_t, last_log_step, train_loss = time.perf_counter(), 0, float("nan")
    for step in range(1, steps + 1):
        try:
            loss = one_step(step)
        except Exception as exc:
            if runner is model or not compile_failed(exc):
                raise
            runner = eager(exc)
            opt.zero_grad(set_to_none=True)
            loss = one_step(step)
        loss_sum += loss
        loss_n += 1
        if step == skip:
            sync()
            timed_from, excluded = time.perf_counter(), 0.0
        if step % cfg["log_every"] == 0 or step == steps or step in eval_at:
            train_loss = loss_sum.item() / loss_n
            now = time.perf_counter()
            rate = (step - last_log_step) * B * T / max(now - last_log_t, 1e-9)
            emit("progress", step=step, loss=round(train_loss, 5), tokens_per_s=round(rate, 1), lr=lr_at(step))
            curves["train"].append([step, train_loss])
            loss_sum.zero_()
            loss_n = 0
            if not math.isfinite(train_loss):
                return {"status": "nan", "reason": f"training loss became {train_loss} at step {step}",
                        "metrics": {**metrics, "train_loss": train_loss}, "curves": curves}
            if step in eval_at:
                t_eval = time.perf_counter()
                try:
                    bpb = evaluate(runner, val_data, cfg, amp)
                except Exception as exc:
                    if runner is model or not compile_failed(exc):
                        raise
                    runner = eager(exc)
                    bpb = evaluate(runner, val_data, cfg, amp)
                curves["val"].append([step, bpb])
                emit("metric", step=step, val_bpb=round(bpb, 5))
                if not math.isfinite(bpb):
                    return {"status": "nan", "reason": f"validation loss became {bpb} at step {step}",
                            "metrics": {**metrics, "train_loss": train_loss}, "curves": curves}
                if step >= skip:  # evals before the timed window are outside it anyway
                    excluded += time.perf_counter() - t_eval
            last_log_t, last_log_step = time.perf_counter(), step
    sync()
    elapsed = time.perf_counter() - timed_from - excluded
    if (input_dir / "extra.bin").exists():  # a second text the search never saw: how far the ranking generalises
        metrics["val_bpb_extra"] = evaluate(runner, Tokens(input_dir / "extra.bin", device), cfg, amp)
    metrics.update(
        val_bpb=curves["val"][-1][1], train_loss=train_loss,
        tokens_per_s=(steps - skip) * B * T / max(elapsed, 1e-9),
        peak_mem_mb=(torch.cuda.max_memory_allocated() / 2**20 if cuda
                     else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        wall_s=time.time() - t0,
    )
    return {"status": "ok", "metrics": metrics, "curves": curves}


# -- entry point ------------------------------------------------------------------------
def run(spec_path: Path) -> dict[str, Any]:
    t0 = time.time()
    spec = json.loads(spec_path.read_text())
    input_dir, cfg = spec_path.parent, spec["config"]
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    try:
        cls = load_candidate(input_dir / "candidate.py")
        if spec["mode"] == "check":
            probes = load_module("lm_probes", input_dir / "probes.py")  # shipped beside this file
            return probes.run_checks(cls, cfg, spec["device"], spec["seed"], LM, describe)
        return train(cls, cfg, spec, input_dir, t0)
    except torch.cuda.OutOfMemoryError as exc:
        return {"status": "oom", "reason": describe(exc)}
    except MemoryError as exc:
        return {"status": "oom", "reason": f"out of host memory: {describe(exc)}"}
    except Exception as exc:
        if "can't allocate memory" in str(exc):  # torch's CPU allocator under a memory limit
            return {"status": "oom", "reason": f"out of host memory: {describe(exc)}"}
        return {"status": "error", "reason": describe(exc)}


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python harness.py SPEC.json OUTPUT_DIR")
    result = run(Path(sys.argv[1]))
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out / "result.json")
    emit("done", status=result["status"], reason=result.get("reason", ""))


if __name__ == "__main__":
    main()
