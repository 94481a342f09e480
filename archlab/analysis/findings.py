"""Verified findings: what the verification stage's runs say, candidate by candidate, against
the best baseline re-run under the same preset and seeds; and the strategy arm against the
random-control arm. Measured metrics alone decide (scipy.stats, Holm over the candidates);
nothing is called better without a verdict that says so. `show`, the report and the chat all
read this one view."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from archlab.analysis.stats import Difference, Interval, difference, holm, mean_ci, rank_sum
from archlab.memory.ledger import Ledger

BETTER, SAME, WORSE, NONE = "better", "not distinguishable", "worse", "no verdict"


@dataclass
class Finding:
    key: str
    name: str
    role: str                 # candidate | baseline
    experiment: int | None
    arm: str | None
    explored: float | None    # the exploration score (one seed, the cheap fidelity)
    values: dict[int, float]  # seed index -> the searched metric at the verification fidelity
    failed: int               # runs that did not finish ok
    interval: Interval | None
    extra: Interval | None = None  # the second text's metric, where [verify] data is set
    diff: Difference | None = None  # candidate - best baseline
    p_holm: float | None = None
    verdict: str | None = None

    @property
    def mean(self) -> float | None:
        return sum(self.values.values()) / len(self.values) if self.values else None


@dataclass
class Findings:
    metric: str
    higher: bool
    preset: str
    alpha: float
    done: bool                # the stage finished (else: runs so far)
    baseline: Finding | None  # the best baseline by its verified mean: what every candidate is tested against
    rows: list[Finding] = field(default_factory=list)  # candidates (best first), then baselines
    claims: list[str] = field(default_factory=list)
    runs: int = 0
    reused: int = 0           # runs taken from the workspace's result cache, not trained again
    wall_s: float = 0.0
    gpu_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row, f in zip(out["rows"], self.rows, strict=True):
            row["mean"] = f.mean
            row["n"] = len(f.values)
        return out


def _label(f: Finding) -> str:
    return f"#{f.experiment} {f.name}" if f.role == "candidate" and f.experiment is not None else str(f.name)


def verified_findings(ledger: Ledger, task: Any, alpha: float | None = None) -> Findings | None:
    """The verification table and its claims; None when the campaign has no verification stage."""
    plan = ledger.get_meta("verify_plan")
    if plan is None:
        return None
    if alpha is None:
        alpha = float(plan.get("alpha", 0.05))
    higher, metric = task.higher(), task.metric
    runs = ledger.verify_runs()
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_subject.setdefault(r["subject"], []).append(r)
    rows = []
    for s in plan["subjects"]:
        mine = by_subject.get(s["key"], [])
        values = {r["seed_index"]: v for r in mine
                  if r["status"] == "ok" and (v := task.score(r["metrics"])) is not None}
        extra = [float(r["metrics"][f"{metric}_extra"]) for r in mine
                 if r["status"] == "ok" and isinstance((r["metrics"] or {}).get(f"{metric}_extra"), (int, float))]
        rows.append(Finding(s["key"], s["name"], s["role"], s.get("experiment"), s.get("arm"), s.get("explored"),
                            values, sum(r["status"] != "ok" for r in mine), mean_ci(list(values.values())),
                            mean_ci(extra)))
    baselines = [f for f in rows if f.role == "baseline" and f.values]
    ranked = sorted(baselines, key=lambda f: (-f.mean if higher else f.mean))  # type: ignore[operator]
    best = ranked[0] if ranked else None
    candidates = [f for f in rows if f.role == "candidate"]
    if best is not None:
        for f in candidates:
            f.diff = difference(f.values, best.values)
        tested = [f for f in candidates if f.diff is not None]
        for f, p in zip(tested, holm([f.diff.p for f in tested]), strict=True):  # type: ignore[union-attr]
            f.p_holm = p
            improves = f.diff.diff > 0 if higher else f.diff.diff < 0  # type: ignore[union-attr]
            f.verdict = (BETTER if improves else WORSE) if p < alpha and f.diff.diff != 0 else SAME  # type: ignore[union-attr]
    for f in candidates:
        f.verdict = f.verdict or NONE
    candidates.sort(key=lambda f: (f.mean is None, -(f.mean or 0) if higher else (f.mean or 0)))
    out = Findings(metric, higher, plan["preset"], alpha, bool(ledger.get_meta("verify_done")), best,
                   candidates + [f for f in rows if f.role == "baseline"], runs=len(runs),
                   reused=sum(bool(r.get("reused")) for r in runs))
    spend = ledger.spend()
    out.wall_s, out.gpu_s = float(spend.get("verify_wall_s", 0.0)), float(spend.get("verify_gpu_s", 0.0))
    out.claims = [claim(f, best, metric, plan["preset"]) for f in candidates if f.verdict == BETTER and best]
    return out


def claim(f: Finding, base: Finding, metric: str, preset: str) -> str:
    """One sentence a reviewer can check: by how much, over how many seeds, where, how sure."""
    d = f.diff
    assert d is not None and f.p_holm is not None
    half = (d.high - d.low) / 2
    return (f"{_label(f)} beats {base.name} by {abs(d.diff):.4g} ± {half:.2g} {metric} over {d.n_a} seeds at the "
            f"`{preset}` preset, p = {f.p_holm:.2g} after Holm ({d.test})")


def verdict_text(f: Finding, base: Finding | None) -> str:
    if f.verdict in (BETTER, WORSE) and base is not None:
        return f"{f.verdict} than {base.name}"
    if f.verdict == SAME and base is not None:
        return f"not distinguishable from {base.name}"
    return NONE if f.values else "no verdict (no finished run)"


@dataclass
class Arms:
    """The strategy arm against the random-control arm, over the campaign's evaluated experiments."""

    strategy: list[float]
    control: list[float]
    best_strategy: float | None
    best_control: float | None
    p: float | None  # Mann-Whitney U, two-sided

    def sentence(self, metric: str) -> str:
        def mean(v: list[float]) -> str:
            return f"{sum(v) / len(v):.4g}" if v else "n/a"

        p = f"p = {self.p:.2g} (Mann-Whitney U)" if self.p is not None else "too few to test"
        return (f"strategy arm: {len(self.strategy)} evaluated, mean {metric} {mean(self.strategy)}, best "
                f"{self.best_strategy if self.best_strategy is not None else 'n/a'}; random control: "
                f"{len(self.control)} evaluated, mean {mean(self.control)}, best "
                f"{self.best_control if self.best_control is not None else 'n/a'}; {p}")


def arms(ledger: Ledger, task: Any) -> Arms | None:
    """None when the campaign gave no share of its budget to the random-control arm."""
    rows = ledger.experiments(status=["done"], origin=["campaign"])
    split: dict[bool, list[float]] = {True: [], False: []}
    for e in rows:
        v = task.value_of(e)
        if v is not None:
            split[(e.proposal or {}).get("arm") == "control"].append(v)
    if not split[True] and not any((e.proposal or {}).get("arm") == "control" for e in ledger.experiments()):
        return None
    pick = max if task.higher() else min
    return Arms(split[False], split[True], pick(split[False]) if split[False] else None,
                pick(split[True]) if split[True] else None, rank_sum(split[False], split[True]))
