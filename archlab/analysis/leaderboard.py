"""Read-only views of a campaign for people (rich tables) and scripts (JSON)."""
from __future__ import annotations

from typing import Any

from archlab.memory.ledger import Ledger


def leaderboard(ledger: Ledger, task: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """Evaluated experiments best first, by the task's ranking (the one every view uses)."""
    metric, report_metric = task.metric, task.report_metric
    rows = task.ranked(ledger.experiments(status=["done"]), tiebreak=lambda e: e.id)
    verified = verified_by_experiment(ledger, task)
    out = []
    for rank, e in enumerate(rows[:limit] if limit else rows, 1):
        row = {"rank": rank, "id": e.id, "origin": e.origin, "name": e.name, "parent": e.parent,
               metric: task.value_of(e), **({report_metric: (e.metrics or {}).get(report_metric)}
                                            if report_metric and report_metric != metric else {})}
        if e.id in verified:
            row["verified"] = verified[e.id]
        out.append(row)
    return out


def verified_by_experiment(ledger: Ledger, task: Any) -> dict[int, str]:
    """Experiment id -> its verified mean ± 95 % interval (n), for the promoted and the baselines."""
    from archlab.analysis.findings import verified_findings

    findings = verified_findings(ledger, task)
    out: dict[int, str] = {}
    for f in findings.rows if findings else []:
        if f.experiment is not None and f.values:
            ci = f.interval
            out[f.experiment] = (f"{ci.mean:.4f} ± {(ci.high - ci.low) / 2:.3g} (n={ci.n})" if ci
                                 else f"{f.mean:.4f} (n=1)")
    return out


def campaign_json(campaign_id: str, ledger: Ledger, config: dict[str, Any], task: Any) -> dict[str, Any]:
    board = leaderboard(ledger, task)
    best = board[0] if board else None
    metric, report_metric = task.metric, task.report_metric
    return {
        "campaign": campaign_id,
        "task": config.get("task", {}).get("name"),
        "metric": metric, "higher_is_better": task.higher(), "report_metric": report_metric,
        "counts": ledger.counts(),
        "spend": ledger.spend(),
        "best": best,
        "reported": {report_metric: best.get(report_metric, best.get(metric))} if best else None,
        "experiments": [_row(e) for e in ledger.experiments()],
    }


def _row(e: Any) -> dict[str, Any]:
    d = e.to_dict()
    proposal = d.pop("proposal") or {}
    d["motivation"] = proposal.get("motivation")
    d["genome"] = proposal.get("genome")
    return d


def render_leaderboard(board: list[dict[str, Any]], metric: str, report_metric: str, title: str) -> Any:
    from rich.table import Table

    columns = ("rank", "id", "origin", "name", metric) + ((report_metric,) if report_metric != metric else ()) \
        + (("verified",) if any("verified" in row for row in board) else ())
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in ("rank", "id") else "left", overflow="fold")
    for row in board:
        table.add_row(*[_fmt(row.get(col)) for col in columns])
    return table


def _fmt(value: Any) -> str:
    from rich.markup import escape  # names like "gated-delta[data]" are text, not markup

    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else escape(str(value))
