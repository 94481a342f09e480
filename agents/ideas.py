"""Several ideas per experiment (`[search] proposals_per_step`): before anything is coded,
the gate and the surrogate rank the researcher's ideas and only the most promising goes on.

The gate's part: an idea that repeats an evaluated genome, or whose text is a near duplicate
(at or above `[memory] near_duplicate`) of a past experiment, would be refused; it is ranked
last. The surrogate's part: extra-trees (agents/surrogate.py) fitted on this campaign's
evaluated experiments (and, with `[search] learn_from_workspace`, on those of the workspace's
other campaigns of the same task settings) predict each idea's score, from the genome where every idea and every
past experiment has one, else from the sentence embedding of its text (name, motivation,
design). The ranking is remembered (ctx.remember, "ideas"), so resume and replay keep the pick."""
from __future__ import annotations

from dataclasses import dataclass
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


def _workspace(ctx: LabContext) -> list[Any]:
    """With [search] learn_from_workspace, the evaluated experiments of the workspace's other campaigns of
    the same task settings: the model starts from what the workspace has learnt, as the surrogate's does."""
    if not ctx.config.search.learn_from_workspace:
        return []
    return [e for _, e in surrogate.workspace_evaluated(ctx, genome=False) if e.proposal]


@dataclass
class Predictions:
    mean: list[float] | None  # each idea's predicted score (None: no model)
    std: list[float] | None   # and the spread of the trees' predictions
    features: str             # genome, text or none
    fitted_on: int            # the campaign's experiments the model fitted on
    prior: list[float]        # the scores of the workspace's experiments it fitted on too


def _predictions(ctx: LabContext, experiment: int, ideas: list[dict[str, Any]], seed: int) -> Predictions:
    rows, prior = _evaluated(ctx, experiment), _workspace(ctx)
    by_genome = all(i.get("genome") for i in ideas) and all(e.proposal.get("genome") for e in rows)
    if by_genome:
        prior = [e for e in prior if e.proposal.get("genome")]
    history = rows + prior

    def found(mean: Any = None, std: Any = None, features: str = "none") -> Predictions:
        return Predictions(None if mean is None else [float(v) for v in mean],
                           None if std is None else [float(v) for v in std], features, len(rows),
                           [e.score for e in prior])

    if len(history) < MIN_HISTORY:
        return found()
    if by_genome:
        return found(*surrogate.predict([{"genome": e.proposal["genome"], "score": e.score} for e in history],
                                        [i["genome"] for i in ideas], seed), "genome")
    vectors = guarded(ctx, "idea embeddings", lambda: _embed(
        ctx, [proposal_text(e.proposal) for e in history] + [proposal_text(i) for i in ideas]), lambda: None)
    if vectors is None:  # the embedder failed (logged): the ideas keep the model's order
        return found()
    return found(*surrogate.fit_predict(vectors[:len(history)], [e.score for e in history], vectors[len(history):],
                                        seed), "text")


def rank(ctx: LabContext, experiment: int, attempt: int, ideas: list[dict[str, Any]]) -> dict[str, Any]:
    """{"chosen": index, "ideas": [{name, mean, std, refused}], "features", "fitted_on", "prior" (the
    workspace's experiments fitted on, where any)}, remembered."""
    def compute() -> dict[str, Any]:
        import numpy as np

        refused = _refusals(ctx, experiment, ideas)
        p = _predictions(ctx, experiment, ideas, ctx.seed(experiment, "ideas", attempt))
        gain = None if p.mean is None else surrogate.acquisition(
            ctx.config.search.acquisition, np.array(p.mean), np.array(p.std), _best(ctx, experiment, p.prior),
            ctx.task.higher())

        def key(i: int) -> tuple[bool, float, int]:  # not refused first, then the acquisition, then the model's order
            return (refused[i] is not None, -(float(gain[i]) if gain is not None else 0.0), i)

        table = [{"name": str(idea.get("name", ""))[:120], "refused": refused[i]["reason"] if refused[i] else None,
                  "neighbour": refused[i]["neighbour"] if refused[i] else None,
                  "campaign": refused[i].get("campaign") if refused[i] else None,
                  "mean": round(p.mean[i], 6) if p.mean else None, "std": round(p.std[i], 6) if p.std else None}
                 for i, idea in enumerate(ideas)]
        return {"chosen": min(range(len(ideas)), key=key), "ideas": table, "features": p.features,
                "fitted_on": p.fitted_on, **({"prior": len(p.prior)} if p.prior else {})}

    return ctx.remember(experiment, "ideas", attempt, compute)


def _best(ctx: LabContext, experiment: int, prior: list[float]) -> float:
    """The campaign's best score; before it has one, the best of the workspace's it fitted on."""
    best = ctx.best(exclude=experiment)
    if best is not None:
        return best.score
    if prior:
        return max(prior) if ctx.task.higher() else min(prior)
    return 0.0
