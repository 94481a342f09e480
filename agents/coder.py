"""coder: turns a proposal (and the parent's code) into a candidate module,
or repairs the current one from the error a check or training produced.
The answer travels as code, whatever the structured-output mode: a ```python block or
SEARCH/REPLACE edits against the parent (or the failing module); a JSON "code" string
is still read. Code is never forced into a JSON string by a grammar: measured with
Qwen2.5-Coder-0.5B under llama.cpp's schema constraint, the first unescaped quote in
the code closed the string and cut the module off."""
from __future__ import annotations

from typing import Any

from archlab.agents.context import LabContext
from archlab.agents.state import CodeAnswer, ExperimentState
from archlab.errors import LLMError
from archlab.llm.schemas import for_prompt
from archlab.prompts import render

DIFF_FROM_LINES = 150  # [llm] edit = "auto": ask for edits against a base longer than this
ERROR_CHARS = 3000     # the end of a traceback says most


def _parent_code(ctx: LabContext, parent: int | None) -> str | None:
    row = ctx.ledger.get(parent) if parent is not None else None
    if row is None or not row.code_path:
        return None
    try:
        return open(row.code_path).read()
    except OSError:
        return None


def _same_code(a: str, b: str) -> bool:
    from archlab.code_hashes import hashes

    try:
        return hashes(a).ast == hashes(b).ast
    except (SyntaxError, ValueError):
        return a.strip() == b.strip()


def wants_diff(edit: str, base: str | None) -> bool:
    if base is None or edit == "full":
        return False
    return edit == "diff" or base.count("\n") >= DIFF_FROM_LINES


def code(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    exp, calls = state["experiment"], state.get("code_calls", 0)
    proposal = state.get("proposal") or {}
    repairing = bool(state.get("error"))
    update: dict[str, Any] = {"code_calls": calls + 1, "repairs": state.get("repairs", 0) + int(repairing)}

    rendered = ctx.strategy != "llm" or state.get("arm") == "control" or (
        ctx.config.llm.code_from_design and proposal.get("genome") and not repairing)
    if rendered:  # offline, the random-control arm, or a designed genome: the design space renders it
        source = ctx.task.space.render(proposal["genome"])
        errors = ctx.task.static_errors(source)
        if errors:
            return {**update, "outcome": "failed", "reason": "rendered code invalid: " + "; ".join(errors)}
        return {**update, "code": source, "error": None}

    from archlab.llm.window import fit_sections

    llm = ctx.model_for(exp)  # an ensemble's pick for this experiment
    parent_code = _parent_code(ctx, proposal.get("parent_id"))
    best = ctx.best(exclude=exp) if parent_code is None else None
    reference = _parent_code(ctx, best.id) if best is not None else None  # a working candidate to learn the form
    base = state.get("code") if repairing else parent_code
    error = (state.get("error") or "")[-ERROR_CHARS:]
    context = {"task": ctx.task, "proposal": proposal, "parent_code": parent_code, "reference_code": reference,
               "code": state.get("code"),
               "error": error, "schema": for_prompt(CodeAnswer),
               "format": "code", "diff": wants_diff(llm.edit, base)}
    template = "repair.j2" if repairing else "coder.j2"

    def fit(budget: int) -> list[dict[str, Any]]:
        messages, _ = fit_sections(lambda c: [{"role": "user", "content": render(template, **c)}], context, (),
                                   budget, llm.model, code_keys=("reference_code", "code", "parent_code"))
        return messages

    def check(source: str) -> list[str]:
        errors = ctx.task.static_errors(source)
        if not errors and repairing and _same_code(source, state.get("code") or ""):
            errors.append("this is the module that failed, unchanged: change it so the error above cannot happen")
        return errors

    ctx.guard_llm_budget()
    try:
        source = llm.code(None, step=f"code:{calls}", experiment=exp, base_code=base, fit=fit, check=check)
    except LLMError as exc:
        return {**update, "outcome": "failed", "reason": f"coder: {exc}"}
    return {**update, "code": source, "error": None}
