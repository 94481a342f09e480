"""Statistics for the analyst, the report and the chat, through scipy.stats: the mean
over seeds with its Student-t 95 % interval, Welch's unequal-variance t-test, the
difference of two seeded runs (paired by seed), Holm's correction and a rank-sum test.
Which values are a run's seeds is the task's to say (tasks/base.py: seed_values)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass
class Interval:
    n: int
    mean: float
    std: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {(self.high - self.low) / 2:.3g} (95% CI, n={self.n})"


def mean_ci(values: list[float], level: float = 0.95) -> Interval | None:
    """Mean and Student-t interval; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = float(sum(values) / n)
    if len(set(values)) == 1:  # all seeds equal: scipy's interval is undefined, the interval is the point
        return Interval(n, mean, 0.0, mean, mean)
    std = float(stats.tstd(values))
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Interval(n, mean, std, float(low), float(high))


@dataclass
class Welch:
    t: float
    df: float
    p: float
    mean_a: float
    mean_b: float


def welch(a: list[float], b: list[float]) -> Welch | None:
    """Welch's unequal-variance t-test (two-sided); None unless both sides have two values or more."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    if stats.tvar(a) == 0 and stats.tvar(b) == 0:  # no spread at all: scipy gives nan; the means decide
        return Welch(math.copysign(math.inf, ma - mb) if ma != mb else 0.0, len(a) + len(b) - 2.0,
                     0.0 if ma != mb else 1.0, ma, mb)
    res = stats.ttest_ind(a, b, equal_var=False)
    return Welch(float(res.statistic), float(res.df), float(res.pvalue), ma, mb)


@dataclass
class Difference:
    """a - b with its 95 % interval and a two-sided p; `test` names how it was computed."""

    n_a: int
    n_b: int
    diff: float
    low: float
    high: float
    p: float
    test: str  # "paired t" (by seed) | "Welch" | "exact" (no spread across seeds)


def difference(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Difference | None:
    """Compare two runs keyed by seed index: paired by seed where both have the same seeds (the
    verification trains every candidate and baseline under the same seeds, so seed effects cancel),
    Welch's test otherwise. None without two values on each side."""
    if len(a) < 2 or len(b) < 2:
        return None
    if set(a) == set(b):
        seeds = sorted(a)
        diffs = [a[s] - b[s] for s in seeds]
        ci = mean_ci(diffs, level)
        assert ci is not None
        if ci.std == 0:  # every seed moved by the same amount: a deterministic metric, the difference is exact
            return Difference(len(a), len(b), ci.mean, ci.mean, ci.mean, 1.0 if ci.mean == 0 else 0.0, "exact")
        res = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
        return Difference(len(a), len(b), ci.mean, ci.low, ci.high, float(res.pvalue), "paired t")
    va, vb = list(a.values()), list(b.values())
    if stats.tvar(va) == 0 and stats.tvar(vb) == 0:
        d = sum(va) / len(va) - sum(vb) / len(vb)
        return Difference(len(a), len(b), d, d, d, 1.0 if d == 0 else 0.0, "exact")
    res = stats.ttest_ind(va, vb, equal_var=False)
    low, high = res.confidence_interval(level)
    return Difference(len(a), len(b), float(sum(va) / len(va) - sum(vb) / len(vb)), float(low), float(high),
                      float(res.pvalue), "Welch")


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error over the candidates compared); scipy.stats
    has Benjamini-Hochberg (false_discovery_control) but not Holm, and it is four lines."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def rank_sum(a: list[float], b: list[float]) -> float | None:
    """Two-sided Mann-Whitney U p of a against b (the strategy arm against the random-control arm)."""
    if len(a) < 2 or len(b) < 2:
        return None
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
