"""Integrity probes for a TokenMixer, run by the harness in check mode before any
training. Shipped into the sandbox beside harness.py; stdlib, numpy and torch only.

A failed probe returns {"status": "integrity", "reason": "<probe>: ..."}; an
exception raised by the candidate returns {"status": "error", "reason": ...};
otherwise {"status": "ok", "params", "fingerprint", "behaviour", "probes"}.
"""
from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

FINGERPRINT_SEED = 0        # same code -> same fingerprint, whatever the job's seed
FINGERPRINT_SHAPE = (2, 136)  # (B, T) of the fixed probe input: past two chunks of 64, so inter-chunk code runs
COMPLEXITY_T = (256, 1024)   # T and 4T
QUADRATIC_EXPONENT = 1.5     # cost ~ T^k; linear is 1, quadratic 2


class ProbeFailure(Exception):
    def __init__(self, reason: str, status: str = "integrity") -> None:
        super().__init__(reason)
        self.status = status


def _tolerance(y: torch.Tensor) -> float:
    # Outputs that do not depend on a change are bit-identical in practice; allow float noise.
    return 1e-5 * max(1.0, float(y.abs().max()))


class Probe:
    """Runs a mixer on inputs, reseeding before each call so dropout masks repeat."""

    def __init__(self, mixer: nn.Module, d: int, device: str, seed: int) -> None:
        self.mixer, self.d, self.device, self.seed = mixer, d, device, seed
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(self.device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(self.seed)
        y = self.mixer(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ProbeFailure(f"shape: TokenMixer returned {got} for an input of shape {tuple(x.shape)}; "
                               "it must return (B, T, d_model)", status="error")
        return y.float()


def causality(probe: Probe, T: int) -> dict[str, Any]:
    x = probe.randn(2, T, probe.d)
    y = probe(x)
    if not torch.isfinite(y).all():
        raise ProbeFailure(f"nan: the mixer's output holds NaN or Inf on a random input (B=2, T={T})")
    tol = _tolerance(y)
    for p in range(1, T):
        x2 = x.clone()
        x2[:, p] += 1.0 + probe.randn(2, probe.d)
        change = (probe(x2)[:, :p] - y[:, :p]).abs().amax(dim=(0, 2))
        bad = (change > tol).nonzero()
        if len(bad):
            t = int(bad[0])
            raise ProbeFailure(f"causality: output at t={t} changed when t={p} was perturbed "
                               f"(by {float(change[t]):.2e}); a token may only see itself and earlier tokens")
    return {"ok": True, "T": T, "positions": T - 1}


def batch_independence(probe: Probe, T: int) -> dict[str, Any]:
    x = probe.randn(3, T, probe.d)
    y = probe(x)
    x2 = x.clone()
    x2[1:] = probe.randn(2, T, probe.d)
    change = float((probe(x2)[0] - y[0]).abs().max())
    if change > _tolerance(y):
        raise ProbeFailure(f"batch: the output of sample 0 changed (by {change:.2e}) when the other samples "
                           "in the batch changed; batch members must be processed independently")
    return {"ok": True, "max_change": change}


def length(probe: Probe, T: int) -> dict[str, Any]:
    for n in (T, 2 * T):
        if not torch.isfinite(probe(probe.randn(1, n, probe.d))).all():
            raise ProbeFailure(f"length: the output holds NaN or Inf at T={n} (trained at T={T})")
    return {"ok": True, "T": [T, 2 * T]}


def backward(lm: nn.Module, mixer_params: set[int], T: int, device: str, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(256, (2, T + 1), generator=gen).to(device)
    loss = lm(idx[:, :-1], idx[:, 1:])
    if not torch.isfinite(loss):
        raise ProbeFailure(f"nan: the LM's initial loss is {float(loss.detach())} on random bytes")
    loss.backward()
    without_grad = 0
    for p in lm.parameters():
        if p.grad is None:
            without_grad += id(p) in mixer_params
        elif not torch.isfinite(p.grad).all():
            raise ProbeFailure("nan: a gradient holds NaN or Inf after one backward pass")
    return {"ok": True, "initial_loss": float(loss.detach()), "mixer_params_without_grad": without_grad}


def _cpu_sdpa_flops(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def complexity(mixer: nn.Module, d: int, device: str, required: bool) -> dict[str, Any]:
    """How the forward cost grows from T to 4T, by counted matmul/attention FLOPs:
    device-independent and immune to a busy machine, which timings are not (time
    decides only when no matmul ran). Quadratic work done by elementwise ops alone
    is not in the count; the measured seconds are reported beside it."""
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):  # not counted by torch itself
        custom[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
    flops, times = [], []
    mixer.eval()
    with torch.no_grad():
        for T in COMPLEXITY_T:
            x = torch.randn(1, T, d, device=device)
            with FlopCounterMode(display=False, custom_mapping=custom) as counter:
                mixer(x)
            flops.append(counter.get_total_flops())
            runs = []
            for _ in range(3):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                mixer(x)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                runs.append(time.perf_counter() - start)
            times.append(statistics.median(runs))
    mixer.train()
    ratio = COMPLEXITY_T[1] / COMPLEXITY_T[0]
    by_flops = math.log(max(flops[1], 1) / max(flops[0], 1), ratio)
    by_time = math.log(times[1] / max(times[0], 1e-9), ratio)
    exponent, by = (by_flops, "flops") if flops[0] else (by_time, "time")
    out = {"T": list(COMPLEXITY_T), "flops": flops, "seconds": [round(t, 5) for t in times],
           "exponent": round(exponent, 2), "by": by}
    if required and exponent > QUADRATIC_EXPONENT:
        raise ProbeFailure(f"complexity: the mixer's cost grows as T^{exponent:.2f} from T={COMPLEXITY_T[0]} to "
                           f"T={COMPLEXITY_T[1]} (by {by}); this campaign asks for sub-quadratic mixers")
    return out


BEHAVIOUR_SEEDS = (0, 1)    # init seeds: agreement after one init may be chance (a zero-initialised branch)
BEHAVIOUR_SAMPLE = 512      # values kept per probe: 2 seeds x 2 inputs -> 2,048 values
STRUCTURED_T = 77           # the second input: another length, and repeated tokens rather than noise


def _probe_inputs(d: int, device: str) -> list[torch.Tensor]:
    """Two fixed inputs of different length and content: gaussian noise over two chunks of 64,
    and a sequence of 16 recurring 'tokens' (rows of a table, scaled), as embedded text looks."""
    noise = torch.randn(*FINGERPRINT_SHAPE, d, generator=torch.Generator().manual_seed(1234))
    gen = torch.Generator().manual_seed(4321)
    table = 3.0 * torch.randn(16, d, generator=gen)
    tokens = table[torch.randint(16, (1, STRUCTURED_T), generator=gen)]
    return [noise.to(device), tokens.to(device)]


def _sample(y: np.ndarray, salt: int) -> np.ndarray:
    """The same positions for every candidate (outputs have the input's shape, checked before)."""
    flat = y.reshape(-1)
    idx = np.sort(np.random.default_rng(salt).choice(flat.size, min(BEHAVIOUR_SAMPLE, flat.size), replace=False))
    return flat[idx]


def fingerprint(cls: type, cfg: dict[str, Any], device: str) -> tuple[str, int, dict[str, Any] | None]:
    """(exact hash, mixer size, behaviour record). The hash: sha256 of the rounded outputs of the
    seed-0 mixer on the first input, the gate's fast first look. The behaviour record: a fixed
    sample of the outputs on both inputs under both init seeds, compared within a tolerance
    (archlab/behaviour.py); None when an output is not finite."""
    inputs, digest, n, values, shapes = _probe_inputs(cfg["d_model"], device), "", 0, [], []
    for seed in BEHAVIOUR_SEEDS:
        torch.manual_seed(seed)
        mixer = cls(cfg["d_model"], cfg["n_heads"], **cfg["mixer_kwargs"]).to(device).eval()
        n = sum(p.numel() for p in mixer.parameters())
        for i, x in enumerate(inputs):
            with torch.no_grad():
                y = mixer(x).double().cpu().numpy()
            shapes.append(list(y.shape))
            if seed == FINGERPRINT_SEED and i == 0:
                rounded = np.round(y, 4) + 0.0  # + 0.0 turns -0.0 into 0.0
                digest = hashlib.sha256(f"{n}:{y.shape}:".encode() + rounded.tobytes()).hexdigest()
            values.append(_sample(y, 100 * seed + i))
    flat = np.concatenate(values)
    if not np.isfinite(flat).all():
        return digest, n, None
    behaviour = {"values": [float(v) for v in flat.astype(np.float32)], "params": n,
                 "shape": shapes, "probes": len(values)}
    return digest, n, behaviour


def run_checks(cls: type, cfg: dict[str, Any], device: str, seed: int, lm_cls: type,
               describe: Callable[[BaseException], str]) -> dict[str, Any]:
    d, probes, stage = cfg["d_model"], {}, "build"
    try:
        torch.manual_seed(seed)
        lm = lm_cls(cls, cfg).to(device)
        mixer = lm.blocks[0].mixer
        total = sum(p.numel() for p in lm.parameters())
        per_layer = sum(p.numel() for p in mixer.parameters())
        probes["params"] = {"total": total, "mixer_per_layer": per_layer, "budget": cfg["max_params"]}
        if total > cfg["max_params"]:
            raise ProbeFailure(f"params: the model has {total:,} parameters, over the {cfg.get('preset', '')} "
                               f"budget of {cfg['max_params']:,} (the mixer has {per_layer:,} per layer)")
        probe = Probe(mixer, d, device, seed)
        stage = "causality"
        probes["causality"] = causality(probe, cfg["probe_len"])
        stage = "batch"
        probes["batch"] = batch_independence(probe, cfg["probe_len"])
        stage = "length"
        probes["length"] = length(probe, cfg["seq_len"])
        stage = "backward"
        ids = {id(p) for p in mixer.parameters()}
        probes["backward"] = backward(lm, ids, min(cfg["seq_len"], 64), device, seed)
        if cfg.get("subquadratic"):
            stage = "complexity"
            probes["complexity"] = complexity(mixer, d, device, required=True)
        stage = "fingerprint"
        digest, n, behaviour = fingerprint(cls, cfg, device)
    except ProbeFailure as failure:
        return {"status": failure.status, "reason": str(failure), "probes": probes}
    except torch.cuda.OutOfMemoryError:
        raise  # the harness reports it as oom
    except Exception as exc:  # the candidate crashed
        return {"status": "error", "reason": f"{stage}: {describe(exc)}", "probes": probes}
    return {"status": "ok", "params": total, "fingerprint": digest, "behaviour": behaviour, "probes": probes}
