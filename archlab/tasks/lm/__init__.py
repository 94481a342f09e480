"""The `lm` task pack — the ASI-Arch domain: evolve the causal token mixer of a
small byte-level language model trained on real text; metric: validation bits
per byte (lower is better). The model around the mixer, the data and the
training loop belong to the harness (harness.py), which runs in the sandbox.
Importing this module does not import torch."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from archlab.behaviour import Tolerance
from archlab.pyparse import parse as parse_python
from archlab.sandbox.base import INPUT, OUTPUT, PYTHON, Job, Limits
from archlab.tasks.base import Candidate, DesignSpace, TaskOptionError, TaskPack
from archlab.tasks.lm.presets import CPU_PRESETS, TRAIN_WALL_S, VERIFY_PRESET, resolve
from archlab.tasks.lm.space import LMSpace

HERE = Path(__file__).parent
BASELINES = ("softmax_attention", "linear_attention", "deltanet", "gated_retention")
# Calls and attributes a mixer has no business with: they would let it read the
# data files or the harness's frames (the validation text reaches it only through the harness).
FORBIDDEN_CALLS = ("open", "exec", "eval", "compile", "__import__", "breakpoint", "input", "globals", "vars")
FORBIDDEN_ATTRS = ("fromfile", "memmap", "loadtxt", "read_bytes", "read_text", "_getframe", "f_back",
                   "f_locals", "f_globals", "__globals__", "__builtins__", "__subclasses__", "system", "popen")

INTERFACE = """\
Define `class TokenMixer(nn.Module)`, constructed as `TokenMixer(d_model, n_heads, **kwargs)`, whose forward maps x of shape (B, T, d_model) to (B, T, d_model).
- Causal: the output at position t may depend only on inputs at positions <= t. Checked by perturbing future tokens.
- Batch members are processed independently (no statistics across the batch). Checked.
- Any sequence length T must work (pad internally if you compute in chunks); it is trained at T and checked at other lengths.
- Stay finite; keep the whole model within the preset's parameter budget.
The harness owns everything else: byte embedding (vocabulary 256), N pre-norm residual blocks `x + mixer(norm(x))` then `x + mlp(norm(x))`, final norm, tied output head, AdamW with warm-up and cosine decay, bf16 autocast on GPU. There is no positional embedding: the mixer supplies whatever position signal it needs (rotary embeddings, decay, short convolutions...).
Use torch and math only: no file, network, process or interpreter access.
Metric: validation bits per byte (val_bpb), lower is better; tokens/s and parameters are reported beside it."""  # noqa: E501 - prompt text, kept line for line as the models read it


class LMTask(TaskPack):
    name = "lm"
    summary = "causal token mixer inside a small byte-level language model; metric: validation bits per byte"
    metric = "val_bpb"
    higher_is_better = False
    report_metric = "val_bpb"
    # steps and tokens are the budget, not a quality: not rankable
    metric_directions = {"val_bpb": False, "val_bpb_extra": False, "train_loss": False, "unigram_bpb": False,
                         "tokens_per_s": True,
                         "params": False, "peak_mem_mb": False, "wall_s": False}
    required_symbol = "TokenMixer"
    interface = INTERFACE
    # float32 reassociation of real rewrites stays under ~2e-7 (benchmarks/dedup_rewrites.py); a changed
    # epsilon or decay that matters moves outputs by 1e-4 and more.
    behaviour_tolerance = Tolerance(rtol=1e-5, atol=1e-6)
    design_hint = ("say how the mixer computes its output from the past tokens: the state or attention it keeps, "
                   "its update rule, feature map, gating and normalisation")
    forbidden_imports = TaskPack.forbidden_imports + (
        "sys", "importlib", "pathlib", "io", "pickle", "glob", "tempfile", "inspect", "gc", "builtins",
        "threading", "signal", "mmap", "marshal", "runpy", "code", "pty")
    check_wall_s = 60.0  # build + causality/batch probes: ~1.6 s, torch's import included
    default_budget = 3  # `archlab run` with no arguments: 4 baselines + 3 experiments, a few minutes at tiny

    def __init__(self, options: dict[str, Any] | None = None, preset: str | None = None) -> None:
        super().__init__(options, preset)
        self.config = resolve(preset, self.options)   # raises TaskOptionError on a bad option
        self.preset = self.config["preset"]
        self.uses_gpu = self.preset not in CPU_PRESETS  # small and medium are GPU presets
        self.default_limits = Limits(wall_time_s=TRAIN_WALL_S.get(self.preset, TRAIN_WALL_S["tiny"]))
        self.data: dict[str, Path] | None = None       # set by prepare()
        self.data_meta: dict[str, Any] | None = None
        self.extra_meta: dict[str, Any] | None = None  # [verify] data: the second text's meta
        self._space: LMSpace | None = None

    # -- set-up ---------------------------------------------------------------------------
    def validate(self) -> None:
        data = self.options.get("data")
        if data is not None and not Path(str(data)).expanduser().exists():
            raise TaskOptionError(f"lm data path {data} does not exist; set `data` to a text file or folder, "
                                  "or remove it to use the bundled Shakespeare")
        extra = self.options.get("extra_eval")
        if extra is not None and not Path(str(extra)).expanduser().exists():
            raise TaskOptionError(f"lm: the second text {extra} does not exist; set [verify] data to a text file "
                                  "or folder the search never saw")

    def prepare(self, campaign_dir: Path) -> None:
        """Clean and split the text once; later calls (and resumed campaigns) find it by hash."""
        from archlab.tasks.lm.data import prepare_data  # lazily: `python -m archlab.tasks.lm.data` stays clean

        self.validate()
        meta = prepare_data(Path(campaign_dir) / "data", self.options.get("data"), min_bytes=self.config["seq_len"] + 2)
        folder = Path(meta["folder"])
        self.data, self.data_meta = {"train.bin": folder / "train.bin", "val.bin": folder / "val.bin"}, meta
        extra = self.options.get("extra_eval")
        if extra is not None:  # scored on its validation split, beside val_bpb
            self.extra_meta = prepare_data(Path(campaign_dir) / "data", extra, min_bytes=self.config["seq_len"] + 2)
            self.data["extra.bin"] = Path(self.extra_meta["folder"]) / "val.bin"

    def fidelity(self) -> dict[str, Any] | None:
        if self.data_meta is None:
            return None
        import hashlib

        code = b"".join((HERE / name).read_bytes() for name in ("harness.py", "probes.py"))
        return {"task": self.name, "config": self.config, "data": self.data_meta["sha256"],
                "harness": hashlib.sha256(code).hexdigest()[:16],
                "extra_eval": self.extra_meta["sha256"] if self.extra_meta else None}

    def verify_preset(self) -> str | None:
        return VERIFY_PRESET.get(self.preset, self.preset)

    def family(self, genome: dict[str, Any] | None) -> str | None:
        return (genome or {}).get("rule")  # linear, decay, delta, gated delta: the state's update rule

    def seeds(self) -> list[Candidate]:
        out = []
        for name in BASELINES:
            code = (HERE / "baselines" / f"{name}.py").read_text()
            motivation = (ast.get_docstring(parse_python(code)) or name).replace("\n", " ")
            out.append(Candidate(name=name, code=code, motivation=motivation))
        return out

    @property
    def space(self) -> DesignSpace:
        if self._space is None:
            self._space = LMSpace()
        return self._space

    # -- checks and jobs -------------------------------------------------------------------
    def static_errors(self, code: str) -> list[str]:
        errors = super().static_errors(code)
        try:
            tree = parse_python(code)
        except SyntaxError:
            return errors
        top = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        if isinstance(top.get("TokenMixer"), (ast.FunctionDef, ast.AsyncFunctionDef)):
            errors.append("`TokenMixer` must be a class (a subclass of nn.Module), not a function")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                errors.append(f"calling `{node.func.id}` is not allowed in a candidate (line {node.lineno})")
            elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
                errors.append(f"`.{node.attr}` is not allowed in a candidate (line {node.lineno}): "
                              "data reaches the model only through the harness")
        return errors

    def check_job(self, code: str, workdir: Path, seed: int, limits: Limits) -> Job:
        """Builds the mixer and runs the integrity probes; no data, no training."""
        return self._job("check", code, workdir, seed, limits, data={})

    def train_job(self, code: str, workdir: Path, seed: int, limits: Limits) -> Job:
        if self.data is None:
            raise RuntimeError("lm: call task.prepare(campaign_dir) before train_job (it writes train.bin / val.bin)")
        return self._job("train", code, workdir, seed, limits, data=dict(self.data))

    def spec(self, mode: str, seed: int, limits: Limits) -> dict[str, Any]:
        """What the harness reads: mode, seed, device, threads, and the resolved preset values."""
        return {"mode": mode, "seed": seed, "device": "cuda" if limits.gpus else "cpu",
                "threads": max(1, int(limits.cpus)), "config": self.config}

    def _job(self, mode: str, code: str, workdir: Path, seed: int, limits: Limits, data: dict[str, Path]) -> Job:
        files: dict[str, str | bytes] = {
            "harness.py": (HERE / "harness.py").read_text(),
            "probes.py": (HERE / "probes.py").read_text(),
            "candidate.py": code,
            "spec.json": json.dumps(self.spec(mode, seed, limits), indent=1),
        }
        return Job(name=f"lm-{mode}", workdir=Path(workdir),
                   command=[PYTHON, f"{INPUT}/harness.py", f"{INPUT}/spec.json", OUTPUT],
                   files=files, data=data, limits=limits)


TASK = LMTask
__all__ = ["LMTask", "TASK", "BASELINES", "INTERFACE"]
