"""What an agent is shown: the evidence, assembled on the agents' side from the
ledger and the vector memory (memory/ only stores and searches).

A view is plain JSON: {"sections": {name: [ids]}, "items": {id: row}}. It is
logged through ctx.remember, so a resume or a replay rebuilds the same prompt
from the log, whatever the memory holds by then. Retrieval is deterministic for
the same memory contents (ids break every tie), and diversity-aware: maximal
marginal relevance picks k items that are relevant and unlike each other, not
k members of one family. The offline strategies' failure avoidance (not
re-proposing a near neighbour of a failed candidate) draws on the same memory.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from archlab.memory.embeddings import code_vector
from archlab.memory.vector import Item, VectorMemory, proposal_text, task_setting, where

SHOW = {"elites": 5, "near_parent": 4, "near_idea": 4, "failures": 5, "insights": 5, "notes": 3, "exemplars": 3}
ORDER = ("elites", "parent", "near_parent", "near_idea", "failures", "insights", "notes", "exemplars",
         "siblings", "neighbours")
NEIGHBOURS = 5         # the analyst's nearest neighbours and siblings
LAMBDA = 0.7           # MMR: weight of relevance against redundancy
EXEMPLAR_CHARS = 6000  # code shown per exemplar


def mmr(items: Sequence[Item], k: int, relevance: Sequence[float] | None = None, lam: float = LAMBDA) -> list[Item]:
    """Maximal marginal relevance over items with vectors; relevance defaults to
    their similarity to the query. Deterministic: ties keep the input order."""
    import numpy as np

    if not items:
        return []
    rel = np.array(relevance if relevance is not None else [it.similarity or 0.0 for it in items], dtype=float)
    has = np.array([it.vector is not None for it in items])
    dim = next((len(it.vector) for it in items if it.vector is not None), 1)
    vecs = np.array([it.vector if it.vector is not None else [0.0] * dim for it in items], dtype=float)
    sims = vecs @ vecs.T
    chosen: list[int] = []
    redundancy = np.full(len(items), -np.inf)
    while len(chosen) < min(k, len(items)):
        gain = lam * rel - (1 - lam) * np.where(has & np.isfinite(redundancy), redundancy, 0.0)
        gain[chosen] = -np.inf
        best = int(np.argmax(np.round(gain, 9)))  # argmax: the first of equals, as given
        chosen.append(best)
        if has[best]:
            redundancy = np.maximum(redundancy, np.where(has, sims[best], -np.inf))
    return [items[i] for i in chosen]


def ready(ctx: Any, kinds: Sequence[str] = ("experiments", "code", "insights")) -> VectorMemory | None:
    """The memory, brought up to date with the workspace's finished experiments."""
    mem = ctx.memory
    if mem is None:
        return None
    mem.refresh(ctx.folder.root, ctx.ledger, ctx.task.name, kinds)
    return mem


def ref(meta: dict[str, Any], campaign: str) -> str:
    """#5 for this campaign's experiments, <campaign>#5 for another's."""
    if meta.get("campaign") == campaign:
        return f"#{meta['experiment']}"
    return f"{meta.get('campaign')}#{meta.get('experiment')}"


def row(item: Item, campaign: str) -> dict[str, Any]:
    """What a prompt shows of an experiment."""
    m = item.meta
    parent = m.get("parent", -1)
    has_parent = isinstance(parent, int) and parent >= 0
    return {"id": item.id, "ref": ref(m, campaign), "name": m.get("name", ""), "status": m.get("status"),
            "score": m.get("score"), "parent": ref({**m, "experiment": parent}, campaign) if has_parent else None,
            "reason": " ".join((m.get("reason") or "").split())[:300] or None,
            "motivation": " ".join((m.get("motivation") or "").split())[:300],
            "summary": m.get("summary") or "", "similarity": item.similarity}


def ledger_row(e: Any, campaign: str) -> dict[str, Any]:
    """A row for a ledger experiment of this campaign (no memory needed)."""
    return row(Item(f"{campaign}:{e.id}", "experiments", "", {
        "campaign": campaign, "experiment": e.id, "name": e.name or "", "status": e.status, "score": e.score,
        "parent": e.parent if e.parent is not None else -1, "reason": e.failure_reason,
        "motivation": str((e.proposal or {}).get("motivation") or "")}), campaign)


def _evidence(sections: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    items: dict[str, Any] = {}
    for rows in sections.values():
        for r in rows:
            items.setdefault(r["id"], r)
    return {"sections": {name: [r["id"] for r in rows] for name, rows in sections.items()}, "items": items}


def ids(view: dict[str, Any]) -> list[str]:
    """Every id a view showed, once, in section order (the experiment's `view` state)."""
    out: list[str] = []
    secs = view.get("sections", {})  # the logged copy comes back with sorted keys: use a fixed order
    for name in [*ORDER, *sorted(set(secs) - set(ORDER))]:
        out += [i for i in secs.get(name, []) if i not in out]
    return out


def sections(view: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The view as the template's lists of rows."""
    items = view.get("items", {})
    return {name: [items[i] for i in section if i in items] for name, section in view.get("sections", {}).items()}


def _ranked(ctx: Any, done: list[Item]) -> list[Item]:
    """Best first by the task's ranking; on a tie this campaign's experiment first, then by id."""
    campaign = ctx.folder.id
    return ctx.task.ranked(done, lambda d: d.meta.get("score"),
                           tiebreak=lambda d: (d.meta.get("campaign") != campaign, d.id))


def _distinct(items: list[Item]) -> list[Item]:
    """The first of each identical text (two campaigns can teach the same lesson)."""
    seen: set[str] = set()
    return [it for it in items if not (it.text in seen or seen.add(it.text))]


def from_ledger(ctx: Any, experiment: int) -> dict[str, Any]:
    """Without a vector memory: this campaign's elites, recent results and recent failures."""
    campaign, k = ctx.folder.id, SHOW["elites"]

    done = [e for e in ctx.ledger.experiments(status=["done"]) if e.score is not None and e.id < experiment]
    best = ctx.task.ranked(done, tiebreak=lambda e: e.id)[:k]
    recent = [e for e in done if e not in best][-k:]
    failed = [e for e in ctx.ledger.experiments(status=["failed"]) if e.id < experiment][-SHOW["failures"]:]
    return _evidence({"elites": [ledger_row(e, campaign) for e in best + recent],
                      "failures": [ledger_row(e, campaign) for e in failed]})


PREDICTIONS = 8  # past ideas shown with what the surrogate predicted and what they scored


def predictions(ctx: Any, experiment: int) -> list[dict[str, Any]]:
    """This campaign's latest finished experiments that carry a prediction: predicted against got."""
    rows = [e for e in ctx.ledger.experiments(status=["done", "failed"])
            if e.id < experiment and (e.proposal or {}).get("predicted")][-PREDICTIONS:]
    return [{"ref": f"#{e.id}", "name": e.name or "", "status": e.status, "score": e.score,
             "mean": e.proposal["predicted"].get("mean"), "std": e.proposal["predicted"].get("std"),
             "reason": " ".join((e.failure_reason or "").split())[:160] or None} for e in rows]


def guarded(ctx: Any, what: str, compute: Any, fallback: Any) -> Any:
    """A broken memory (a server down, an embedding model that fails) must not stop
    the lab: the failure is logged as a ledger event and the agent gets `fallback()`."""
    try:
        return compute()
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        import logging

        from archlab.llm import scrub  # an embedding provider's error may echo its key

        message = scrub(f"{what}: {type(exc).__name__}: {exc}"[:800], key_shapes=True)
        logging.getLogger("archlab.memory").warning("vector memory failed, going on without it: %s", message)
        ctx.ledger.event(None, "memory.error", {"error": message})
        return fallback()


def for_researcher(ctx: Any, experiment: int, idea: str | None = None, parent: int | None = None) -> dict[str, Any]:
    """The researcher's evidence: elites (diverse), the nearest past experiments to
    the parent and to the idea, recent failures, top insights, relevant notes and
    three code exemplars, across the workspace's memory; the ledger alone without one.
    `idea` is the proposal being reconsidered, if any; `parent` the experiment [search]
    parents chose to build on (None: the campaign's best)."""
    if isinstance(idea, str) and not idea.strip():
        idea = None
    view = guarded(ctx, "research view", lambda: _for_researcher(ctx, experiment, idea, parent),
                   lambda: from_ledger(ctx, experiment))
    return with_behaviour_close(ctx, view)


def with_behaviour_close(ctx: Any, view: dict[str, Any]) -> dict[str, Any]:
    """Rows of this campaign that behaved close to (not within tolerance of) an earlier
    candidate say so: a near twin by behaviour, worth knowing before proposing a third."""
    campaign = ctx.folder.id
    for event in ctx.ledger.events(kind="gate.behaviour_close"):
        item = view.get("items", {}).get(f"{campaign}:{event['experiment']}")
        d = event["data"]
        if item is not None and d.get("within"):  # the same as an earlier campaign's (only this one's are reused)
            item["close"] = (f"computes the same as {d['neighbour']}: largest output difference "
                             f"{d['distance']:.2g}, within the sameness tolerance")
        elif item is not None:
            item["close"] = (f"behaves like {d['neighbour']}: largest output difference {d['distance']:.2g}, "
                             f"{d['ratio']:.3g}x the sameness tolerance")
    return view


def _for_researcher(ctx: Any, experiment: int, idea: str | None, chosen: int | None = None) -> dict[str, Any]:
    # long: the sections share `shown` (each memory is shown once) and run in this order: one view read top to bottom
    mem = ready(ctx)
    if mem is None:
        return from_ledger(ctx, experiment)
    campaign, task = ctx.folder.id, ctx.task.name
    setting = task_setting(ctx.config.task.model_dump(mode="json"))
    shown: set[str] = set()  # ids, and code hashes: the same code from two campaigns is shown once

    def fresh(items: list[Item]) -> list[Item]:
        out, seen = [], set(shown)
        for it in items:
            code = it.meta.get("ast_hash")
            if it.id not in seen and (not code or code not in seen) and it.id != f"{campaign}:{experiment}":
                out.append(it)
                seen.update(x for x in (it.id, code) if x)
        return out

    def take(items: list[Item]) -> list[dict[str, Any]]:
        shown.update(x for it in items for x in (it.id, it.meta.get("ast_hash")) if x)
        return [row(it, campaign) for it in items]

    # elites: the best scores of this setting, diversified
    done = mem.get("experiments", filters=where(setting=setting, status="done"), task=task)
    pool_ids = [d.id for d in fresh(_ranked(ctx, done))[: 4 * SHOW["elites"]]]
    pool = {it.id: it for it in mem.get("experiments", ids=pool_ids, vectors=True, task=task)}
    pool_items = [pool[i] for i in pool_ids if i in pool]
    rel = [1.0 - i / max(1, len(pool_items)) for i in range(len(pool_items))]
    rank = {it.id: i for i, it in enumerate(pool_items)}
    elites = sorted(mmr(pool_items, SHOW["elites"], rel), key=lambda it: rank[it.id])  # diverse, shown best first
    out: dict[str, list[dict[str, Any]]] = {"elites": take(elites)}

    # the likely parent: the one [search] parents chose, else this campaign's best, else the best elite
    best = ctx.best(exclude=experiment)
    mine = f"{campaign}:{chosen}" if chosen is not None else f"{campaign}:{best.id}" if best else None
    parent = pool.get(mine) if mine in pool else \
        next(iter(mem.get("experiments", ids=[mine], vectors=True, task=task)), None) if mine else None
    parent = parent or (pool_items[0] if pool_items else None)
    if parent is not None and parent.vector is not None:
        near = fresh(mem.query("experiments", parent.vector, 4 * SHOW["near_parent"], vectors=True, task=task))
        out["near_parent"] = take(mmr([n for n in near if n.id != parent.id], SHOW["near_parent"]))
        out["parent"] = [row(parent, campaign)]
    idea_text = idea or f"{ctx.task.summary}\n{ctx.task.interface.splitlines()[0] if ctx.task.interface else ''}"
    idea_vec = mem.embed([idea_text])[0]
    near = fresh(mem.query("experiments", idea_vec, 4 * SHOW["near_idea"], vectors=True, task=task))
    out["near_idea"] = take(mmr(near, SHOW["near_idea"]))

    failed = mem.get("experiments", filters=where(status="failed"), task=task)
    failed.sort(key=lambda f: (-f.meta.get("finished", 0.0), f.id))
    out["failures"] = take(fresh(failed)[: SHOW["failures"]])

    insights = _distinct(mem.query("insights", idea_vec, 4 * SHOW["insights"], vectors=True, task=task))
    out["insights"] = [{**row(it, campaign), "id": f"insight:{it.id}", "text": it.text}
                       for it in mmr(insights, SHOW["insights"])]
    notes = _distinct(mem.query("notes", idea_vec, 4 * SHOW["notes"], {"task": {"$in": ["", task]}}, vectors=True))
    out["notes"] = [{"id": it.id, "ref": f"{it.meta.get('title')} part {it.meta.get('chunk', 0) + 1}",
                     "text": it.text, "similarity": it.similarity} for it in mmr(notes, SHOW["notes"])]

    # exemplars: code of the best experiments, as unlike each other as possible
    code = {it.id: it for it in mem.get("code", ids=pool_ids, vectors=True, task=task)}
    with_code = [code[i] for i in pool_ids if i in code]
    rel = [1.0 - i / max(1, len(with_code)) for i in range(len(with_code))]
    out["exemplars"] = [{**row(pool[it.id], campaign), "id": f"code:{it.id}", "code": it.text[:EXEMPLAR_CHARS]}
                        for it in sorted(mmr(with_code, SHOW["exemplars"], rel), key=lambda it: rank[it.id])]
    return _evidence(out)


def for_analyst(ctx: Any, experiment: int, proposal: dict[str, Any]) -> dict[str, Any]:
    """The analyst's context: the parent, its other children ranked by score, and
    the experiments nearest to this one across the workspace's memory."""
    campaign = ctx.folder.id
    parent_id = proposal.get("parent_id")
    out: dict[str, list[dict[str, Any]]] = {"parent": [], "siblings": [], "neighbours": []}

    if parent_id is not None:
        parent = ctx.ledger.get(parent_id)
        out["parent"] = [ledger_row(parent, campaign)] if parent else []
        kids = ctx.task.ranked([e for e in ctx.ledger.experiments(status=["done"])
                                if e.parent == parent_id and e.id != experiment], tiebreak=lambda e: e.id)
        out["siblings"] = [ledger_row(e, campaign) for e in kids[:NEIGHBOURS]]
    def neighbours() -> list[dict[str, Any]]:
        mem = ready(ctx, ("experiments",))
        if mem is None:
            return []
        skip = {f"{campaign}:{experiment}"} | {r["id"] for r in out["parent"] + out["siblings"]}
        vec = mem.embed([proposal_text(proposal)])[0]
        near = [n for n in mem.query("experiments", vec, 4 * NEIGHBOURS, vectors=True, task=ctx.task.name)
                if n.id not in skip]
        return [row(n, campaign) for n in mmr(near, NEIGHBOURS)]

    out["neighbours"] = guarded(ctx, "analyst neighbours", neighbours, list)
    return _evidence(out)


# -- offline strategies: not re-proposing near neighbours of failures -------------------------

MAX_REDRAWS = 5
_elsewhere: dict[tuple[str, str, str], bool] = {}


def _failures_elsewhere(ctx: Any) -> bool:
    """Whether another campaign of the workspace on this task has a failure with code
    (read from the ledgers once per process: cheap, and no vector store opened)."""
    import sqlite3

    from archlab.campaign_folder import list_campaigns

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
