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

_gate_lock = threading.Lock()  # parallel experiments must not both claim one hash


def _outcome(ctx: LabContext, e: Any) -> str:
    if e.status == "done":
        return f"scored {ctx.task.metric}={e.score:.4g}" if e.score is not None else "finished"
    if e.status == "failed":
        return f"failed: {e.failure_reason}"
    return "is still being evaluated"


def duplicate(ctx: LabContext, state: ExperimentState, layer: str, neighbour: Any) -> dict[str, Any]:
    """Record a reuse of `neighbour`'s result; a campaign proposal goes back to
    the researcher with the neighbour named, a given candidate ends as a duplicate."""
    exp = state["experiment"]
    rejection: Rejection = {"layer": layer, "neighbour": neighbour.id,
                            "reason": f"same {layer.replace('_', ' ')} as #{neighbour.id} ({neighbour.name}), "
                                      f"which {_outcome(ctx, neighbour)}"}
    ctx.ledger.event(exp, "gate.duplicate", {**rejection, "reused_metrics": neighbour.metrics},
                     key=f"{exp}:dup:{state.get('proposals', 0)}:{state.get('code_calls', 0)}")
    update: dict[str, Any] = {"rejections": [*state.get("rejections", []), rejection]}
    if state.get("origin") != "campaign":
        update.update(outcome="duplicate", duplicate_of=neighbour.id, metrics=neighbour.metrics,
                      reason=rejection["reason"])
    return update


def gate(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    exp, source = state["experiment"], state["code"] or ""
    try:
        h = hashes(source)
    except (SyntaxError, ValueError) as exc:
        reason = f"the code does not parse: {exc}"
        return {"error": reason} if ctx.can_repair(state) else {"outcome": "failed", "reason": reason}
    near: dict[str, Any] = {}
    if novelty.applies(ctx, state):
        with _gate_lock:
            hit = _hash_hit(ctx, exp, h)
        if hit is not None:
            return duplicate(ctx, state, *hit)
        rejection, near = novelty.screen(ctx, state)  # outside the lock: it may ask the judge
        if rejection is not None:
            return near_duplicate(ctx, state, rejection)
    with _gate_lock:
        hit = _hash_hit(ctx, exp, h)  # (again after the novelty layers: a parallel twin may have claimed them)
        if hit is not None:
            return duplicate(ctx, state, *hit)
        # Claim the hashes now so a parallel twin is caught while this one trains.
        ctx.ledger.update(exp, text_hash=h.text, ast_hash=h.ast)
    seen = {"nearest": near["nearest"]["ref"], "similarity": near["similarity"]} if near.get("nearest") else {}
    ctx.ledger.event(exp, "gate.pass", {"text_hash": h.text, "ast_hash": h.ast, **seen})
    return {"hashes": {"text": h.text, "ast": h.ast}}


def _hash_hit(ctx: LabContext, exp: int, h: Any) -> tuple[str, Any] | None:
    for layer, value in (("text_hash", h.text), ("ast_hash", h.ast)):
        hit = ctx.ledger.find_hash(exp, **{layer: value})
        if hit is not None:
            return layer, hit
    return None


def near_duplicate(ctx: LabContext, state: ExperimentState, rejection: Any) -> dict[str, Any]:
    """A near duplicate by embedding or judge: refused, nothing reused; the researcher
    hears which experiment it was too close to, and why."""
    exp = state["experiment"]
    ctx.ledger.event(exp, "gate.near_duplicate", dict(rejection),
                     key=f"{exp}:near:{state.get('proposals', 0)}:{state.get('code_calls', 0)}")
    return {"rejections": [*state.get("rejections", []), rejection]}
