"""researcher: reads the campaign so far and proposes the next experiment."""
from __future__ import annotations

from typing import Any

from archlab.agents import evidence, parents
from archlab.agents.context import LabContext
from archlab.agents.ideas import rank as rank_ideas
from archlab.agents.state import ExperimentState, ideas_schema, proposal_schema
from archlab.agents.strategies import propose_offline
from archlab.errors import LLMError
from archlab.llm.schemas import for_prompt
from archlab.memory.vector import proposal_text
from archlab.prompts import render

# What goes first when the prompt does not fit the model's window: code exemplars,
# then the neighbours, then notes, insights, failures, and the elites last.
TRIM_ORDER = ("exemplars", "near_idea", "near_parent", "notes", "insights", "failures", "elites")


def research(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    exp, attempt = state["experiment"], state.get("proposals", 0)
    rejections = state.get("rejections", [])
    if attempt >= ctx.config.search.max_proposals:
        last = rejections[-1] if rejections else None
        why = f"; the last duplicated #{last['neighbour']}" if last else ""
        return {"outcome": "failed", "reason": f"researcher: {attempt} proposals, all refused by the gate{why}"}
    if state.get("arm") == "control":  # the random-control arm: uniform samples, whatever the strategy
        proposal, view = propose_offline(ctx, exp, attempt, strategy="random")
        return {"proposal": {**proposal, "arm": "control"}, "view": view, "proposals": attempt + 1, "error": None}
    if ctx.strategy != "llm":
        proposal, view = propose_offline(ctx, exp, attempt)
        return {"proposal": proposal, "view": view, "proposals": attempt + 1, "error": None, "rethink": False}

    idea = proposal_text(state.get("proposal")) if attempt else None  # the refused proposal, reconsidered
    search = ctx.config.search
    selector = parents.pool(ctx, exp, attempt) if search.parents != "tournament" else None
    chosen = selector.draw(ctx.task, ctx.rng(exp, "parent", attempt)) if selector is not None else None
    view = ctx.remember(exp, "research", attempt, lambda: evidence.for_researcher(
        ctx, exp, idea, chosen["id"] if chosen else None))
    rows = {e.id: e for e in ctx.ledger.experiments()}
    shown = {k: [] for k in ("elites", "parent", "near_parent", "near_idea", "failures", "insights", "notes",
                             "exemplars")} | evidence.sections(view)
    k = search.proposals_per_step
    schema = proposal_schema(ctx.task) if k == 1 else ideas_schema(ctx.task, k)
    context = {"task": ctx.task, "metric": ctx.task.metric, "direction": "higher" if ctx.task.higher_is_better
               else "lower", **shown, "rejections": rejections, "schema": for_prompt(schema), "ideas": k,
               "parent_note": parents.describe(selector, chosen, ctx.task.metric) if chosen else None,
               "predictions": ctx.remember(exp, "predictions", attempt, lambda: evidence.predictions(ctx, exp))
               if k > 1 else []}

    llm = ctx.model_for(exp)  # an ensemble's pick for this experiment (the one model otherwise)

    def fit(budget: int) -> list[dict[str, Any]]:
        from archlab.llm.window import fit_sections

        messages, _ = fit_sections(lambda c: [{"role": "user", "content": render("researcher.j2", **c)}], context,
                                   TRIM_ORDER, budget, llm.model)
        return messages

    view = evidence.ids(view)
    ctx.guard_llm_budget()
    try:
        answer = llm.structured(None, schema, step=f"research:{attempt}", experiment=exp, fit=fit)
    except LLMError as exc:
        return {"outcome": "failed", "reason": f"researcher: {exc}", "proposals": attempt + 1, "view": view}
    proposal = answer.model_dump()
    refusal = None
    if k > 1:  # the gate and the surrogate rank the ideas; only the most promising goes on
        proposal, refusal = pick_idea(ctx, exp, attempt, proposal["ideas"])
    if refusal is not None:  # every idea would be refused: back to the researcher before any code
        return {"proposal": proposal, "view": view, "proposals": attempt + 1, "error": None, "rethink": True,
                "rejections": [*rejections, refusal]}
    parent = proposal.get("parent_id")
    if not (parent in rows and parent < exp):  # made up, or not yet allocated when this one was: dropped
        proposal["parent_id"] = None
    return {"proposal": proposal, "view": view, "proposals": attempt + 1, "error": None, "rethink": False}


def pick_idea(ctx: LabContext, exp: int, attempt: int,
              ideas: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The most promising of several ideas, with what was predicted and the others; and the
    refusal when even it would be refused (then nothing goes on)."""
    ranking = rank_ideas(ctx, exp, attempt, ideas)
    proposal, pick = ideas[ranking["chosen"]], ranking["ideas"][ranking["chosen"]]
    if pick["refused"]:
        refusal = {"layer": "ideas", "neighbour": pick["neighbour"], "campaign": pick["campaign"],
                   "reason": ("the idea repeats a past experiment" if len(ideas) == 1 else
                              f"all {len(ideas)} ideas repeat past experiments") +
                             f"; the most promising, {pick['name']!r}, is {pick['refused']}"}
        ctx.ledger.event(exp, "gate.ideas_refused", {**refusal, "ideas": ranking["ideas"]},
                         key=f"{exp}:ideas:{attempt}")
        return proposal, refusal
    if pick["mean"] is not None:
        proposal["predicted"] = {"mean": pick["mean"], "std": pick["std"]}
    proposal["alternatives"] = [r for i, r in enumerate(ranking["ideas"]) if i != ranking["chosen"]]
    return proposal, None
