"""The *Verified findings* section of `archlab run`, `resume` and `show`: the verification
table, the claims that hold, and the strategy arm against the random-control arm."""
from __future__ import annotations

from typing import Any


def _pm(interval: Any, single: float | None = None) -> str:
    if interval is not None:
        return f"{interval.mean:.4f} ± {(interval.high - interval.low) / 2:.3g} (n={interval.n})"
    return f"{single:.4f} (n=1)" if single is not None else ""


def findings_table(f: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from archlab.analysis.findings import verdict_text

    extra = any(r.extra is not None for r in f.rows)
    table = Table(title=f"Verified findings: preset {f.preset}, {f.metric} ({'higher' if f.higher else 'lower'} "
                        f"is better), 95% intervals" + ("" if f.done else " (stage not finished)"))
    columns = ["subject", "explored", "verified mean ± CI"] + (["second text"] if extra else []) + \
        ["diff to best baseline ± CI", "p (Holm)", "verdict"]
    for col in columns:
        table.add_column(col, overflow="fold")
    for r in f.rows:
        label = f"#{r.experiment} {r.name}" if r.role == "candidate" else f"{r.name} (baseline)"
        diff = f"{r.diff.diff:+.4f} [{r.diff.low:+.4f}, {r.diff.high:+.4f}] {r.diff.test}" if r.diff else ""
        cells = [escape(label), f"{r.explored:.4f}" if r.explored is not None else "",
                 _pm(r.interval, r.mean) + (f", {r.failed} failed" if r.failed else "")]
        if extra:
            cells.append(_pm(r.extra))
        verdict = verdict_text(r, f.baseline) if r.role == "candidate" else (
            "best baseline" if f.baseline is not None and r.key == f.baseline.key else "")
        cells += [diff, f"{r.p_holm:.3g}" if r.p_holm is not None else "", escape(verdict)]
        table.add_row(*cells)
    return table


def print_findings(out: Any, ledger: Any, task: Any) -> None:
    from archlab.analysis.findings import arms, verified_findings

    f = verified_findings(ledger, task)
    if f is not None:
        out.print(findings_table(f))
        base = f.baseline.name if f.baseline else "a baseline"
        n = sum(r.role == "candidate" for r in f.rows)
        for line in f.claims or [f"no candidate is verified better than {base} at alpha = {f.alpha} (Holm over {n})"]:
            out.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        cached = f", {f.reused} of them from the workspace cache" if f.reused else ""
        out.print(f"verification: {f.runs} runs{cached}, wall {f.wall_s:.1f} s, GPU-hours {f.gpu_s / 3600:.3f}",
                  markup=False, highlight=False)
    a = arms(ledger, task)
    if a is not None:
        out.print(a.sentence(task.metric), markup=False, highlight=False, soft_wrap=True)
