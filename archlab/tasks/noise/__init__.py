"""The `noise` task: a synthetic pack whose metric is seeded noise, every candidate drawn
from one distribution, plus a planted effect (`[task] effect`) that every searched variant
has over the baselines. It calibrates the verification stage: with effect 0 a claim of
"better than a baseline" is a false positive; with a real effect, a missed one is a miss.

Options: effect (0.0), noise (1.0: each run's own spread), shared (1.0: the spread every run
under one seed shares, which pairing by seed cancels), variants (1000: the design space),
delay_s (0: seconds each training waits, for drills of kill and resume)."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from archlab.sandbox.base import INPUT, OUTPUT, PYTHON, Job, Limits
from archlab.tasks.base import Candidate, DesignSpace, TaskOptionError, TaskPack

HERE = Path(__file__).parent
OPTIONS = {"effect": 0.0, "noise": 1.0, "shared": 1.0, "variants": 1000, "delay_s": 0.0}
INTERFACE = """\
Set `VARIANT = <int>`: which of the task's variants this candidate is (0 <= VARIANT < variants).
The score (higher is better) is noise drawn from the seed, plus the planted effect for every variant."""


class NoiseSpace(DesignSpace):
    def __init__(self, variants: int) -> None:
        self.variants = variants

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {"variant": rng.randrange(self.variants)}

    def mutate(self, genome: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        step = rng.choice([-3, -2, -1, 1, 2, 3])
        return {"variant": (int(genome["variant"]) + step) % self.variants}

    def render(self, genome: dict[str, Any]) -> str:
        return f'"""Variant {int(genome["variant"])} of the noise task."""\nVARIANT = {int(genome["variant"])}\n'

    def describe(self, genome: dict[str, Any]) -> str:
        return f"variant {int(genome['variant'])}"


class NoiseTask(TaskPack):
    name = "noise"
    summary = "synthetic: the metric is seeded noise plus a planted effect; calibrates verification"
    metric = report_metric = "score"
    higher_is_better = True
    metric_directions = {"score": True}
    required_symbol = "VARIANT"
    interface = INTERFACE
    default_budget = 6
    default_limits = Limits(wall_time_s=30.0, memory_mb=256, cpus=1.0)
    check_wall_s = 30.0

    def __init__(self, options: dict[str, Any] | None = None, preset: str | None = None) -> None:
        super().__init__(options, preset)
        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise TaskOptionError(f"unknown noise task option(s) {sorted(unknown)}; the options are: "
                                  f"{', '.join(OPTIONS)}")
        self.values = {k: self.options.get(k, v) for k, v in OPTIONS.items()}
        for k, v in self.values.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (k == "variants" and v < 2):
                raise TaskOptionError(f"noise task option {k!r} must be a non-negative number"
                                      f"{' of at least 2' if k == 'variants' else ''}, got {v!r}")
        self._space = NoiseSpace(int(self.values["variants"]))

    def seeds(self) -> list[Candidate]:
        return [Candidate(name=f"baseline-{i}", code=f'"""Baseline {i}: no effect."""\nVARIANT = -{i}\n',
                          motivation="a variant without the planted effect") for i in (1, 2)]

    @property
    def space(self) -> NoiseSpace:
        return self._space

    def fidelity(self) -> dict[str, Any] | None:
        harness = hashlib.sha256((HERE / "harness.py").read_bytes()).hexdigest()[:16]
        return {"task": self.name, "options": self.values, "harness": harness}

    def check_job(self, code: str, workdir: Path, seed: int, limits: Limits) -> Job:
        return self._job("check", code, workdir, seed, limits)

    def train_job(self, code: str, workdir: Path, seed: int, limits: Limits) -> Job:
        return self._job("train", code, workdir, seed, limits)

    def _job(self, mode: str, code: str, workdir: Path, seed: int, limits: Limits) -> Job:
        spec = {"mode": mode, "seed": seed, **{k: float(v) for k, v in self.values.items()}}
        return Job(name=f"noise-{mode}", workdir=Path(workdir),
                   command=[PYTHON, "-I", "-S", f"{INPUT}/harness.py", f"{INPUT}/spec.json", OUTPUT],
                   files={"harness.py": (HERE / "harness.py").read_text(), "candidate.py": code,
                          "spec.json": json.dumps(spec)}, limits=limits)


TASK = NoiseTask
__all__ = ["TASK", "NoiseTask", "NoiseSpace"]
