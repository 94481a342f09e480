"""gate: refuses to spend compute on a candidate already seen. Every layer is
here, cheapest first:

1. text hash (whitespace-normalised) and 2. AST-canonical hash (archlab/code_hashes.py):
   an exact hit reuses the recorded result, nothing is trained;
3. embedding novelty against the memory, for an LLM's free-form proposals: a
   candidate's similarity to a past experiment is the lower of two cosines, its
   proposal (name, motivation, design; text embedder) and its code (structural
   vector), so a near duplicate must be close in what it says AND in what it is.
   At or above `near_duplicate` it is refused;
4. in the grey band [`judge_above`, `near_duplicate`) the LLM judge decides, with
   a structured verdict. A near duplicate goes back to the researcher with the
   neighbour named: nothing is reused;
5. behaviour, from the task harness in the sandbox's check step, which calls
   `fingerprint_layer` with its report: an equal fingerprint (a hash of rounded
   outputs) and then a behaviour vector within the task's tolerance of an earlier
   one (several probes, two init seeds; archlab/behaviour.py, the workspace's
   behaviour index) reuse the twin's result; a near miss is recorded as close.

Every lookup is logged through ctx.remember, so a replay takes the same decisions
whatever order the original's experiments finished in, and without the memory.
"""
from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, Field

from archlab.agents.context import LabContext
from archlab.agents.evidence import guarded, ready, row
from archlab.agents.state import ExperimentState, Rejection
from archlab.code_hashes import hashes
from archlab.memory.embeddings import code_vector, cosine
from archlab.memory.vector import proposal_text

gate_lock = threading.Lock()  # parallel experiments must not both claim one hash
K = 8                         # neighbours looked at by each vector
JUDGE_CODE_CHARS = 6000


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
    measured = {k: hit[k] for k in ("distance", "ratio", "tolerance") if k in hit}  # the behaviour layer's
    ctx.ledger.event(exp, "gate.duplicate", {**rejection, **measured, "reused_metrics": hit["metrics"]},
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
    if novelty_applies(ctx, state):
        with gate_lock:
            hit = _hash_hit(ctx, exp, h, 2 * calls)
        if hit is not None:
            return duplicate(ctx, state, hit)
        rejection, near = screen(ctx, state)  # outside the lock: it may ask the judge
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

# -- layers 3 and 4: embedding novelty and the LLM judge ------------------------------------

class JudgeVerdict(BaseModel):
    """What the duplicate judge answers."""

    same: bool = Field(description="true when the candidate is the same experiment as the past one")
    reason: str = Field(min_length=1, description="one or two sentences: what is the same, or what differs")


def novelty_applies(ctx: Any, state: dict[str, Any]) -> bool:
    """Free-form proposals only: given code is judged as is, and a genome is exact,
    whether an offline strategy drew it or a researcher gave it under the task's design
    schema (its near misses are real, different cells; the hashes and the behaviour
    fingerprint catch its twins). Measured on nb201: every 8-line cell is within 0.98
    code similarity of every other, so an embedding layer refused distinct cells."""
    if ctx.memory is None or ctx.strategy != "llm" or state.get("origin") != "campaign":
        return False
    if state.get("arm") == "control":  # the random-control arm's samples are genomes of the task's space
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


def _neighbour_outcome(ctx: Any, n: dict[str, Any]) -> str:
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
    from archlab.llm.schemas import for_prompt
    from archlab.llm.window import fit_sections
    from archlab.prompts import render

    context = {"task": ctx.task, "candidate": state.get("proposal") or {},
               "code": (state.get("code") or "")[:JUDGE_CODE_CHARS],
               "neighbour": {**near["nearest"], "code": near["nearest"].get("code", "")}, "similarity": near,
               "schema": for_prompt(JudgeVerdict)}

    def render_judge(c: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": render("judge.j2", **c)}]

    llm = ctx.model_for(state["experiment"])  # an ensemble's pick for this experiment
    ctx.guard_llm_budget()
    try:
        return llm.structured(None, JudgeVerdict, step=f"judge:{state.get('code_calls', 0)}",
                              experiment=state["experiment"],
                              fit=lambda budget: fit_sections(render_judge, context, (), budget, llm.model,
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
        return _rejection(n, "embedding", sim, f"near duplicate of {n['ref']} ({n['name']}), "
                                               f"which {_neighbour_outcome(ctx, n)}: "
                                               f"{detail} >= {cfg.near_duplicate}"), near
    if sim >= cfg.judge_above and ctx.llm is not None:
        verdict = judge(ctx, state, near)
        if verdict is not None and verdict.same:
            return _rejection(n, "judge", sim, f"the judge found it the same experiment as {n['ref']} ({n['name']}), "
                                               f"which {_neighbour_outcome(ctx, n)}: "
                                               f"{verdict.reason.strip()} [{detail}]"), near
        if verdict is not None:
            ctx.ledger.event(exp, "gate.judged_novel", {"layer": "judge", "neighbour": n.get("experiment"),
                                                        "campaign": n.get("campaign"), "reason": verdict.reason})
    return None, near

# -- layer 5: the behaviour fingerprint, from the sandboxed check ---------------------------

def fingerprint_layer(ctx: LabContext, state: ExperimentState, report: dict[str, Any]) -> dict[str, Any] | None:
    """A twin by behaviour: the duplicate's update (its result reused), or None after claiming
    the fingerprint and the behaviour vector, found and claimed together so two parallel twins
    never both train. First the exact hash, then the behaviour within the task's tolerance; a
    near miss is recorded as behaviourally close (evidence for the researcher, not a refusal)."""
    exp, fingerprint, behaviour = state["experiment"], report.get("fingerprint"), report.get("behaviour")
    tol = ctx.task.behaviour_tolerance
    behaviour = behaviour if tol is not None and isinstance(behaviour, dict) and behaviour.get("values") else None

    def look() -> dict[str, Any]:
        found = ctx.ledger.find_hash(exp, fingerprint=fingerprint) if fingerprint else None
        if found is not None:
            return {"hit": hit_record(ctx, "fingerprint", found)}
        if behaviour is None:
            return {"hit": None}
        return behaviour_look(ctx, exp, behaviour, tol)

    with gate_lock:
        seen = ctx.remember(exp, "fingerprint", state.get("code_calls", 0), look)
        hit = seen["hit"]
        if hit is None:
            if fingerprint:
                ctx.ledger.update(exp, fingerprint=fingerprint)
            if behaviour is not None and ctx.memory is not None:
                guarded(ctx, "behaviour index", lambda: index(ctx).add(ctx.folder.id, exp, behaviour_key(ctx),
                                                                      behaviour), lambda: None)
    if hit is not None:
        return duplicate(ctx, state, hit)
    if seen.get("close"):
        ctx.ledger.event(exp, "gate.behaviour_close", seen["close"], key=f"{exp}:close:{state.get('code_calls', 0)}")
    return None


def behaviour_key(ctx: LabContext) -> str:
    from archlab.behaviour import key

    return key(ctx.task.name, ctx.config.task.preset, ctx.config.task.options, ctx.task.interface)


def index(ctx: LabContext) -> Any:
    from archlab.memory.behaviour import BehaviourIndex

    return BehaviourIndex(ctx.memory, ctx.task.name)


def _from_folder(ctx: LabContext, exp: int, size: int, only: set[int] | None = None) -> list[Any]:
    """This campaign's claimed behaviour vectors of `size` values (of `only`, if given), read
    from the check that claimed each (its fingerprint is the ledger's): the folder is the truth."""
    import json

    from archlab.memory.behaviour import Neighbour

    out = []
    for e in ctx.ledger.experiments():
        if e.id == exp or not e.fingerprint or (only is not None and e.id not in only):
            continue
        for path in sorted(ctx.folder.experiment(e.id).glob("check-*.json"),
                           key=lambda p: int(p.stem.split("-")[1]), reverse=True):
            try:
                result = json.loads(path.read_text()).get("result") or {}
            except (OSError, ValueError, AttributeError):  # unreadable: as if absent
                continue
            other = result.get("behaviour") if result.get("fingerprint") == e.fingerprint else None
            if isinstance(other, dict) and len(other.get("values") or ()) == size:
                out.append(Neighbour(ctx.folder.id, e.id, other))
            if result.get("fingerprint") == e.fingerprint:
                break
    return out


def _from_index(ctx: LabContext, exp: int, behaviour: dict[str, Any]) -> list[Any]:
    """This campaign's nearest claimed vectors (the ones the index lacks put back first from the
    check results: a memory deleted or rebuilt), then the workspace's nearest, for close evidence."""
    idx, k, size, campaign = index(ctx), behaviour_key(ctx), len(behaviour["values"]), ctx.folder.id
    claimed = [e.id for e in ctx.ledger.experiments() if e.id != exp and e.fingerprint]
    lacking = set(claimed) - idx.stored(campaign, claimed, k, size)
    for n in _from_folder(ctx, exp, size, lacking) if lacking else []:
        idx.add(n.campaign, n.experiment, k, n.behaviour)
    own = idx.nearest(k, behaviour, campaign=campaign)
    return own + [n for n in idx.nearest(k, behaviour) if n.campaign != campaign]


def behaviour_look(ctx: LabContext, exp: int, behaviour: dict[str, Any], tol: Any) -> dict[str, Any]:
    """{"hit": a duplicate of this campaign within tolerance, or None; "close": the nearest
    neighbour within `tol.close` (of any campaign of the workspace) when there is no hit}."""
    from archlab.behaviour import compare

    campaign = ctx.folder.id
    size = len(behaviour["values"])
    if ctx.memory is not None:
        near = guarded(ctx, "behaviour lookup", lambda: _from_index(ctx, exp, behaviour),
                       lambda: _from_folder(ctx, exp, size))
    else:
        near = _from_folder(ctx, exp, size)
    scored = []
    for n in near:
        match = compare(behaviour, n.behaviour, tol)
        if match is None or (n.campaign == campaign and n.experiment == exp):
            continue
        row = ctx.ledger.get(n.experiment) if n.campaign == campaign else None
        if n.campaign == campaign and (row is None or row.status == "duplicate"):
            continue
        scored.append((match.ratio, n.campaign != campaign, n.experiment, n, match, row))
    scored.sort(key=lambda t: t[:3])
    measured = {"tolerance": tol.describe(), "rtol": tol.rtol, "atol": tol.atol}
    for *_, match, row in scored:
        if match.within and row is not None:
            hit = hit_record(ctx, "behaviour", row)
            hit["reason"] = (f"same behaviour as #{row.id} ({row.name}) within {tol.describe()} on every probe "
                             f"(largest difference {match.distance:.2g}, {match.ratio:.2g} of the tolerance), "
                             f"which {_outcome(ctx, row)}")
            return {"hit": {**hit, **measured, "distance": match.distance, "ratio": match.ratio}}
    close = next(((n, m) for _, _, _, n, m, _ in scored if m.close), None)
    if close is None:
        return {"hit": None}
    n, m = close
    ref = f"#{n.experiment}" if n.campaign == campaign else f"{n.campaign}#{n.experiment}"
    return {"hit": None, "close": {"neighbour": ref, "campaign": n.campaign, "experiment": n.experiment,
                                   **measured, "distance": m.distance, "ratio": m.ratio, "within": m.within}}
