"""`archlab report CAMPAIGN`: a report a person would read, as Markdown and
HTML (runs/ID/report/report.md, report.html and the PNGs beside them).

The report is built once as a list of blocks (heading, paragraph, table,
image, list) and rendered twice, so the two files always say the same thing."""
from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.analysis.campaign_reader import CampaignReader
from archlab.campaign_folder import CampaignFolder

Block = tuple[str, Any]  # ("h1"|"h2"|"p"|"list"|"table"|"img"|"code", payload)
TOP_CURVES = 3


@dataclass
class Report:
    markdown: Path
    html: Path
    images: list[Path] = field(default_factory=list)


def build_report(campaign: CampaignReader | CampaignFolder, out: Path | None = None) -> Report:
    view = campaign if isinstance(campaign, CampaignReader) else CampaignReader.open(campaign)
    out = Path(out) if out else view.folder.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    blocks, images = _blocks(view, out)
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, title=f"archlab report: {view.id}"))
    return Report(md, page, images)


# -- content ---------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _blocks(view: CampaignReader, out: Path) -> tuple[list[Block], list[Path]]:
    """The report's sections in reading order; the plots each one draws are added to `images`."""
    images: list[Path] = []
    b: list[Block] = [("h1", f"Campaign {view.id}"), _intro(view)]
    b += [("h2", "Summary"), ("list", _summary(view))]
    b += [("h2", "Verified findings"), *_verified(view, out, images)]
    b += [("h2", "Leaderboard"), *_leaderboard(view)]
    b += [("h2", "Search progress"), *_progress(view, out, images)]
    b += [("h2", "Training curves"), *_curves(view, out, images)]
    b += [("h2", "Spend"), _spend(view)]
    models = _models(view)
    if models:
        b += [("h2", "Models"), *models]
    b += [("h2", "What the gate saved"), _gate(view)]
    b += [("h2", "Failures"), _failures(view)]
    b += [("h2", "What the analyst wrote about the best"), *_analyses(view)]
    return b, images


def _intro(view: CampaignReader) -> Block:
    """What was searched, how, and why it stopped."""
    m, higher = view.metric, view.higher
    cfg = view.config
    llm = cfg.get("llm") or {}
    models = list(llm.get("models") or []) or ([llm["model"]] if llm.get("model") else [])
    strategy = (cfg.get("search") or {}).get("strategy", "auto")
    if strategy == "auto":  # as Config.strategy decides it
        strategy = "llm" if models else "evolution"
    stops = view.ledger.events(kind="campaign.stop")
    named = (f" with model `{models[0]}`" if len(models) == 1 else
             " with an ensemble of " + ", ".join(f"`{x}`" for x in models)) if models and strategy == "llm" else ""
    return ("p", f"Task `{view.task.name}`, searched metric `{m}` ({'higher' if higher else 'lower'} is better), "
                 f"reported metric `{view.task.report_metric}`. Strategy: {strategy}{named}. "
                 + (f"Stopped: {stops[-1]['data'].get('reason')}." if stops and stops[-1].get("data") else
                    "No stop recorded (still running, or killed).")
                 + f" Written {time.strftime('%Y-%m-%d %H:%M')}.")


def _summary(view: CampaignReader) -> list[str]:
    """Counts, the best experiment, and whether the campaign beat the baselines."""
    m, counts = view.metric, view.ledger.counts()
    best, base = view.best(), view.best(origin=("baseline",))
    best_campaign = view.best(origin=("campaign",))
    lines = [f"{counts.get('done', 0)} experiments evaluated ({counts.get('campaign.done', 0)} proposed by the "
             f"campaign, {counts.get('baseline.done', 0)} baselines), {counts.get('failed', 0)} failed, "
             f"{counts.get('reused', 0)} duplicates refused before any compute."]
    if best is not None:
        lines.append(f"Best: **#{best.id} {best.name}** ({best.origin}), {m} = {_fmt(view.value(best))}"
                     + _reported(view, best) + ".")
    if best_campaign is not None and base is not None:  # exploration runs: one seed each, no claim
        delta = view.value(best_campaign) - view.value(base)
        ahead = "ahead of" if view.task.better(view.value(best_campaign), view.value(base)) else "not ahead of"
        lines.append(f"In exploration (one run each, untested), the best campaign candidate #{best_campaign.id} "
                     f"{best_campaign.name} is {ahead} the best baseline #{base.id} {base.name} ({delta:+.4g} {m}); "
                     "only the verified findings make claims.")
    return lines


def _verified(view: CampaignReader, out: Path, images: list[Path]) -> list[Block]:
    """The verification table, its plot with error bars, one sentence per claim that holds, and the
    strategy arm against the random-control arm."""
    from archlab.analysis import plots
    from archlab.analysis.findings import arms, verdict_text, verified_findings

    f, a = verified_findings(view.ledger, view.task), arms(view.ledger, view.task)
    b: list[Block] = []
    if f is None:
        b.append(("p", "This campaign has no verification stage, so it makes no claim: every score above is one "
                       "run under one seed (`archlab resume ID --verify-top 3 --seeds 3` adds one)."))
    else:
        def pm(ci: Any, single: float | None) -> str:
            return f"{ci.mean:.4g} ± {(ci.high - ci.low) / 2:.2g} (n={ci.n})" if ci else _fmt(single)

        rows = [[f"#{r.experiment} {r.name}" if r.role == "candidate" else f"{r.name} (baseline)", _fmt(r.explored),
                 pm(r.interval, r.mean) + (f", {r.failed} failed" if r.failed else ""),
                 *([pm(r.extra, None)] if any(x.extra for x in f.rows) else []),
                 f"{r.diff.diff:+.4g} [{r.diff.low:+.4g}, {r.diff.high:+.4g}] ({r.diff.test})" if r.diff else "",
                 f"{r.p_holm:.3g}" if r.p_holm is not None else "",
                 verdict_text(r, f.baseline) if r.role == "candidate" else
                 ("best baseline" if f.baseline and r.key == f.baseline.key else "")] for r in f.rows]
        headers = ["subject", "explored", f"verified {f.metric}", *(["second text"] if any(x.extra for x in f.rows)
                                                                   else []),
                   "difference to the best baseline [95% interval]", "p (Holm)", "verdict"]
        b.append(("p", f"The top candidates and every baseline, trained again at the `{f.preset}` preset under the "
                       f"same seeds; each candidate against the best baseline, paired by seed, Holm-corrected over "
                       f"the candidates at alpha = {f.alpha}. {f.runs} runs, {f.wall_s / 3600:.3f} wall-clock hours, "
                       f"{f.gpu_s / 3600:.3f} GPU-hours" + ("." if f.done else " (the stage has not finished).")))
        b.append(("table", (headers, rows)))
        shown = [r for r in f.rows if r.interval or r.values]
        if shown:
            images.append(plots.verified(
                out / "verified.png", [f"#{r.experiment} {r.name}" if r.role == "candidate" else r.name for r in shown],
                [r.mean for r in shown], [r.interval.low if r.interval else r.mean for r in shown],
                [r.interval.high if r.interval else r.mean for r in shown], [r.role for r in shown],
                metric=f.metric, higher=f.higher))
            b.append(("img", ("verified.png", f"Verified {f.metric}: mean and 95% interval over seeds.")))
        b.append(("list", f.claims or [f"No candidate is verified better than the best baseline "
                                       f"({f.baseline.name if f.baseline else 'none finished'})."]))
    if a is not None:
        b.append(("p", "Strategy against random control: " + a.sentence(view.metric) + "."))
    return b


def _progress(view: CampaignReader, out: Path, images: list[Path]) -> list[Block]:
    """Best so far against experiments and compute, the distribution of scores, the lineage."""
    from archlab.analysis import plots

    m, higher = view.metric, view.higher
    base = view.best(origin=("baseline",))
    b: list[Block] = []
    base_score = view.value(base) if base else None
    for axis, name in (("experiments", "best_so_far.png"), ("compute", "best_so_far_compute.png")):
        xs, ys, label = view.progress(axis)
        if xs:
            images.append(plots.best_so_far(out / name, xs, ys, metric=m, higher=higher, xlabel=label,
                                            baseline=base_score, title=f"best {m} against {label}"))
            b.append(("img", (name, f"Best {m} so far against {label}; dashed: the best baseline.")))
    if not view.progress()[0]:
        b.append(("p", "No campaign experiment was evaluated, so there is no search progress to plot."))

    groups: dict[str, list[float]] = {}
    for e in view.ranked():
        groups.setdefault(e.origin, []).append(view.value(e))
    if groups:
        images.append(plots.distribution(out / "distribution.png", groups, metric=m))
        b.append(("img", ("distribution.png", f"Distribution of {m} over evaluated experiments.")))
    nodes = [{"id": e.id, "parent": e.parent, "score": view.value(e) if e.status == "done" else None,
              "origin": e.origin, "name": e.name} for e in view.rows if e.status in ("done", "failed")]
    if nodes:
        images.append(plots.lineage(out / "lineage.png", nodes, metric=m, higher=higher))
        b.append(("img", ("lineage.png", "Lineage: each experiment at its score, linked to its parent; "
                                         "crosses are failures.")))
    return b


def _spend(view: CampaignReader) -> Block:
    spend, chat = view.ledger.spend(), view.chat_spend()
    return ("table", (["what", "amount"], [
        ["LLM calls (campaign)", _fmt(spend.get("llm_calls", 0))],
        ["tokens", f"{int(spend.get('tokens', 0)):,}"],
        ["USD", f"{spend.get('usd', 0.0):.4f}"],
        ["GPU-hours", f"{spend.get('gpu_s', 0.0) / 3600:.4f}"],
        ["train seconds", f"{spend.get('train_s', 0.0):.1f}"],
        ["wall-clock hours", f"{spend.get('wall_s', 0.0) / 3600:.3f}"],
        ["analyst chat (calls / tokens / USD)", f"{chat['calls']} / {int(chat['tokens']):,} / {chat['usd']:.4f}"],
    ]))


def _models(view: CampaignReader) -> list[Block]:
    """An ensemble's models side by side: what each was given, what it found, what it cost."""
    record = view.model_yields()
    if record is None:
        return []
    rate = float((view.config.get("llm") or {}).get("local_usd_per_hour", 1.0))
    rows = [[f"`{y.model}`", str(y.experiments) + (f" (+{y.picked - y.experiments} unfinished)"
                                                   if y.picked > y.experiments else ""),
             str(y.valid), str(y.improvements), _fmt(y.best), f"{y.usd:.4f}", f"{y.seconds:.1f}",
             f"{y.cost:.4f}" + (" (local)" if y.local else ""),
             f"{y.yield_:.3g}" if y.yield_ is not None else "n/a"] for y in record]
    return [("p", "Each campaign experiment went to one model, picked by a bandit (each model once, then "
                  "Thompson sampling on improvements per dollar). An experiment improved when its score beat "
                  f"the best {view.metric} known when its model was picked. A model litellm cannot price is "
                  f"billed by its call seconds at ${rate:g} per hour ([llm] local_usd_per_hour)."),
            ("table", (["model", "experiments", "valid", "improvements", f"best {view.metric}", "USD",
                        "model seconds", "cost (USD)", "improvements per USD"], rows))]


def _gate(view: CampaignReader) -> Block:
    gate = view.gate()
    layers = ", ".join(f"{n} by {k.replace('_', ' ')}" for k, n in gate["by_layer"].items()) or "none"
    return ("list", [
        f"Duplicates refused and their recorded result reused, nothing trained: **{gate['reused']}** ({layers}).",
        f"Near-duplicates sent back to the researcher by the novelty check: **{gate['near_duplicates']}**.",
        f"Training time not spent (at the mean of {gate['mean_train_s']:.2f} s per trained candidate): "
        f"about {gate['train_s_saved']:.1f} s.",
    ])


def _failures(view: CampaignReader) -> Block:
    failures = view.failures()
    if not failures:
        return ("p", "No experiment failed.")
    rows = [[reason, str(len(ids)), ", ".join(f"#{i}" for i in ids[:8]) + (" …" if len(ids) > 8 else "")]
            for reason, ids in failures.items()]
    return ("table", (["reason", "count", "experiments"], rows))


def _analyses(view: CampaignReader) -> list[Block]:
    m = view.metric
    return [("p", f"**#{e.id} {e.name}** ({m} = {_fmt(view.value(e))}): {e.analysis or '(no analysis)'}")
            for e in view.ranked()[:3]]


def _reported(view: CampaignReader, e: Any) -> str:
    rm = view.task.report_metric
    if rm == view.metric:
        return ""
    v = view.value(e, rm)
    return f", {rm} = {_fmt(v)}" if v is not None else ""


def _leaderboard(view: CampaignReader, limit: int = 15) -> list[Block]:
    m, rm = view.metric, view.task.report_metric
    ranked = view.ranked()
    seeded = any(view.interval(e) for e in ranked)
    headers = ["rank", "id", "origin", "name", "parent", m] + ([rm] if rm != m else []) \
        + (["seeds", "95% interval"] if seeded else [])
    rows = []
    for rank, e in enumerate(ranked[:limit], 1):
        row = [str(rank), f"#{e.id}", e.origin, e.name or "", f"#{e.parent}" if e.parent else "",
               _fmt(view.value(e))] + ([_fmt(view.value(e, rm))] if rm != m else [])
        if seeded:
            ci = view.interval(e)
            row += [str(ci.n) if ci else "1", f"[{ci.low:.4g}, {ci.high:.4g}]" if ci else ""]
        rows.append(row)
    out: list[Block] = [("table", (headers, rows))] if rows else [("p", "Nothing was evaluated yet.")]
    if rows and not seeded:
        out.append(("p", "Every candidate was run once (no seeds), so the table shows single runs without intervals."))
    if len(ranked) > limit:
        out.append(("p", f"{len(ranked) - limit} more evaluated experiments not shown (`archlab show {view.id}`)."))
    return out


def _curves(view: CampaignReader, out: Path, images: list[Path]) -> list[Block]:
    from archlab.analysis import plots

    top = [e for e in view.ranked(origin=("campaign",)) if view.curves(e)][:TOP_CURVES]
    baselines = [e for e in view.ranked(origin=("baseline",)) if view.curves(e)]
    if not top and not baselines:
        why = ("its evaluation is a lookup in a results table, nothing is trained"
               if view.task.name == "nb201" else "no experiment recorded curves in experiments/N/metrics.json")
        return [("p", f"No training curves to plot: the `{view.task.name}` task's results carry none ({why}).")]
    series = {f"#{e.id} {e.name}": view.curves(e) for e in top}
    series.update({f"baseline #{e.id} {e.name}": view.curves(e) for e in baselines})
    images.append(plots.curves(out / "curves.png", series, title="top candidates (solid) and baselines (dashed)"))
    return [("img", ("curves.png", f"Training curves of the top campaign candidates ({len(top)}, solid) "
                                   f"against the baselines ({len(baselines)}, dashed)."))]


# -- rendering ---------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    parts = []
    for kind, payload in blocks:
        if kind in ("h1", "h2"):
            parts.append(("# " if kind == "h1" else "## ") + payload)
        elif kind == "p":
            parts.append(payload)
        elif kind == "list":
            parts.append("\n".join(f"- {item}" for item in payload))
        elif kind == "table":
            headers, rows = payload
            lines = ["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            parts.append("\n".join(lines))
        elif kind == "img":
            name, caption = payload
            parts.append(f"![{caption}]({name})\n\n*{caption}*")
        elif kind == "code":
            parts.append(f"```\n{payload}\n```")
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escape, then the two bits of Markdown the report uses inline: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
       "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
       "text-align:left}th{background:#f3f3f3}img{max-width:100%}figure{margin:1rem 0}"
       "figcaption{color:#555;font-size:.9rem}code{background:#f3f3f3;padding:0 .2rem}")


def to_html(blocks: list[Block], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>"]
    for kind, payload in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{_inline(payload)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(payload)}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in payload) + "</ul>")
        elif kind == "table":
            headers, rows = payload
            head = "".join(f"<th>{_inline(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            name, caption = payload
            parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{_inline(caption)}</figcaption></figure>")
        elif kind == "code":
            parts.append(f"<pre><code>{html.escape(payload)}</code></pre>")
    return "\n".join(parts) + "\n</body></html>\n"
