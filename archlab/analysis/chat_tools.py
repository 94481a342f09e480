"""The analyst's tools: what `archlab chat` can look up, over the ledgers (and
the vector memory, when there is one) of one campaign or a whole workspace.

Each tool is a plain function `(lab, args) -> dict` with a pydantic model for
its arguments; the model's JSON schema is what the LLM sees, and a call with
bad arguments comes back as {"error": ...} for the model to correct. The
retrieval mode (no model) calls the same functions."""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from archlab.analysis.campaign_reader import CampaignReader, open_campaigns
from archlab.analysis.model_tools import ModelsArg, model_yield
from archlab.analysis.stats import welch
from archlab.errors import ArchlabError
from archlab.tasks.base import seed_values

MAX_CODE = 6000
STOP = frozenset("the and for with what which why how does did was were are is this that from into have has "
                 "best experiment experiments show tell about than then over most".split())


class Lab:
    """The campaigns the analyst can see: one, or every campaign of a workspace."""

    def __init__(self, workspace: Path, campaign: str | None = None, memory: Any = None) -> None:
        self.workspace = Path(workspace)
        self.single = campaign is not None
        self.memory = memory  # a VectorMemory (memory/vector.py), or None: search the ledgers' text
        self.views = {v.id: v for v in open_campaigns(self.workspace, campaign)}
        if not self.views:
            raise ArchlabError(f"no campaigns under {self.workspace}/ to talk about; run one with `archlab run`")

    @property
    def home(self) -> Path:
        """Where the chat keeps its conversation, log and plots."""
        if self.single:
            return next(iter(self.views.values())).folder.root
        return self.workspace / "chat"

    def view(self, campaign: str | None) -> CampaignReader:
        if campaign is None:
            if len(self.views) == 1:
                return next(iter(self.views.values()))
            raise ArchlabError(f"several campaigns: pass `campaign`, one of {', '.join(self.views)}")
        if campaign in self.views:
            return self.views[campaign]
        close = difflib.get_close_matches(campaign, list(self.views), n=1, cutoff=0.3)
        match = [c for c in self.views if c.startswith(campaign) or campaign in c]
        if len(match) == 1:
            return self.views[match[0]]
        raise ArchlabError(f"no campaign {campaign!r}; known: {', '.join(self.views)}"
                           + (f" (did you mean {close[0]}?)" if close else ""))

    def scope(self, campaign: str | None) -> list[CampaignReader]:
        return [self.view(campaign)] if campaign is not None else list(self.views.values())

    def experiment(self, campaign: str | None, exp_id: int) -> tuple[CampaignReader, Any]:
        view = self.view(campaign)
        e = view.get(exp_id)
        if e is None:
            raise ArchlabError(f"campaign {view.id} has no experiment #{exp_id} (ids 1..{len(view.rows)})")
        return view, e

    def refresh(self) -> None:
        for v in self.views.values():
            v.refresh()


def brief(view: CampaignReader, e: Any) -> dict[str, Any]:
    """One experiment in a line: what a tool result lists."""
    row: dict[str, Any] = {"campaign": view.id, "id": e.id, "name": e.name, "origin": e.origin,
                           "status": e.status, "parent": e.parent}
    value = view.value(e)
    if value is not None and e.status == "done":
        row[view.metric] = value
        rm = view.task.report_metric
        if rm != view.metric and view.value(e, rm) is not None:
            row[rm] = view.value(e, rm)
    if e.status == "failed":
        row["failure_reason"] = (e.failure_reason or "")[:300]
    if e.duplicate_of:
        row["duplicate_of"] = e.duplicate_of
    return row


# -- the tools --------------------------------------------------------------------------------

class CampaignArg(BaseModel):
    campaign: str | None = Field(None, description="campaign id; may be omitted when there is only one")


class SearchArgs(CampaignArg):
    query: str = Field(description="words to look for in proposals, designs, analyses and insights")
    limit: int = Field(8, ge=1, le=30)


def search_memory(lab: Lab, a: SearchArgs) -> dict[str, Any]:
    """Find experiments, insights and notes about a topic (vector memory when present, else ledger text)."""
    hits, why = _vector_search(lab, a.query, a.campaign, a.limit)
    if hits is not None:
        return {"source": "vector memory", **hits}
    words = [w for w in re.findall(r"[a-z0-9_]+", a.query.lower()) if len(w) > 2 and w not in STOP]
    found: list[tuple[float, dict[str, Any]]] = []
    insights: list[tuple[int, dict[str, Any]]] = []
    for view in lab.scope(a.campaign):
        for e in view.rows:
            p = e.proposal or {}
            text = " ".join(str(x) for x in (e.name, p.get("motivation"), p.get("design"), e.analysis,
                                              e.failure_reason, (e.metrics or {}).get("arch")) if x).lower()
            score = sum(text.count(w) for w in words)
            if score:
                found.append((score, {**brief(view, e), "motivation": (p.get("motivation") or "")[:200]}))
                hit = sum(e.analysis.lower().count(w) for w in words) if e.analysis else 0
                if hit:
                    insights.append((hit, {"campaign": view.id, "experiment": e.id, "text": e.analysis[:400]}))
    found.sort(key=lambda t: -t[0])
    insights.sort(key=lambda t: -t[0])
    return {"source": f"ledger text search ({why})", "query_words": words,
            "experiments": [row for _, row in found[: a.limit]], "insights": [i for _, i in insights[: a.limit]]}


def _vector_search(lab: Lab, query: str, campaign: str | None,
                   limit: int) -> tuple[dict[str, Any] | None, str]:
    """Nearest experiments, insights and notes in the workspace's vector memory, indexed
    from the ledgers first (memory/vector.py: sync, then query). (None, why) to fall back."""
    if lab.memory is None:
        return None, "no vector memory configured"
    try:
        from archlab.memory.vector import where

        views = lab.scope(campaign)
        for view in views:
            lab.memory.sync(view.folder.root)
        vector = lab.memory.embed([query])[0]
        only = views[0].id if len(views) == 1 else None
        exps, lessons = (lab.memory.query(kind, vector, limit, where(campaign=only))
                         for kind in ("experiments", "insights"))
        notes = lab.memory.query("notes", vector, min(limit, 5))
    except Exception as exc:  # no chromadb, no embedder, an unreadable index: the ledgers still answer
        return None, f"vector memory unavailable: {type(exc).__name__}: {str(exc)[:200]}"
    rows = []
    for it in exps:
        view, exp_id = lab.views.get(it.meta.get("campaign", "")), it.meta.get("experiment")
        e = view.get(int(exp_id)) if view is not None and exp_id is not None else None
        row = brief(view, e) if e is not None else {"campaign": it.meta.get("campaign"), "id": exp_id,
                                                    "name": it.meta.get("name"), "status": it.meta.get("status")}
        rows.append({**row, "similarity": it.similarity, "proposal": it.text[:300]})
    return {"experiments": rows,
            "insights": [{"campaign": it.meta.get("campaign"), "experiment": it.meta.get("experiment"),
                          "text": it.text[:400], "similarity": it.similarity} for it in lessons],
            "notes": [{"title": it.meta.get("title"), "chunk": it.meta.get("chunk"), "text": it.text[:400],
                       "similarity": it.similarity} for it in notes]}, "vector memory"


class BoardArgs(CampaignArg):
    metric: str | None = Field(None, description="any recorded metric; default the task's searched metric")
    limit: int = Field(10, ge=1, le=100)
    origin: Literal["campaign", "baseline", "eval"] | None = Field(None, description="only this origin")
    higher_is_better: bool | None = Field(None, description="override the direction of an unknown metric")


def leaderboard(lab: Lab, a: BoardArgs) -> dict[str, Any]:
    """Rank evaluated experiments by any metric, with seeds and 95% intervals where there are several."""
    boards = []
    for view in lab.scope(a.campaign):
        metric = a.metric or view.metric
        if metric not in view.metrics_available():
            boards.append({"campaign": view.id, "error": f"no metric {metric!r}",
                           "metrics": view.metrics_available()})
            continue
        higher = view.direction(metric) if a.higher_is_better is None else a.higher_is_better
        rows = []
        for rank, e in enumerate(view.ranked(metric, higher, (a.origin,) if a.origin else None)[: a.limit], 1):
            row = {"rank": rank, **brief(view, e), metric: view.value(e, metric)}
            ci = view.interval(e, metric)
            row["seeds"] = ci.n if ci else 1
            if ci:
                row["ci95"] = [round(ci.low, 6), round(ci.high, 6)]
            rows.append(row)
        board = {"campaign": view.id, "metric": metric, "higher_is_better": higher, "rows": rows}
        overall = view.ranked(metric, higher)[:1]
        if a.origin and overall and (not rows or rows[0]["id"] != overall[0].id):
            # filtered to one origin: say what leads overall, so "do the candidates beat the baselines?" is answered too
            board["best_of_all_origins"] = {**brief(view, overall[0]), metric: view.value(overall[0], metric)}
        boards.append(board)
    return {"boards": boards}


class ExpArgs(CampaignArg):
    id: int = Field(description="experiment id")


class ShowArgs(ExpArgs):
    include_code: bool = True


def show_experiment(lab: Lab, a: ShowArgs) -> dict[str, Any]:
    """One experiment in full: proposal, code, metrics, analysis, failure, gate events."""
    view, e = lab.experiment(a.campaign, a.id)
    out = {**brief(view, e), "proposal": {k: v for k, v in (e.proposal or {}).items() if k != "code"},
           "metrics": e.metrics, "analysis": e.analysis, "train_s": e.train_s,
           "events": [ev["kind"] for ev in view.ledger.events(e.id)]}
    dups = view.ledger.events(e.id, "gate.duplicate")
    if dups:
        out["gate_refused"] = [d["data"].get("reason") for d in dups]
    if a.include_code:
        code = view.code(e) or ""
        out["code"] = code[:MAX_CODE] + ("\n# ... (truncated)" if len(code) > MAX_CODE else "")
    return out


class DiffArgs(CampaignArg):
    a: int = Field(description="first experiment id")
    b: int = Field(description="second experiment id")
    campaign_b: str | None = Field(None, description="campaign of b, when it is another one")


def diff_code(lab: Lab, a: DiffArgs) -> dict[str, Any]:
    """Unified diff of two candidates' code."""
    va, ea = lab.experiment(a.campaign, a.a)
    vb, eb = lab.experiment(a.campaign_b or a.campaign, a.b)
    ca, cb = va.code(ea), vb.code(eb)
    if ca is None or cb is None:
        return {"error": f"no code recorded for #{ea.id if ca is None else eb.id}"}
    diff = "".join(difflib.unified_diff(ca.splitlines(True), cb.splitlines(True),
                                        f"#{ea.id} {ea.name}", f"#{eb.id} {eb.name}"))
    return {"a": brief(va, ea), "b": brief(vb, eb), "identical": ca == cb,
            "diff": diff[:MAX_CODE] or "(no difference in the text)"}


def lineage(lab: Lab, a: ExpArgs) -> dict[str, Any]:
    """The parent chain of an experiment (nearest first) and its children."""
    view, e = lab.experiment(a.campaign, a.id)
    descendants, frontier = 0, [e.id]
    while frontier:
        kids = [c.id for p in frontier for c in view.children(p)]
        descendants += len(kids)
        frontier = kids
    return {"experiment": brief(view, e), "ancestors": [brief(view, p) for p in view.ancestors(e)],
            "children": [brief(view, c) for c in view.children(e.id)], "descendants": descendants}


class CompareArgs(DiffArgs):
    metric: str | None = Field(None, description="default: the task's searched metric")


def compare(lab: Lab, a: CompareArgs) -> dict[str, Any]:
    """Compare two candidates on a metric; Welch's t-test when both have several seeds."""
    va, ea = lab.experiment(a.campaign, a.a)
    vb, eb = lab.experiment(a.campaign_b or a.campaign, a.b)
    metric = a.metric or va.metric
    xa, xb = va.value(ea, metric), vb.value(eb, metric)
    if xa is None or xb is None:
        return {"error": f"{metric} is not recorded for #{ea.id if xa is None else eb.id}",
                "metrics": va.metrics_available()}
    higher = va.direction(metric)
    out: dict[str, Any] = {"metric": metric, "higher_is_better": higher, "a": brief(va, ea), "b": brief(vb, eb),
                           "value_a": xa, "value_b": xb, "difference_a_minus_b": xa - xb,
                           "better": f"#{ea.id}" if (xa > xb) == higher and xa != xb else
                                     (f"#{eb.id}" if xa != xb else "tie")}
    sa, sb = seed_values(ea.metrics, metric), seed_values(eb.metrics, metric)
    out.update(seeds_a=len(sa) or 1, seeds_b=len(sb) or 1)
    test = welch(sa, sb)
    if test is None:
        out["test"] = None
        out["note"] = ("no seeds, so no significance test: both are single runs" if not sa and not sb else
                       "no test: Welch's t-test needs at least two seeds on each side")
    else:
        out["test"] = {"name": "Welch t-test (two-sided)", "t": test.t, "df": test.df, "p": test.p,
                       "significant_at_0.05": test.p < 0.05}
    return out


class PlotArgs(CampaignArg):
    kind: Literal["best_so_far", "best_so_far_compute", "distribution", "lineage", "leaderboard",
                  "curves", "scatter"]
    metric: str | None = Field(None, description="y metric (default the task's metric)")
    x_metric: str | None = Field(None, description="scatter only: the x metric")
    ids: list[int] | None = Field(None, description="curves only: experiments to draw (default the top 3)")


def plot(lab: Lab, a: PlotArgs) -> dict[str, Any]:
    """Draw a figure and save it as a PNG; returns its path."""
    from archlab.analysis import plots

    view = lab.view(a.campaign)
    metric = a.metric or view.metric
    higher = view.direction(metric)
    path = lab.home / "plots" / f"{view.id}-{a.kind}-{metric}.png"
    ranked = view.ranked(metric)
    if a.kind in ("best_so_far", "best_so_far_compute"):
        xs, ys, label = view.progress("experiments" if a.kind == "best_so_far" else "compute")
        if not xs:
            return {"error": "no campaign experiment was evaluated yet"}
        base = view.best(origin=("baseline",))
        plots.best_so_far(path, xs, ys, metric=view.metric, higher=view.higher, xlabel=label,
                          baseline=view.value(base) if base else None)
    elif a.kind == "distribution":
        groups: dict[str, list[float]] = {}
        for e in ranked:
            groups.setdefault(e.origin, []).append(view.value(e, metric))
        plots.distribution(path, groups, metric=metric)
    elif a.kind == "lineage":
        nodes = [{"id": e.id, "parent": e.parent, "score": view.value(e) if e.status == "done" else None,
                  "origin": e.origin, "name": e.name} for e in view.rows if e.status in ("done", "failed")]
        plots.lineage(path, nodes, metric=view.metric, higher=view.higher)
    elif a.kind == "leaderboard":
        top = ranked[:15]
        cis = [view.interval(e, metric) for e in top]
        plots.bars(path, [f"#{e.id} {e.name}" for e in top], [view.value(e, metric) for e in top], metric=metric,
                   errors=[(c.high - c.low) / 2 if c else 0 for c in cis] if any(cis) else None)
    elif a.kind == "curves":
        chosen = [view.get(i) for i in a.ids] if a.ids else ranked[:3]
        series = {f"#{e.id} {e.name}": view.curves(e) for e in chosen if e is not None and view.curves(e)}
        if not series:
            return {"error": f"no training curves recorded (the {view.task.name} task's results carry none)"}
        plots.curves(path, series)
    else:
        xm = a.x_metric or ("params" if "params" in view.metrics_available() else view.task.report_metric)
        pts = [(view.value(e, xm), view.value(e, metric), f"#{e.id}") for e in ranked]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if not pts:
            return {"error": f"no experiment has both {xm} and {metric}", "metrics": view.metrics_available()}
        plots.scatter(path, [p[0] for p in pts], [p[1] for p in pts], xlabel=xm, ylabel=metric,
                      labels=[p[2] for p in pts])
    return {"path": str(path), "kind": a.kind, "metric": metric, "higher_is_better": higher}


def verified(lab: Lab, a: CampaignArg) -> dict[str, Any]:
    """The verified findings: top candidates and baselines retrained under several seeds, each candidate's
    difference to the best baseline with its 95% interval, Holm-corrected p and verdict; the only claims."""
    from archlab.analysis.findings import arms, verified_findings

    out = []
    for view in lab.scope(a.campaign):
        f, control = verified_findings(view.ledger, view.task), arms(view.ledger, view.task)
        out.append({"campaign": view.id, "verified": f.to_dict() if f else None,
                    "control": control.sentence(view.metric) if control else None,
                    **({} if f else {"note": "no verification stage: every score is one run under one seed"})})
    return {"campaigns": out}


# -- registry --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tool:
    name: str
    args: type[BaseModel]
    fn: Callable[[Lab, Any], dict[str, Any]]

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or self.name).strip()

    def schema(self) -> dict[str, Any]:
        params = self.args.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": params}}


TOOLS: dict[str, Tool] = {t.name: t for t in (  # the usual first look first: small models pick the first listed
    Tool("leaderboard", BoardArgs, leaderboard),
    Tool("search_memory", SearchArgs, search_memory),
    Tool("show_experiment", ShowArgs, show_experiment),
    Tool("diff_code", DiffArgs, diff_code),
    Tool("lineage", ExpArgs, lineage),
    Tool("compare", CompareArgs, compare),
    Tool("plot", PlotArgs, plot),
    Tool("verified_findings", CampaignArg, verified),
    Tool("model_yield", ModelsArg, model_yield),
)}


def tool_schemas() -> list[dict[str, Any]]:
    return [t.schema() for t in TOOLS.values()]


def call_tool(lab: Lab, name: str, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
    """Run one tool call; every failure becomes {"error": ...} for the model to read."""
    tool = TOOLS.get(name)
    if tool is None:
        return {"error": f"unknown tool {name!r}; tools: {', '.join(TOOLS)}"}
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else (arguments or {})
        if not isinstance(args, dict):
            return {"error": f"the arguments must be a JSON object of named values, not a {type(args).__name__}; "
                             f"e.g. {{\"limit\": 5}}"}
        return tool.fn(lab, tool.args.model_validate(args))
    except json.JSONDecodeError as exc:
        return {"error": f"the arguments are not JSON: {exc}"}
    except ValidationError as exc:
        return {"error": "bad arguments: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                        for e in exc.errors())}
    except ArchlabError as exc:
        return {"error": str(exc)}
