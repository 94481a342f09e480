"""The surrogate strategy: a model of the design space fitted on what the campaign has
evaluated ranks many drawn candidates before any compute, and only the most promising is
trained. The model is scikit-learn's extremely randomised trees; the spread of its trees'
predictions is the uncertainty that expected improvement (scipy.stats) or an upper bound
trade against the predicted score, where `[search] acquisition` asks for them (the default,
greedy, measured best on NAS-Bench-201; exploration comes from the fresh samples instead).
Features are the genome's components one-hot, plus counts for list components (how many
edges hold each op), so any task pack with a design space has them.

Everything a step decides from is remembered (ctx.remember: the evaluated genomes and
scores it fitted on), and the model, the pool and the pick are seeded from the campaign
seed: resume and replay take the same step."""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archlab.agents import parents
from archlab.agents.context import LabContext
from archlab.tasks.base import genome_tokens

Tokenizer = Callable[[dict[str, Any]], list[str]]

HISTORY = 256        # at most this many evaluated experiments to fit on: the best half, then the latest
POOL_MUTANTS = 160   # mutations (one or two steps) of the elites
POOL_FRESH = 64      # uniform samples: what keeps the search from collapsing onto one family
ELITES = 8
EXPLORE_EVERY = 10   # every 10th pick is among the fresh samples only
TREES = 64


def genome_key(genome: dict[str, Any]) -> str:
    return json.dumps(genome, sort_keys=True)


def features(genomes: list[dict[str, Any]], vocabulary: list[str], tokenize: Tokenizer = genome_tokens) -> Any:
    import numpy as np

    index = {t: i for i, t in enumerate(vocabulary)}
    x = np.zeros((len(genomes), len(vocabulary)), dtype=np.float32)
    for row, g in enumerate(genomes):
        for t in tokenize(g):
            if t in index:
                x[row, index[t]] = 1.0
    return x


def predict(history: list[dict[str, Any]], candidates: list[dict[str, Any]], seed: int,
            tokenize: Tokenizer = genome_tokens) -> tuple[Any, Any]:
    """Mean and spread of the trees' predictions for each candidate genome, read as `tokenize`'s words."""
    genomes = [h["genome"] for h in history]
    vocabulary = sorted({t for g in [*genomes, *candidates] for t in tokenize(g)})
    return fit_predict(features(genomes, vocabulary, tokenize), [h["score"] for h in history],
                       features(candidates, vocabulary, tokenize), seed)


def fit_predict(x: Any, y: list[float], candidates: Any, seed: int) -> tuple[Any, Any]:
    """Extra-trees fitted on rows `x` (any numeric features: a genome's, a text embedding) with scores `y`:
    each candidate row's mean and spread over the trees."""
    import numpy as np
    from sklearn.ensemble import ExtraTreesRegressor

    model = ExtraTreesRegressor(n_estimators=TREES, min_samples_leaf=1, max_features=0.5, bootstrap=True,
                                random_state=seed, n_jobs=1).fit(np.asarray(x), np.asarray(y, dtype=float))
    per_tree = np.stack([t.predict(np.asarray(candidates)) for t in model.estimators_])
    return per_tree.mean(axis=0), per_tree.std(axis=0)


def expected_improvement(mean: Any, std: Any, best: float, higher: bool) -> Any:
    import numpy as np
    from scipy.stats import norm

    gain = (mean - best) if higher else (best - mean)
    std = np.maximum(std, 1e-9)
    z = gain / std
    return gain * norm.cdf(z) + std * norm.pdf(z)


def acquisition(kind: str, mean: Any, std: Any, best: float, higher: bool) -> Any:
    """How good each candidate looks, larger is better whatever the metric's direction."""
    sign = 1.0 if higher else -1.0
    if kind == "ei":
        return expected_improvement(mean, std, best, higher)
    if kind == "ucb":
        return sign * mean + std
    return sign * mean


def history(ctx: LabContext, experiment: int, attempt: int) -> list[dict[str, Any]]:
    """Every evaluated campaign genome with its score, as the step saw it (remembered)."""
    def evaluated() -> list[dict[str, Any]]:
        rows = ctx.evaluated(experiment, genome=True)
        if len(rows) > HISTORY:  # bounded: each step's set is remembered in the ledger for replay
            best = ctx.task.ranked(rows, lambda e: e.score, tiebreak=lambda e: e.id)[: HISTORY // 2]
            chosen = {e.id for e in best} | {e.id for e in rows[-(HISTORY - len(best)):]}
            rows = [e for e in rows if e.id in chosen][-HISTORY:]
        return [{"id": e.id, "score": e.score, "genome": e.proposal["genome"]} for e in rows]

    return ctx.remember(experiment, "surrogate_history", attempt, evaluated)


@dataclass
class Pick:
    genome: dict[str, Any]
    motivation: str
    parent: int | None = None
    parent_genome: dict[str, Any] | None = None
    predicted: dict[str, float] | None = None  # mean and spread of the trees' predictions
    view: list[int] = field(default_factory=list)  # the evaluated experiments it fitted on


def propose(ctx: LabContext, experiment: int, attempt: int, rng: random.Random) -> Pick:
    space, task = ctx.task.space, ctx.task
    seen = history(ctx, experiment, attempt)
    ids = [h["id"] for h in seen]
    warmup = ctx.config.search.population
    if len(seen) < warmup:
        return Pick(space.sample(rng), f"surrogate warm-up ({len(seen)}/{warmup} evaluated): uniform sample",
                    view=ids)
    ranked = task.ranked(seen, lambda h: h["score"], tiebreak=lambda h: h["id"])
    elites = ranked[:ELITES]
    selector = parents.pool(ctx, experiment, attempt) if ctx.config.search.parents != "tournament" else None
    if selector is not None:  # the mutants' parents from islands, the MAP-Elites archive or the bandit
        elites = selector.elites(task, ELITES, rng)
    known = {genome_key(h["genome"]) for h in seen}
    pool: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for _ in range(POOL_MUTANTS):
        parent = rng.choice(elites)
        child = space.mutate(parent["genome"], rng)
        if rng.random() < 0.3:
            child = space.mutate(child, rng)
        pool.append((child, parent))
    fresh_from = len(pool)
    pool += [(space.sample(rng), None) for _ in range(POOL_FRESH)]
    unique: dict[str, int] = {}
    for i, (g, _) in enumerate(pool):
        unique.setdefault(genome_key(g), i)
    keep = [i for k, i in unique.items() if k not in known]
    explore = (len(seen) - warmup) % EXPLORE_EVERY == EXPLORE_EVERY - 1
    if explore and any(i >= fresh_from for i in keep):
        keep = [i for i in keep if i >= fresh_from]
    if not keep:  # everything drawn was evaluated already: a fresh sample, the gate decides
        return Pick(space.sample(rng), "surrogate: every drawn candidate was evaluated; uniform sample", view=ids)
    mean, std = predict(seen, [pool[i][0] for i in keep], rng.randrange(2**31))
    best = ranked[0]["score"]
    gain = acquisition(ctx.config.search.acquisition, mean, std, best, task.higher())
    pick = max(range(len(keep)), key=lambda j: (float(gain[j]), -j))
    genome, parent = pool[keep[pick]]
    predicted = {k: round(float(v[pick]), 6) for k, v in (("mean", mean), ("std", std))}
    source = f"a mutation of #{parent['id']}" if parent is not None else "a fresh sample (exploration)"
    if selector is not None:
        source += f" ({selector.note})"
    motivation = (f"surrogate: extra-trees on {len(seen)} evaluated ranked {len(keep)} drawn candidates "
                  f"({ctx.config.search.acquisition}, best so far {best:.4g}); picked {source}, "
                  f"predicted {task.metric} {predicted['mean']:.4g} ± {predicted['std']:.2g}")
    return Pick(genome, motivation, parent["id"] if parent else None, parent["genome"] if parent else None,
                predicted, ids)
