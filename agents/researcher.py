"""researcher: reads the campaign so far and proposes the next experiment."""
from __future__ import annotations

from typing import Any

from archlab.agents.context import LabContext
from archlab.agents.state import ExperimentState, Proposal
from archlab.agents.strategies import propose_offline
from archlab.errors import LLMError
from archlab.prompts import render

SHOWN = 5  # experiments of each kind shown to the researcher


def _row(e: Any) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "status": e.status, "score": e.score, "parent": e.parent,
            "reason": e.failure_reason, "motivation": (e.proposal or {}).get("motivation", "")[:300]}


def research_view(ctx: LabContext, experiment: int) -> list[int]:
    """Which past experiments the researcher sees: elites, recent ones, recent failures."""
    done = [e for e in ctx.ledger.experiments(status=["done"]) if e.score is not None and e.id < experiment]
    done.sort(key=lambda e: e.score, reverse=ctx.task.higher_is_better)
    failed = [e for e in ctx.ledger.experiments(status=["failed"]) if e.id < experiment][-SHOWN:]
    recent = [e for e in ctx.ledger.experiments(status=["done"]) if e.id < experiment][-SHOWN:]
    ids: list[int] = []
    for e in done[:SHOWN] + recent + failed:
        if e.id not in ids:
            ids.append(e.id)
    return ids


def research(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    exp, attempt = state["experiment"], state.get("proposals", 0)
    rejections = state.get("rejections", [])
    if attempt >= ctx.config.search.max_proposals:
        last = rejections[-1] if rejections else None
        why = f"; the last duplicated #{last['neighbour']}" if last else ""
        return {"outcome": "failed", "reason": f"researcher: {attempt} proposals, all refused by the gate{why}"}
    if ctx.strategy != "llm":
        proposal, view = propose_offline(ctx, exp, attempt)
        return {"proposal": proposal, "view": view, "proposals": attempt + 1, "error": None}

    view = ctx.remember(exp, "research", attempt, lambda: research_view(ctx, exp))
    rows = {e.id: e for e in ctx.ledger.experiments()}
    shown = [_row(rows[i]) for i in view if i in rows]
    messages = [{"role": "user", "content": render(
        "researcher.j2", task=ctx.task, metric=ctx.task.metric,
        direction="higher" if ctx.task.higher_is_better else "lower",
        elites=[r for r in shown if r["status"] == "done"], failures=[r for r in shown if r["status"] == "failed"],
        rejections=rejections, schema=Proposal.model_json_schema())}]
    ctx.guard_llm_budget()
    try:
        answer = ctx.llm.structured(messages, Proposal, step=f"research:{attempt}", experiment=exp)
    except LLMError as exc:
        return {"outcome": "failed", "reason": f"researcher: {exc}", "proposals": attempt + 1, "view": view}
    proposal = answer.model_dump()
    if proposal.get("parent_id") not in rows:
        proposal["parent_id"] = None  # a made-up parent id is dropped, not trusted
    return {"proposal": proposal, "view": view, "proposals": attempt + 1, "error": None}
