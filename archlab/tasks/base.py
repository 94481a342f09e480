"""What a task pack is: the interface a candidate meets, its seeds, design
space, integrity checks, harness and metric. The campaign only talks to this."""
from __future__ import annotations

import ast
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from archlab.errors import ConfigError, UnknownMetric
from archlab.pyparse import parse as parse_python
from archlab.sandbox.base import Job, Limits

T = TypeVar("T")


class TaskOptionError(ConfigError):
    """A task option is missing or wrong; the message says how to fix it."""


@dataclass
class Candidate:
    """A proposal made concrete: code, plus the genome when a strategy rendered it."""

    name: str
    code: str
    motivation: str = ""
    genome: dict[str, Any] | None = None


def genome_tokens(genome: dict[str, Any]) -> list[str]:
    """A genome as "component=value" words (list entries by position), plus counts for list
    components ("edges:nor_conv_3x3#2": at least two edges hold it)."""
    out = []
    for key in sorted(genome):
        value = genome[key]
        if isinstance(value, list):
            out += [f"{key}[{i}]={v}" for i, v in enumerate(value)]
            out += [f"{key}:{v}#{n}" for v in sorted(set(map(str, value))) for n in range(1, value.count(v) + 1)]
        else:
            out.append(f"{key}={value}")
    return out


class DesignSpace(ABC):
    """The grammar the offline strategies search: sample, mutate, render to code."""

    @abstractmethod
    def sample(self, rng: random.Random) -> dict[str, Any]: ...

    @abstractmethod
    def mutate(self, genome: dict[str, Any], rng: random.Random) -> dict[str, Any]: ...

    @abstractmethod
    def render(self, genome: dict[str, Any]) -> str: ...

    @abstractmethod
    def describe(self, genome: dict[str, Any]) -> str:
        """A short human name for the genome (used as the proposal name)."""

    def neighbours(self, genome: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every genome one `mutate` away, in a fixed order: the local search the surrogate ranks
        ([search] candidates = "neighbours"). None: the space does not enumerate them (random mutants instead)."""
        return None

    def descriptors(self, genome: dict[str, Any]) -> dict[str, Any] | None:
        """Behaviour descriptors of a genome, the cells of a MAP-Elites archive ([search] parents =
        "map_elites"): a few coarse values each. None: the space declares none."""
        return None


class TaskPack(ABC):
    """Subclasses set the class attributes and implement the methods.
    `options` are the task's table in the config (e.g. table path, dataset);
    `preset` names a size (tiny, small, ...) where the task has presets."""

    name: str = "abstract"
    summary: str = ""
    metric: str = "score"           # what the search optimises (e.g. val accuracy)
    higher_is_better: bool = True
    report_metric: str = "score"    # what is reported for the selected best (e.g. test accuracy)
    # Whether higher is better, for every other metric the harness reports that can be ranked by
    # (the searched and the reported metric follow `higher_is_better`): the task says, nothing guesses.
    metric_directions: dict[str, bool] = {}
    required_symbol: str = "model"  # top-level name a candidate must define
    interface: str = ""             # the contract in words, for prompts and errors
    design_hint: str = ""           # what a proposal's design should spell out, for the researcher
    design_schema: Any = None       # a pydantic model of the design as data (the genome), when the task has one
    # Where the harness reports a behaviour vector ({"behaviour": ...} in the check's result): how close
    # two candidates' outputs must be to be one behaviour (archlab.behaviour.Tolerance).
    behaviour_tolerance: Any = None
    default_limits: Limits = Limits()  # a training job's; the sandbox config overrides what it sets
    check_wall_s: float = 60.0         # a check job's wall time: it builds and probes, it does not train
    default_budget: int = 12           # experiments when the config sets none
    uses_gpu: bool = False             # whether its jobs want a GPU (e.g. the lm task above the tiny preset)
    forbidden_imports: tuple[str, ...] = ("os", "subprocess", "socket", "shutil", "requests", "urllib", "http",
                                          "ctypes", "multiprocessing")

    def __init__(self, options: dict[str, Any] | None = None, preset: str | None = None) -> None:
        self.options = dict(options or {})
        self.preset = preset

    def limits(self, kind: str) -> Limits:
        """Default limits of a "check" or "train" job: a check gets its own short wall time, so a
        candidate that hangs in its constructor does not hold a slot for a training's worth."""
        return replace(self.default_limits, wall_time_s=self.check_wall_s) if kind == "check" else self.default_limits

    # -- set-up ---------------------------------------------------------
    def validate(self) -> None:  # noqa: B027 - an optional hook: a no-op unless a task needs it
        """Raise TaskOptionError when options are unusable (missing table, ...)."""

    def prepare(self, campaign_dir: Path) -> None:  # noqa: B027 - an optional hook: a no-op unless a task needs it
        """One-off work before the first job (index a table, cache data)."""

    @abstractmethod
    def seeds(self) -> list[Candidate]:
        """Baseline candidates: they seed campaigns and anchor leaderboards."""

    @property
    @abstractmethod
    def space(self) -> DesignSpace: ...

    def fidelity(self) -> dict[str, Any] | None:
        """What, besides the code and the seed, decides a training's result (after prepare()): the
        workspace result cache's key, so a training is never repeated. None: results are not cached."""
        return None

    def verify_preset(self) -> str | None:
        """The preset a verification stage retrains at when [verify] preset is unset (None: this one)."""
        return self.preset

    def family(self, genome: dict[str, Any] | None) -> str | None:
        """A design family (e.g. the lm update rule), so verification promotes several families, not
        one family's k variants; None where the task has none."""
        return None

    def design_text(self, genome: dict[str, Any]) -> str:
        """A genome in words for the coder's prompt."""
        import json

        return json.dumps(genome, sort_keys=True)

    # -- checks and jobs --------------------------------------------------
    def static_errors(self, code: str) -> list[str]:
        """Cheap checks before anything runs: parses, defines the symbol, imports."""
        try:
            tree = parse_python(code)
        except SyntaxError as exc:
            line = (exc.text or "").strip()
            return [f"the code does not parse: {exc.msg} (line {exc.lineno}{f': {line[:120]!r}' if line else ''})"]
        errors: list[str] = []
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        if self.required_symbol not in defined:
            errors.append(self._where_is_symbol(tree))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for mod in names:
                if mod.split(".")[0] in self.forbidden_imports:
                    errors.append(f"import of `{mod}` is not allowed in a candidate")
        return errors

    def _where_is_symbol(self, tree: ast.Module) -> str:
        """Why the required name is missing, said so a model can fix it."""
        want = self.required_symbol
        first = self.interface.splitlines()[0] if self.interface else ""
        for top in tree.body:
            if not isinstance(top, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(top):
                if inner is not top and getattr(inner, "name", None) == want:
                    kind = "class" if isinstance(top, ast.ClassDef) else "function"
                    return (f"`{want}` is defined inside {kind} `{top.name}` (line {inner.lineno}); define it at the "
                            f"top level of the module, with nothing around it ({first})").replace(" ()", "")
        return f"the module must define `{want}` at top level ({first})".replace(" ()", "")

    @abstractmethod
    def check_job(self, code: str, workdir: Path, seed: int, limits: Limits) -> Job:
        """The sandbox job that builds the candidate and runs the integrity probes.
        Its result.json: {"status": "ok"|"integrity"|"error", "reason": str,
        "fingerprint": str, "params": int, ...}."""

    @abstractmethod
    def train_job(self, code: str, workdir: Path, seed: int, limits: Limits) -> Job:
        """The sandbox job that trains/evaluates. Its result.json:
        {"status": "ok"|"nan"|"integrity"|"error", "metrics": {...}, "curves": {...}}."""

    # -- scoring and ranking: the one definition every leaderboard, prompt and strategy uses --
    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def higher(self, metric: str | None = None) -> bool:
        """Whether a higher `metric` is better, as the task declares it."""
        metric = metric or self.metric
        if metric in (self.metric, self.report_metric):
            return bool(self.higher_is_better)
        if metric in self.metric_directions:
            return self.metric_directions[metric]
        known = ", ".join(sorted({self.metric, self.report_metric, *self.metric_directions}))
        raise UnknownMetric(f"task {self.name} does not say whether a higher {metric!r} is better, so it does not "
                            f"rank by it; rankable metrics: {known} (chat's leaderboard takes higher_is_better)")

    def value(self, metrics: dict[str, Any] | None, metric: str | None = None) -> float | None:
        """A finished run's `metric`: the mean over seeds where it recorded several, else its value."""
        metric = metric or self.metric
        seeds = seed_values(metrics, metric)
        if len(seeds) >= 2:
            return sum(seeds) / len(seeds)
        v = (metrics or {}).get(metric)
        return float(v) if _number(v) else None

    def score(self, metrics: dict[str, Any] | None) -> float | None:
        """The searched metric (the mean over seeds where there are several), or None when absent."""
        return self.value(metrics, self.metric)

    def value_of(self, e: Any, metric: str | None = None) -> float | None:
        """An experiment's `metric` (a ledger row, or anything with `metrics` and `score`): from its
        metrics, else, for the searched metric, the score the ledger recorded."""
        metric = metric or self.metric
        v = self.value(getattr(e, "metrics", None), metric)
        return getattr(e, "score", None) if v is None and metric == self.metric else v

    def ranked(self, rows: Iterable[T], value: Callable[[T], float | None] | None = None, *,
               metric: str | None = None, higher: bool | None = None,
               tiebreak: Callable[[T], Any] | None = None) -> list[T]:
        """The one ranking: the rows that have a value, best first by the direction of `metric`
        (`higher` overrides it); equal values in `tiebreak` order, else in the order given."""
        up = self.higher(metric) if higher is None else higher
        value = value or (lambda r: self.value_of(r, metric))
        scored = [(v, i, r) for i, r in enumerate(rows) if (v := value(r)) is not None]
        scored.sort(key=lambda t: (-t[0] if up else t[0], tiebreak(t[2]) if tiebreak else t[1]))
        return [r for _, _, r in scored]


def seed_values(metrics: dict[str, Any] | None, metric: str) -> list[float]:
    """The per-seed values of `metric` when a run recorded several seeds:
    metrics["seeds"] = [{metric: v, ...}, ...] or metrics[f"{metric}_seeds"] = [v, ...].
    A single run (the usual case) gives []."""
    if not metrics:
        return []
    runs = metrics.get(f"{metric}_seeds")
    if isinstance(runs, list):
        return [float(v) for v in runs if _number(v)]
    runs = metrics.get("seeds")
    if isinstance(runs, list):
        return [float(r[metric]) for r in runs if isinstance(r, dict) and _number(r.get(metric))]
    return []


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
