"""Statistics for the analyst, the report and the chat, through scipy.stats: the mean
over seeds with its Student-t 95 % interval, and Welch's unequal-variance t-test.
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
    mean, std = float(sum(values) / n), float(stats.tstd(values))
    if std == 0:  # all seeds equal: scipy's interval is undefined, the interval is the point
        return Interval(n, mean, 0.0, mean, mean)
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
