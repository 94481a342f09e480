"""Small statistics for the analyst and the report: per-seed values of a
metric, mean with a 95 % interval, and Welch's t-test. scipy is used when it
is installed; otherwise a short exact implementation (Student's t via the
regularised incomplete beta function) gives the same numbers."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LOWER_WORDS = ("loss", "bpb", "ppl", "perplexity", "error", "err", "wall", "mem", "params", "latency", "time",
               "_s", "cost")


def higher_is_better(metric: str, task: Any = None) -> bool:
    """The task says for its own metrics; otherwise guess from the name (losses, bits, time: lower)."""
    if task is not None and metric in (task.metric, task.report_metric):
        return bool(task.higher_is_better)
    name = metric.lower()
    if "per_s" in name or "acc" in name or "throughput" in name:
        return True
    return not any(w in name for w in LOWER_WORDS)


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
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


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
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb == 0:
        return Welch(math.copysign(math.inf, ma - mb) if ma != mb else 0.0, len(a) + len(b) - 2.0,
                     0.0 if ma != mb else 1.0, ma, mb)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return Welch(t, df, t_two_sided_p(t, df), ma, mb)


# -- Student's t distribution ------------------------------------------------------------

def t_two_sided_p(t: float, df: float) -> float:
    try:
        from scipy import stats

        return float(2 * stats.t.sf(abs(t), df))
    except ImportError:
        return _betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    try:
        from scipy import stats

        return float(stats.t.ppf(q, df))
    except ImportError:
        return _t_quantile(q, df)


def _t_quantile(q: float, df: float) -> float:
    """Inverse of the t CDF by bisection on the exact CDF (q > 0.5)."""
    target = 2 * (1 - q)  # two-sided tail mass
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if _betainc(df / 2, 0.5, df / (df + mid * mid)) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1 - x)
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
            c = 1.0 + num / c
            c = c if abs(c) > 1e-300 else 1e-300
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return front * h / a
