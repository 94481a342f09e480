"""Several ideas per experiment (`[search] proposals_per_step`): before anything is coded,
the gate and the surrogate rank the researcher's ideas and only the most promising goes on.

The gate's part: an idea that repeats an evaluated genome, or whose text is a near duplicate
(at or above `[memory] near_duplicate`) of a past experiment, would be refused; it is ranked
last. The surrogate's part: extra-trees (agents/surrogate.py) fitted on this campaign's
evaluated experiments predict each idea's score, from the genome where every idea and every
past experiment has one, else from the sentence embedding of its text (name, motivation,
design). The ranking is remembered (ctx.remember, "ideas"), so resume and replay keep the pick."""
from __future__ import annotations

from typing import Any

from archlab.agents import surrogate
from archlab.agents.context import LabContext
from archlab.agents.evidence import guarded, ready, ref
from archlab.memory.vector import proposal_text

MIN_HISTORY = 4  # fewer evaluated experiments than this: no model, the ideas keep the model's own order
HISTORY = 128    # the latest evaluated experiments the model is fitted on


def _evaluated(ctx: LabContext, experiment: int) -> list[Any]:
    """The latest evaluated experiments that carry a proposal to read (seeds given as code may not)."""
    return [e for e in ctx.evaluated(experiment) if e.proposal][-HISTORY:]


def _embed(ctx: LabContext, texts: list[str]) -> list[list[float]]:
    if ctx.memory is not None:
        return ctx.memory.embed(texts)
    from archlab.memory.embeddings import get_embedder

    return get_embedder(ctx.config.memory.embeddings).embed(texts)


def _refusals(ctx: LabContext, experiment: int, ideas: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Why the gate would refuse each idea before any code ({"reason", "neighbour", "campaign"}), or None."""
    known = {surrogate.genome_key(e.proposal["genome"]): e.id for e in ctx.ledger.experiments()
             if e.id != experiment and (e.proposal or {}).get("genome") and e.status != "duplicate"}
    out: list[dict[str, Any] | None] = []
    for idea in ideas:
        twin = known.get(surrogate.genome_key(idea["genome"])) if idea.get("genome") else None
        out.append({"reason": f"the same design as #{twin}", "neighbour": twin} if twin is not None else None)
    # no memory, or a broken one (logged): no text check
    mem = guarded(ctx, "idea novelty", lambda: ready(ctx, ("experiments",)), lambda: None)
    if mem is None:
        return out

    def nearest() -> list[tuple[float, dict[str, Any]]]:
        found = []
        for vec in mem.embed([proposal_text(i) for i in ideas]):
            hits = mem.query("experiments", vec, 1, task=ctx.task.name)
            found.append((hits[0].similarity or 0.0, hits[0].meta) if hits else (0.0, {}))
        return found

    limit = ctx.config.memory.near_duplicate
    for i, (sim, meta) in enumerate(guarded(ctx, "idea novelty", nearest, lambda: [(0.0, {})] * len(ideas))):
        if out[i] is None and sim >= limit and not ideas[i].get("genome"):  # a genome is exact: its hash decides
            out[i] = {"reason": f"a near duplicate of {ref(meta, ctx.folder.id)} {meta.get('name', '')!r} "
                                f"(similarity {sim:.3f} >= {limit})",
                      "neighbour": meta.get("experiment"), "campaign": meta.get("campaign")}
    return out


def _predictions(ctx: LabContext, experiment: int, ideas: list[dict[str, Any]],
                 seed: int) -> tuple[list[float] | None, list[float] | None, str, int]:
    rows = _evaluated(ctx, experiment)
    if len(rows) < MIN_HISTORY:
        return None, None, "none", len(rows)
    if all(i.get("genome") for i in ideas) and all(e.proposal.get("genome") for e in rows):
        mean, std = surrogate.predict([{"genome": e.proposal["genome"], "score": e.score} for e in rows],
                                      [i["genome"] for i in ideas], seed)
        return [float(v) for v in mean], [float(v) for v in std], "genome", len(rows)
    vectors = guarded(ctx, "idea embeddings", lambda: _embed(
        ctx, [proposal_text(e.proposal) for e in rows] + [proposal_text(i) for i in ideas]), lambda: None)
    if vectors is None:  # the embedder failed (logged): the ideas keep the model's order
        return None, None, "none", len(rows)
    mean, std = surrogate.fit_predict(vectors[:len(rows)], [e.score for e in rows], vectors[len(rows):], seed)
    return [float(v) for v in mean], [float(v) for v in std], "text", len(rows)


def rank(ctx: LabContext, experiment: int, attempt: int, ideas: list[dict[str, Any]]) -> dict[str, Any]:
    """{"chosen": index, "ideas": [{name, mean, std, refused}], "features", "fitted_on"}, remembered."""
    def compute() -> dict[str, Any]:
        import numpy as np

        refused = _refusals(ctx, experiment, ideas)
        mean, std, kind, fitted = _predictions(ctx, experiment, ideas, ctx.seed(experiment, "ideas", attempt))
        gain = None if mean is None else surrogate.acquisition(
            ctx.config.search.acquisition, np.array(mean), np.array(std), _best(ctx, experiment), ctx.task.higher())

        def key(i: int) -> tuple[bool, float, int]:  # not refused first, then the acquisition, then the model's order
            return (refused[i] is not None, -(float(gain[i]) if gain is not None else 0.0), i)

        table = [{"name": str(idea.get("name", ""))[:120], "refused": refused[i]["reason"] if refused[i] else None,
                  "neighbour": refused[i]["neighbour"] if refused[i] else None,
                  "campaign": refused[i].get("campaign") if refused[i] else None,
                  "mean": round(mean[i], 6) if mean else None, "std": round(std[i], 6) if std else None}
                 for i, idea in enumerate(ideas)]
        return {"chosen": min(range(len(ideas)), key=key), "ideas": table, "features": kind, "fitted_on": fitted}

    return ctx.remember(experiment, "ideas", attempt, compute)


def _best(ctx: LabContext, experiment: int) -> float:
    best = ctx.best(exclude=experiment)
    return best.score if best is not None else 0.0
