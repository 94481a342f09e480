"""analyst: compares the result with its parent, the best so far and the best
baseline, writes the analysis, and records the experiment's outcome."""
from __future__ import annotations

import time
from typing import Any

from archlab.agents import evidence
from archlab.agents.context import LabContext
from archlab.agents.state import ExperimentState
from archlab.errors import LLMError
from archlab.prompts import render


def _delta(ctx: LabContext, label: str, score: float, other: dict[str, Any] | None) -> str | None:
    if other is None or other.get("score") is None:
        return None
    diff = score - other["score"]
    better = ctx.task.better(score, other["score"])
    word = "better than" if better else ("equal to" if diff == 0 else "worse than")
    return f"{diff:+.4g} {ctx.task.metric} vs {label} #{other['id']} ({other['name']}, {other['score']:.4g}): {word}"


def comparisons(ctx: LabContext, state: ExperimentState, score: float) -> list[str]:
    exp = state["experiment"]

    def brief(e: Any) -> dict[str, Any] | None:
        return {"id": e.id, "name": e.name, "score": e.score} if e is not None else None

    def shown() -> dict[str, Any]:
        parent = (state.get("proposal") or {}).get("parent_id")
        return {"parent": brief(ctx.ledger.get(parent) if parent is not None else None),
                "best so far": brief(ctx.best(exclude=exp)),
                "best baseline": brief(ctx.best(exclude=exp, origin=("baseline",)))}

    seen = ctx.remember(exp, "analyse", 0, shown)  # with scores: a replay rebuilds the same lines
    lines = [_delta(ctx, label, score, seen.get(label))
             for label in ("parent", "best so far", "best baseline")]  # fixed order: the record sorts keys
    return [line for line in lines if line]


def analyse(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    score = ctx.task.score(state.get("metrics"))
    if score is None:
        return {"outcome": "failed", "reason": f"training reported no `{ctx.task.metric}`"}
    facts = comparisons(ctx, state, score)
    offline = f"{ctx.task.metric} = {score:.4g}. " + ("; ".join(facts) if facts else "first evaluated experiment.")
    if ctx.strategy != "llm" or state.get("origin") != "campaign":  # baselines and evals: the facts suffice
        return {"analysis": offline, "outcome": "done"}
    proposal = state.get("proposal") or {}
    view = ctx.remember(state["experiment"], "neighbours", 0,
                        lambda: evidence.for_analyst(ctx, state["experiment"], proposal))
    shown = {"parent": [], "siblings": [], "neighbours": []} | evidence.sections(view)
    context = {"task": ctx.task, "proposal": proposal, "metrics": state.get("metrics"), "comparisons": facts,
               "check": state.get("check") or {}, **shown}

    llm = ctx.model_for(state["experiment"])  # an ensemble's pick for this experiment

    def fit(budget: int) -> list[dict[str, Any]]:
        from archlab.llm.window import fit_sections

        messages, _ = fit_sections(lambda c: [{"role": "user", "content": render("analyst.j2", **c)}], context,
                                   ("neighbours", "siblings"), budget, llm.model)
        return messages

    ctx.guard_llm_budget()
    try:
        text = llm.text(None, step="analyse:0", experiment=state["experiment"], fit=fit)
    except LLMError as exc:
        text = f"{offline}\n(analyst model failed: {exc})"
    return {"analysis": text.strip() or offline, "outcome": "done"}


def record(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    """The one place an experiment's final row is written (idempotent)."""
    exp, outcome = state["experiment"], state.get("outcome") or "failed"
    proposal = state.get("proposal") or {}
    metrics = state.get("metrics")
    given = state.get("origin") != "campaign"  # baselines and evals keep their code in the row, for replay
    ctx.ledger.update(
        exp, status=outcome, name=proposal.get("name"), parent=proposal.get("parent_id"),
        **({} if given else {"proposal": proposal}),
        metrics=metrics, score=ctx.task.score(metrics) if outcome != "failed" else None,
        failure_reason=state.get("reason") if outcome == "failed" else None,
        duplicate_of=state.get("duplicate_of"), analysis=state.get("analysis"), finished=time.time(),
    )
    ctx.ledger.event(exp, f"experiment.{outcome}", {"reason": state.get("reason"), "score": ctx.task.score(metrics)},
                     key=f"{exp}:finished")
    return {}
