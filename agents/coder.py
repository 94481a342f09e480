"""coder: turns a proposal (and the parent's code) into a candidate module,
or repairs the current one from the error a check or training produced."""
from __future__ import annotations

from typing import Any

from archlab.agents.context import LabContext
from archlab.agents.state import CodeAnswer, ExperimentState
from archlab.errors import LLMError
from archlab.prompts import render


def _parent_code(ctx: LabContext, parent: int | None) -> str | None:
    row = ctx.ledger.get(parent) if parent is not None else None
    if row is None or not row.code_path:
        return None
    try:
        return open(row.code_path).read()
    except OSError:
        return None


def code(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    exp, calls = state["experiment"], state.get("code_calls", 0)
    proposal = state.get("proposal") or {}
    repairing = bool(state.get("error"))
    update: dict[str, Any] = {"code_calls": calls + 1, "repairs": state.get("repairs", 0) + int(repairing)}

    if ctx.strategy != "llm":
        # Offline: the design space renders the genome; nothing to repair.
        source = ctx.task.space.render(proposal["genome"])
        errors = ctx.task.static_errors(source)
        if errors:
            return {**update, "outcome": "failed", "reason": "rendered code invalid: " + "; ".join(errors)}
        return {**update, "code": source, "error": None}

    template = "repair.j2" if repairing else "coder.j2"
    messages = [{"role": "user", "content": render(
        template, task=ctx.task, proposal=proposal, parent_code=_parent_code(ctx, proposal.get("parent_id")),
        code=state.get("code"), error=state.get("error"), schema=CodeAnswer.model_json_schema())}]
    ctx.guard_llm_budget()
    try:
        answer = ctx.llm.structured(messages, CodeAnswer, step=f"code:{calls}", experiment=exp,
                                    check=lambda a: ctx.task.static_errors(a.code))
    except LLMError as exc:
        return {**update, "outcome": "failed", "reason": f"coder: {exc}"}
    return {**update, "code": answer.code, "error": None}
