"""The figures of a campaign, as PNG files (matplotlib, Agg backend: no display).
Each function draws one figure from plain data, saves it and returns its path;
the report and the analyst's `plot` tool both use them. matplotlib is imported
inside, so importing this module costs nothing."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

ORIGIN_COLOURS = {"baseline": "tab:orange", "campaign": "tab:blue", "eval": "tab:green"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def best_so_far(path: Path, xs: Sequence[float], scores: Sequence[float], *, metric: str, higher: bool,
                xlabel: str, baseline: float | None = None, title: str = "") -> Path:
    """Every evaluated score as a dot, the running best as a step line, the best baseline dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    best: list[float] = []
    for s in scores:
        best.append(s if not best else (max if higher else min)(best[-1], s))
    ax.scatter(xs, scores, s=14, alpha=0.5, color="tab:blue", label="each experiment")
    ax.step(xs, best, where="post", color="tab:blue", lw=2, label="best so far")
    if baseline is not None:
        ax.axhline(baseline, color="tab:orange", ls="--", label=f"best baseline ({baseline:.4g})")
        low, high = min([*scores, baseline]), max([*scores, baseline])
        pad = 0.05 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + pad)  # keep the baseline line inside the frame
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(title or f"best {metric} so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def distribution(path: Path, groups: dict[str, Sequence[float]], *, metric: str, title: str = "") -> Path:
    """Histogram of the scores, one colour per origin (campaign, baseline, ...)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    values = [v for vs in groups.values() for v in vs]
    bins = min(30, max(5, len(values) // 2))
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    for origin, vs in groups.items():
        if not vs:
            continue
        if origin == "baseline":  # a handful: lines read better than bars
            for i, v in enumerate(vs):
                ax.axvline(v, color=ORIGIN_COLOURS["baseline"], ls="--", label="baseline" if i == 0 else None)
        else:
            ax.hist(vs, bins=bins, range=(lo, hi if hi > lo else lo + 1), alpha=0.7,
                    color=ORIGIN_COLOURS.get(origin, "tab:gray"), label=f"{origin} ({len(vs)})")
    ax.set_xlabel(metric)
    ax.set_ylabel("experiments")
    ax.set_title(title or f"distribution of {metric}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def lineage(path: Path, nodes: Sequence[dict[str, Any]], *, metric: str, higher: bool, title: str = "") -> Path:
    """The family tree: each experiment at (id, score), an edge from its parent;
    failed experiments as crosses under the lowest score."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    scored = [n["score"] for n in nodes if n.get("score") is not None]
    floor = (min(scored) if higher else max(scored)) if scored else 0.0
    span = (max(scored) - min(scored)) if len(scored) > 1 else 1.0
    failed_y = floor - 0.08 * span if higher else floor + 0.08 * span
    y = {n["id"]: (n["score"] if n.get("score") is not None else failed_y) for n in nodes}
    for n in nodes:
        if n.get("parent") in y:
            ax.plot([n["parent"], n["id"]], [y[n["parent"]], y[n["id"]]], color="gray", lw=0.8, alpha=0.6, zorder=1)
    seen: set[str] = set()
    for n in nodes:
        failed = n.get("score") is None
        label = "failed" if failed else n.get("origin", "campaign")
        ax.scatter([n["id"]], [y[n["id"]]], marker="x" if failed else "o", s=30, zorder=2,
                   color="tab:red" if failed else ORIGIN_COLOURS.get(label, "tab:gray"),
                   label=None if label in seen else label)
        seen.add(label)
    best = (max if higher else min)(scored) if scored else None
    for n in nodes:
        if best is not None and n.get("score") == best:
            ax.annotate(f"#{n['id']} {n.get('name') or ''}", (n["id"], best), textcoords="offset points",
                        xytext=(4, 6), fontsize=8)
    ax.set_xlabel("experiment id")
    ax.set_ylabel(metric)
    ax.set_title(title or "lineage: parent → child")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def curves(path: Path, series: dict[str, dict[str, Sequence[Sequence[float]]]], *, title: str = "") -> Path:
    """Training curves: one panel per curve kind (train loss, val bpb), one line per run."""
    plt = _plt()
    kinds = sorted({k for s in series.values() for k, pts in s.items() if pts})
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(6 * max(1, len(kinds)), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=False):
        for label, s in series.items():
            pts = s.get(kind) or []
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.5,
                        ls="--" if label.startswith("baseline") else "-", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel({"train": "train loss", "val": "validation bpb"}.get(kind, kind))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "training curves")
    return _save(fig, path)


def bars(path: Path, labels: Sequence[str], values: Sequence[float], *, metric: str,
         errors: Sequence[float] | None = None, title: str = "") -> Path:
    """Horizontal bars (a leaderboard), with error bars where there are intervals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ax.barh(range(len(labels)), values, xerr=errors, color="tab:blue", alpha=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    lo, hi = min(values, default=0), max(values, default=1)
    pad = 0.1 * (hi - lo or 1)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel(metric)
    ax.set_title(title or f"leaderboard by {metric}")
    return _save(fig, path)


def scatter(path: Path, xs: Sequence[float], ys: Sequence[float], *, xlabel: str, ylabel: str,
            labels: Sequence[str] | None = None, title: str = "") -> Path:
    """One metric against another."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(xs, ys, s=18, alpha=0.7)
    for x, y, label in zip(xs, ys, labels or [], strict=False):
        ax.annotate(label, (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} against {xlabel}")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def verified(path: Path, labels: Sequence[str], means: Sequence[float], lows: Sequence[float],
             highs: Sequence[float], roles: Sequence[str], *, metric: str, higher: bool, title: str = "") -> Path:
    """The verification: each subject's mean over seeds with its 95 % interval as an error bar;
    baselines in orange, candidates in blue."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(labels) + 1)))
    ys = list(range(len(labels)))[::-1]
    for y, mean, low, high, role in zip(ys, means, lows, highs, roles, strict=True):
        colour = ORIGIN_COLOURS["baseline" if role == "baseline" else "campaign"]
        ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", color=colour, capsize=4)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel(f"{metric} ({'higher' if higher else 'lower'} is better), mean and 95% interval over seeds")
    ax.set_title(title or "verified candidates (blue) and baselines (orange)")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)
