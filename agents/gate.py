"""gate: refuses to spend compute on a candidate already seen. Cheapest layer
first: whitespace-normalised text hash, then the AST-canonical hash (an exact
hit reuses the recorded result), then, for an LLM's proposals, embedding
novelty against the memory and the LLM judge in the grey band (a near
duplicate goes back to the researcher: nothing is reused); the behaviour
fingerprint follows in the check step."""
from __future__ import annotations

import threading
from typing import Any

from archlab.agents.context import LabContext
from archlab.agents.state import ExperimentState, Rejection
from archlab.memory import novelty
from archlab.memory.fingerprint import hashes

gate_lock = threading.Lock()  # parallel experiments must not both claim one hash


def _outcome(ctx: LabContext, e: Any) -> str:
    if e.status == "done":
        return f"scored {ctx.task.metric}={e.score:.4g}" if e.score is not None else "finished"
    if e.status == "failed":
        return f"failed: {e.failure_reason}"
    return "is still being evaluated"


def hit_record(ctx: LabContext, layer: str, e: Any) -> dict[str, Any]:
    """A gate hit as it stood when it happened (the neighbour may still be in flight)."""
    return {"layer": layer, "neighbour": e.id, "metrics": e.metrics,
            "reason": f"same {layer.replace('_', ' ')} as #{e.id} ({e.name}), which {_outcome(ctx, e)}"}


def duplicate(ctx: LabContext, state: ExperimentState, hit: dict[str, Any]) -> dict[str, Any]:
    """Record a reuse of the neighbour's result; a campaign proposal goes back to
    the researcher with the neighbour named, a given candidate ends as a duplicate."""
    exp = state["experiment"]
    rejection: Rejection = {"layer": hit["layer"], "neighbour": hit["neighbour"], "reason": hit["reason"]}
    ctx.ledger.event(exp, "gate.duplicate", {**rejection, "reused_metrics": hit["metrics"]},
                     key=f"{exp}:dup:{state.get('proposals', 0)}:{state.get('code_calls', 0)}")
    update: dict[str, Any] = {"rejections": [*state.get("rejections", []), rejection]}
    if state.get("origin") != "campaign":
        update.update(outcome="duplicate", duplicate_of=hit["neighbour"], metrics=hit["metrics"],
                      reason=hit["reason"])
    return update


def gate(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    exp, source = state["experiment"], state["code"] or ""
    try:
        h = hashes(source)
    except (SyntaxError, ValueError) as exc:
        reason = f"the code does not parse: {exc}"
        return {"error": reason} if ctx.can_repair(state) else {"outcome": "failed", "reason": reason}
    near: dict[str, Any] = {}
    calls = state.get("code_calls", 0)
    if novelty.applies(ctx, state):
        with gate_lock:
            hit = _hash_hit(ctx, exp, h, 2 * calls)
        if hit is not None:
            return duplicate(ctx, state, hit)
        rejection, near = novelty.screen(ctx, state)  # outside the lock: it may ask the judge
        if rejection is not None:
            return near_duplicate(ctx, state, rejection)
    with gate_lock:
        hit = _hash_hit(ctx, exp, h, 2 * calls + 1)  # again: a parallel twin may have claimed them meanwhile
        if hit is not None:
            return duplicate(ctx, state, hit)
        # Claim the hashes now so a parallel twin is caught while this one trains.
        ctx.ledger.update(exp, text_hash=h.text, ast_hash=h.ast)
    seen = {"nearest": near["nearest"]["ref"], "similarity": near["similarity"]} if near.get("nearest") else {}
    ctx.ledger.event(exp, "gate.pass", {"text_hash": h.text, "ast_hash": h.ast, **seen})
    return {"hashes": {"text": h.text, "ast": h.ast}}


def _hash_hit(ctx: LabContext, exp: int, h: Any, attempt: int) -> dict[str, Any] | None:
    """The first hash layer that matches another experiment, remembered (hit or not) so a
    replay takes the same decision whatever order the original's experiments finished in."""
    def look() -> dict[str, Any]:
        for layer, value in (("text_hash", h.text), ("ast_hash", h.ast)):
            found = ctx.ledger.find_hash(exp, **{layer: value})
            if found is not None:
                return {"hit": hit_record(ctx, layer, found)}
        return {"hit": None}

    return ctx.remember(exp, "hash", attempt, look)["hit"]


def near_duplicate(ctx: LabContext, state: ExperimentState, rejection: Any) -> dict[str, Any]:
    """A near duplicate by embedding or judge: refused, nothing reused; the researcher
    hears which experiment it was too close to, and why."""
    exp = state["experiment"]
    ctx.ledger.event(exp, "gate.near_duplicate", dict(rejection),
                     key=f"{exp}:near:{state.get('proposals', 0)}:{state.get('code_calls', 0)}")
    return {"rejections": [*state.get("rejections", []), rejection]}
