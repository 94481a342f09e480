"""The gate's novelty layers, after the two hashes and before any compute.

Embedding novelty: a candidate's similarity to a past experiment is the lower
of two cosines, its proposal (name, motivation, design; text embedder) and its
code (structural vector), so a near duplicate must be close in what it says
AND in what it is: a new idea written as a small edit of its parent's code is
not refused, and neither is old code under a new motivation. At or above
`near_duplicate` the candidate is refused; in the grey band
[`judge_above`, `near_duplicate`) an LLM judge decides, with a structured
verdict (LLM path only). Every refusal names its neighbour and goes back to
the researcher. The neighbour search is logged through ctx.remember, so a
replay takes the same decisions without the memory.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from archlab.memory.embeddings import code_vector, cosine
from archlab.memory.retrieval import guarded, ready, row
from archlab.memory.vector import proposal_text

K = 8                   # neighbours looked at by each vector
JUDGE_CODE_CHARS = 6000


class JudgeVerdict(BaseModel):
    """What the duplicate judge answers."""

    same: bool = Field(description="true when the candidate is the same experiment as the past one")
    reason: str = Field(min_length=1, description="one or two sentences: what is the same, or what differs")


def applies(ctx: Any, state: dict[str, Any]) -> bool:
    """Free-form proposals only: given code is judged as is, and a genome is exact,
    whether an offline strategy drew it or a researcher gave it under the task's design
    schema (its near misses are real, different cells; the hashes and the behaviour
    fingerprint catch its twins). Measured on nb201: every 8-line cell is within 0.98
    code similarity of every other, so an embedding layer refused distinct cells."""
    if ctx.memory is None or ctx.strategy != "llm" or state.get("origin") != "campaign":
        return False
    return not (ctx.task.design_schema is not None and (state.get("proposal") or {}).get("genome"))


def nearest(ctx: Any, proposal: dict[str, Any], code: str) -> dict[str, Any]:
    """The past experiment of this task most like the candidate, with the similarities."""
    mem = ready(ctx)
    task = ctx.task.name
    p_vec, c_vec = mem.embed([proposal_text(proposal)])[0], code_vector(code)
    by_p = {it.id: it.similarity for it in mem.query("experiments", p_vec, K, task=task)}
    by_c = {it.id: it.similarity for it in mem.query("code", c_vec, K, task=task)}
    ids = sorted(set(by_p) | set(by_c))
    for it in mem.get("experiments", ids=[i for i in ids if i not in by_p], vectors=True, task=task):
        by_p[it.id] = cosine(p_vec, it.vector)
    for it in mem.get("code", ids=[i for i in ids if i not in by_c], vectors=True, task=task):
        by_c[it.id] = cosine(c_vec, it.vector)
    scored = [(min(by_p[i], by_c[i]), i) for i in ids if i in by_p and i in by_c]  # no code: not a candidate twin
    if not scored:
        return {"nearest": None}
    sim, best = min(scored, key=lambda t: (-round(t[0], 6), t[1]))
    item = mem.get("experiments", ids=[best], task=task)[0]
    neighbour = {**row(item, ctx.folder.id), "experiment": item.meta.get("experiment"),
                 "campaign": item.meta.get("campaign"), "design": (item.meta.get("design") or "")[:600]}
    if sim >= ctx.config.memory.judge_above:  # the judge's prompt needs it, and a replay too
        code_items = mem.get("code", ids=[best], task=task)
        neighbour["code"] = code_items[0].text[:JUDGE_CODE_CHARS] if code_items else ""
    return {"nearest": neighbour, "similarity": round(sim, 4), "proposal": round(by_p[best], 4),
            "code": round(by_c[best], 4)}


def _outcome(ctx: Any, n: dict[str, Any]) -> str:
    if n.get("status") == "done" and n.get("score") is not None:
        return f"scored {ctx.task.metric}={n['score']:.4g}"
    if n.get("status") == "failed":
        return f"failed: {(n.get('reason') or '')[:200]}"
    return str(n.get("status"))


def _rejection(n: dict[str, Any], layer: str, similarity: float, reason: str) -> dict[str, Any]:
    return {"layer": layer, "neighbour": n.get("experiment"), "campaign": n.get("campaign"),
            "similarity": similarity, "reason": reason}


def judge(ctx: Any, state: dict[str, Any], near: dict[str, Any]) -> JudgeVerdict | None:
    """The LLM judge's verdict; None when it gave none (then the candidate goes on)."""
    from archlab.errors import LLMError
    from archlab.prompts import render

    from archlab.llm.schemas import for_prompt
    from archlab.llm.window import fit_sections

    context = {"task": ctx.task, "candidate": state.get("proposal") or {},
               "code": (state.get("code") or "")[:JUDGE_CODE_CHARS],
               "neighbour": {**near["nearest"], "code": near["nearest"].get("code", "")}, "similarity": near,
               "schema": for_prompt(JudgeVerdict)}

    def render_judge(c: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": render("judge.j2", **c)}]

    ctx.guard_llm_budget()
    try:
        return ctx.llm.structured(None, JudgeVerdict, step=f"judge:{state.get('code_calls', 0)}",
                                  experiment=state["experiment"],
                                  fit=lambda budget: fit_sections(render_judge, context, (), budget, ctx.llm.model,
                                                                  code_keys=("code",))[0])
    except LLMError as exc:
        ctx.ledger.event(state["experiment"], "gate.judge_failed", {"error": str(exc)[:500]})
        return None


def screen(ctx: Any, state: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(rejection or None, what the neighbour search found)."""
    exp, calls = state["experiment"], state.get("code_calls", 0)
    near = ctx.remember(exp, "novelty", calls, lambda: guarded(
        ctx, "gate novelty", lambda: nearest(ctx, state.get("proposal") or {}, state.get("code") or ""),
        lambda: {"nearest": None, "error": "the memory failed: novelty not checked"}))
    n = near.get("nearest")
    if not n:
        return None, near
    cfg, sim = ctx.config.memory, near["similarity"]
    detail = f"similarity {sim:.3f} (proposal {near['proposal']:.3f}, code {near['code']:.3f})"
    if sim >= cfg.near_duplicate:
        return _rejection(n, "embedding", sim, f"near duplicate of {n['ref']} ({n['name']}), which {_outcome(ctx, n)}: "
                                               f"{detail} >= {cfg.near_duplicate}"), near
    if sim >= cfg.judge_above and ctx.llm is not None:
        verdict = judge(ctx, state, near)
        if verdict is not None and verdict.same:
            return _rejection(n, "judge", sim, f"the judge found it the same experiment as {n['ref']} ({n['name']}), "
                                               f"which {_outcome(ctx, n)}: {verdict.reason.strip()} [{detail}]"), near
        if verdict is not None:
            ctx.ledger.event(exp, "gate.judged_novel", {"layer": "judge", "neighbour": n.get("experiment"),
                                                        "campaign": n.get("campaign"), "reason": verdict.reason})
    return None, near


# -- offline strategies: not re-proposing near neighbours of failures -------------------

MAX_REDRAWS = 5
_elsewhere: dict[tuple[str, str, str], bool] = {}


def _failures_elsewhere(ctx: Any) -> bool:
    """Whether another campaign of the workspace on this task has a failure with code
    (read from the ledgers once per process: cheap, and no vector store opened)."""
    import sqlite3

    from archlab.folder import list_campaigns

    root = ctx.folder.root
    key = (str(root.parent), ctx.task.name, root.name)
    if key not in _elsewhere:
        found = False
        for folder in list_campaigns(root.parent):
            if folder.root == root or not folder.ledger.exists():
                continue
            try:
                if json.loads(folder.config.read_text()).get("task", {}).get("name") != ctx.task.name:
                    continue
                with sqlite3.connect(f"file:{folder.ledger}?mode=ro", uri=True) as db:
                    found = db.execute("SELECT 1 FROM experiments WHERE status = 'failed' AND code_path IS NOT NULL "
                                       "LIMIT 1").fetchone() is not None
            except (OSError, ValueError, sqlite3.Error):
                continue
            if found:
                break
        _elsewhere[key] = found
    return _elsewhere[key]


def near_failure(ctx: Any, code: str) -> dict[str, Any] | None:
    """The failed experiment whose code is closest to `code`, when within `avoid_failures`."""
    mem = ready(ctx, ("code",))
    hits = mem.query("code", code_vector(code), 1, {"status": "failed"}, task=ctx.task.name)
    if hits and (hits[0].similarity or 0.0) >= ctx.config.memory.avoid_failures:
        return {"ref": row(hits[0], ctx.folder.id)["ref"], "similarity": hits[0].similarity}
    return None


def avoid_failures(ctx: Any, experiment: int, attempt: int, genome: dict[str, Any],
                   redraw: Any) -> tuple[dict[str, Any], list[str]]:
    """Redraw (up to MAX_REDRAWS times, with its own seeded stream) a genome whose
    code is a near neighbour of a failure. The scan is logged through ctx.remember;
    the redraws are repeated from it, so a replay needs no memory."""
    if ctx.memory is None:
        return genome, []

    def scan() -> dict[str, Any]:
        here = any(e.code_path for e in ctx.ledger.experiments(status=["failed"]))
        if not (here or ctx.memory.url or _failures_elsewhere(ctx)):
            return {"skipped": []}  # no failure anywhere: the vector store is not even opened
        rng, g, skipped = ctx.rng(experiment, "redraw", attempt), genome, []
        for _ in range(MAX_REDRAWS):
            hit = near_failure(ctx, ctx.task.space.render(g))
            if hit is None:
                break
            skipped.append(f"{hit['ref']} at {hit['similarity']:.3f}")
            g = redraw(rng)
        return {"skipped": skipped}

    skipped = ctx.remember(experiment, "avoid", attempt,
                           lambda: guarded(ctx, "failure avoidance", scan, lambda: {"skipped": []}))["skipped"]
    rng = ctx.rng(experiment, "redraw", attempt)
    for _ in skipped:
        genome = redraw(rng)
    return genome, list(skipped)
