"""What each page shows, as plain data from a CampaignReader: the campaign list, a campaign,
an experiment, the lineage tree, the live state. Templates render it; the JSON API returns
it. Nothing here writes to a campaign, and no absolute path of the host leaves it."""
from __future__ import annotations

import difflib
import json
import os
import time
from typing import Any

from markupsafe import Markup, escape

from archlab.analysis.campaign_reader import CampaignReader, llm_spend
from archlab.memory.ledger import IN_FLIGHT, Experiment

BOARD_ROWS = 50


def status(view: CampaignReader) -> dict[str, Any]:
    """running (a live process holds the lock), paused (a model was unreachable or refused),
    done (its last stop was not a pause) or stopped (killed: resume it)."""
    if view.folder.running_pid() is not None:
        return {"state": "running", "why": ""}
    stops = view.ledger.events(kind="campaign.stop")
    last = stops[-1]["data"] if stops else None
    if last is None:
        return {"state": "stopped", "why": "no stop recorded (killed?): archlab resume continues it"}
    if last.get("paused"):
        pauses = view.ledger.events(kind="campaign.paused")
        data = (pauses[-1]["data"] or {}) if pauses else {}
        return {"state": "paused", "why": f"{data.get('kind') or last['paused']}: {data.get('reason', '')}"[:300]}
    return {"state": "done", "why": str(last.get("reason") or "")}


def budget_left(view: CampaignReader, counts: dict[str, int], spend: dict[str, float]) -> dict[str, Any]:
    budget = view.config.get("budget") or {}
    used = {"experiments": counts.get("campaign.done", 0) + counts.get("campaign.failed", 0),
            "tokens": spend.get("tokens", 0), "usd": spend.get("usd", 0.0),
            "hours": spend.get("wall_s", 0.0) / 3600, "gpu_hours": spend.get("gpu_s", 0.0) / 3600}
    return {k: {"limit": budget[k], "used": used[k], "left": max(0, budget[k] - used[k])}
            for k in used if budget.get(k)}


def summary(view: CampaignReader) -> dict[str, Any]:
    best = view.best()
    counts, spend = view.ledger.counts(), view.ledger.spend()
    return {"id": view.id, "task": view.task.name, "metric": view.metric, "higher_is_better": view.higher,
            "status": status(view), "counts": counts, "spend": spend,
            "in_flight": counts.get("pending", 0) + counts.get("running", 0),
            "best": brief(view, best) if best else None, "budget": budget_left(view, counts, spend)}


def brief(view: CampaignReader, e: Experiment) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "origin": e.origin, "status": e.status, "parent": e.parent,
            "arm": (e.proposal or {}).get("arm"), "value": view.value(e),
            "report": view.value(e, view.task.report_metric) if view.task.report_metric else None,
            "duplicate_of": e.duplicate_of, "train_s": e.train_s}


def experiments(view: CampaignReader) -> list[dict[str, Any]]:
    return [brief(view, e) for e in view.rows]


def leaderboard(view: CampaignReader, limit: int = BOARD_ROWS) -> list[dict[str, Any]]:
    from archlab.analysis.leaderboard import verified_by_experiment

    verified = verified_by_experiment(view.ledger, view.task)
    out = []
    for rank, e in enumerate(view.ranked()[:limit], 1):
        ci = view.interval(e)
        out.append({**brief(view, e), "rank": rank, "verified": verified.get(e.id),
                    "interval": f"± {(ci.high - ci.low) / 2:.3g} (n={ci.n})" if ci else None})
    return out


def findings(view: CampaignReader) -> dict[str, Any] | None:
    from archlab.analysis.findings import verdict_text, verified_findings

    f = verified_findings(view.ledger, view.task)
    if f is None:
        return None
    rows = []
    for r in f.rows:
        ci = r.interval
        rows.append({"label": f"#{r.experiment} {r.name}" if r.experiment is not None and r.role == "candidate"
                     else f"{r.name} (baseline)", "experiment": r.experiment, "role": r.role,
                     "explored": r.explored, "mean": r.mean, "n": len(r.values),
                     "half": (ci.high - ci.low) / 2 if ci else None, "failed": r.failed,
                     "diff": r.diff.diff if r.diff else None,
                     "diff_low": r.diff.low if r.diff else None, "diff_high": r.diff.high if r.diff else None,
                     "p": r.p_holm,
                     "verdict": verdict_text(r, f.baseline) if r.role == "candidate" else
                     ("best baseline" if f.baseline is not None and r.key == f.baseline.key else "")})
    return {"preset": f.preset, "alpha": f.alpha, "done": f.done, "rows": rows, "claims": f.claims,
            "runs": f.runs, "reused": f.reused, "wall_s": f.wall_s, "gpu_hours": f.gpu_s / 3600,
            "baseline": f.baseline.name if f.baseline else None}


def tree(view: CampaignReader) -> list[dict[str, Any]]:
    """The lineage as a forest: roots (no parent in this campaign) with their children, nested.
    Built without recursion: an evolution run's chain can be as deep as the campaign is long."""
    rows = [e for e in view.rows if e.status != "duplicate"]
    ids = {e.id for e in rows}
    nodes = {e.id: {**brief(view, e), "children": []} for e in rows}
    roots = []
    for e in rows:
        parent = e.parent if e.parent in ids and e.parent != e.id else None
        (nodes[parent]["children"] if parent is not None else roots).append(nodes[e.id])
    return roots


def tree_html(campaign_id: str, forest: list[dict[str, Any]]) -> Markup:
    """The forest as nested lists, each node with children a <details> that folds; written by
    a loop, not a recursive template (a deep chain would exhaust the template's stack)."""
    out: list[str] = []
    stack: list[Any] = [iter(forest)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            if stack:
                out.append("</ul></details></li>")
            continue
        value = f" · {node['value']:.4g}" if node["value"] is not None else ""
        arm = f" · {node['arm']}" if node["arm"] else ""
        link = (f'<a href="/c/{escape(campaign_id)}/e/{node["id"]}" class="node {escape(node["status"])} '
                f'{escape(node["origin"])}">#{node["id"]} {escape(node["name"] or "")}</a> '
                f'<span class="muted">{escape(node["status"])}{value}{escape(arm)}</span>')
        if node["children"]:
            out.append(f'<li data-id="{node["id"]}"><details open><summary>{link}</summary><ul>')
            stack.append(iter(node["children"]))
        else:
            out.append(f'<li data-id="{node["id"]}">{link}</li>')
    return Markup("".join(out))


def campaign_page(view: CampaignReader) -> dict[str, Any]:
    gate = view.gate()
    forest = tree(view)
    return {"summary": summary(view), "board": leaderboard(view), "findings": findings(view),
            "tree": forest, "tree_html": tree_html(view.id, forest), "gate": gate, "failures": view.failures(),
            "chat": view.chat_spend(), "report_metric": view.task.report_metric,
            "arms": _arms(view), "models": [y.to_dict() for y in view.model_yields() or []]}


def _arms(view: CampaignReader) -> str | None:
    from archlab.analysis.findings import arms

    a = arms(view.ledger, view.task)
    return a.sentence(view.metric) if a is not None else None


# -- one experiment ----------------------------------------------------------------------------

def experiment_page(view: CampaignReader, e: Experiment) -> dict[str, Any]:
    code = view.code(e) or ""
    parent = view.get(e.parent) if e.parent is not None and e.parent != e.id else None
    parent_code = view.code(parent) if parent else None
    diff = ("".join(difflib.unified_diff(parent_code.splitlines(True), code.splitlines(True),
                                         f"#{parent.id} {parent.name}", f"#{e.id} {e.name}"))
            if parent is not None and parent_code is not None and code else None)
    events = view.ledger.events(e.id)
    gate = [_gate_event(view, ev) for ev in events if ev["kind"].startswith(("gate.", "seen.fingerprint",
                                                                              "check."))]
    proposal = {k: v for k, v in (e.proposal or {}).items() if k != "code"}
    return {"e": brief(view, e), "proposal": proposal, "code": code, "diff": diff,
            "parent": brief(view, parent) if parent else None,
            "children": [brief(view, c) for c in view.children(e.id)],
            "ancestors": [brief(view, a) for a in view.ancestors(e)],
            "metrics": {k: v for k, v in (e.metrics or {}).items() if not isinstance(v, (dict, list))},
            "failure": e.failure_reason, "analysis": e.analysis, "gate": gate,
            "events": [{"t": time.strftime("%H:%M:%S", time.localtime(ev["ts"])), "kind": ev["kind"],
                        "data": json.dumps(ev["data"], default=str)[:400] if ev["data"] else ""} for ev in events],
            "llm": llm_calls(view, e.id), "has_curves": bool(view.curves(e)), "live": live_progress(view, e)}


def _gate_event(view: CampaignReader, ev: dict[str, Any]) -> dict[str, Any]:
    """A decision of the gate, the neighbour it names linked where it is an experiment."""
    data = ev["data"] or {}
    near = data.get("neighbour") if isinstance(data, dict) else data
    if isinstance(near, list):
        near = near[0] if near else None
    if isinstance(near, dict):
        near = near.get("neighbour", near.get("experiment", near.get("id")))
    if not isinstance(data, dict):
        data = {"close": data}
    name = None
    if isinstance(near, int) and view.get(near) is not None:
        name = view.get(near).name  # type: ignore[union-attr]
    keep = {k: v for k, v in data.items() if not isinstance(v, (dict, list)) or k in ("layer",)}
    return {"kind": ev["kind"], "neighbour": near if isinstance(near, int) else None, "neighbour_name": name,
            "reason": data.get("reason"), "detail": json.dumps(keep, default=str)[:500]}


def llm_calls(view: CampaignReader, exp_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The model calls made for this experiment (llm.jsonl): prompt and answer, for reading."""
    path = view.folder.llm_log
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("experiment") != exp_id:
            continue
        messages = (rec.get("request") or {}).get("messages") or []
        out.append({"step": rec.get("step"), "attempt": rec.get("attempt"), "valid": rec.get("valid"),
                    "tokens": int(rec.get("prompt_tokens") or 0) + int(rec.get("completion_tokens") or 0),
                    "error": rec.get("error"),
                    "prompt": "\n\n".join(f"[{m.get('role')}]\n{m.get('content') or ''}" for m in messages),
                    "answer": rec.get("response") if isinstance(rec.get("response"), str)
                    else json.dumps(rec.get("response"), indent=1, default=str)})
        if len(out) >= limit:
            break
    return out


def live_progress(view: CampaignReader, e: Experiment) -> dict[str, Any] | None:
    """The last progress line of an experiment in flight (its job's log, written as it runs)."""
    if e.status not in IN_FLIGHT:
        return None
    folder = view.folder.root / "experiments" / str(e.id)
    logs = sorted(folder.glob("*/log"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not logs:
        return {"step": e.status}
    with open(logs[-1], "rb") as fh:
        fh.seek(max(0, os.path.getsize(logs[-1]) - 4096))
        tail = fh.read().decode(errors="replace").splitlines()
    for line in reversed(tail):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") in ("progress", "metric"):
            return {"step": logs[-1].parent.name, **{k: v for k, v in event.items() if k != "event"}}
    return {"step": logs[-1].parent.name}


def live_ledger(view: CampaignReader) -> dict[str, Any]:
    """The ledger's part of the live state (memoised by the campaign's version)."""
    counts = view.ledger.counts()
    best = view.best()
    return {"seq": view.ledger.last_event_seq(), "status": status(view), "done": counts.get("done", 0),
            "failed": counts.get("failed", 0), "reused": counts.get("reused", 0),
            "finished": counts.get("campaign.done", 0) + counts.get("campaign.failed", 0),
            "experiments": len(view.rows), "best": brief(view, best) if best else None,
            "spend": view.ledger.spend(), "flying": [e.id for e in view.rows if e.status in IN_FLIGHT]}


def live(view: CampaignReader, ledger_part: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the page's live stream sends: counts, best, the last event, and the runs in flight
    with their progress (read from their logs, which move without the ledger)."""
    state = dict(ledger_part if ledger_part is not None else live_ledger(view))
    flying = [e for i in state.pop("flying")[:8] if (e := view.get(i)) is not None]
    state["in_flight"] = [{"id": e.id, "name": e.name, "progress": live_progress(view, e)} for e in flying]
    return state


def chat_budget(view: CampaignReader) -> str | None:
    """Why the chat may not spend now (the campaign's LLM budget is used up), or None. What
    was spent: the ledger's campaign spend plus the chat's calls, or every call of llm.jsonl
    where that says more."""
    budget = view.config.get("budget") or {}
    spend = view.ledger.spend()
    chat, logged = llm_spend(view.folder.llm_log, prefix="chat:"), llm_spend(view.folder.llm_log)
    tokens = max(spend.get("tokens", 0) + chat["tokens"], logged["tokens"])
    usd = max(spend.get("usd", 0.0) + chat["usd"], logged["usd"])
    if budget.get("tokens") and tokens >= budget["tokens"]:
        return f"the campaign's LLM budget of {budget['tokens']} tokens is spent ({int(tokens)} used)"
    if budget.get("usd") and usd >= budget["usd"]:
        return f"the campaign's LLM budget of ${budget['usd']} is spent (${usd:.4f} used)"
    return None
