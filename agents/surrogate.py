"""The surrogate strategy: a model of the design space fitted on what the campaign has
evaluated ranks candidates before any compute, and only the most promising is trained. The
candidates ([search] candidates) are by default the untried one-step neighbours of the best
experiment that has any left, a local search whose order the model sets; or random mutants of
the elites. Every tenth pick is among fresh uniform samples instead, so the search never
settles on one family; and a local search that has gone `[search] restart_after` evaluated
experiments without beating its own best starts again from a uniform sample, since past that
the model, fitted where the search dwelt, only ranks that basin's cells first.

The model is scikit-learn's extremely randomised trees; the spread of its trees' predictions
is the uncertainty that expected improvement (scipy.stats) or an upper bound trade against
the predicted score, where `[search] acquisition` asks for them (the default, greedy, measured
best on NAS-Bench-201; exploration comes from the fresh samples and restarts instead).
Features are the genome's components one-hot, plus counts for list components (how many
edges hold each op), so any task pack with a design space has them.

The model fits on the campaign's evaluated experiments and, with `[search]
learn_from_workspace`, on those of the workspace's other campaigns of the same task settings.
Everything a step decides from is remembered (ctx.remember: the evaluated genomes and
scores it fitted on), and the model, the pool and the pick are seeded from the campaign
seed: resume and replay take the same step."""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archlab.agents import parents
from archlab.agents.context import LabContext, evaluated_in
from archlab.tasks.base import genome_tokens

Tokenizer = Callable[[dict[str, Any]], list[str]]

HISTORY = 256        # at most this many evaluated experiments to fit on: the best half, then the latest
PRIOR = 256          # and at most this many of the workspace's other campaigns' latest
POOL_MUTANTS = 160   # mutations (one or two steps) of the elites
POOL_FRESH = 64      # uniform samples: what keeps the search from collapsing onto one family
ELITES = 8
EXPLORE_EVERY = 10   # every 10th pick is among the fresh samples only
TREES = 64


def genome_key(genome: dict[str, Any]) -> str:
    return json.dumps(genome, sort_keys=True)


def tried_key(genome: dict[str, Any]) -> str:
    """A short digest of the genome: what `tried` holds, so remembering all of a long campaign stays small."""
    return hashlib.sha1(genome_key(genome).encode()).hexdigest()[:16]


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


def tried(ctx: LabContext, experiment: int, attempt: int, seen: list[dict[str, Any]]) -> set[str]:
    """Every evaluated genome of the campaign, as `tried_key`s: what a pick must not repeat. A history
    of under HISTORY // 2 is all of them; a capped one (at least its best half) leaves some out, and a
    pick among those would be refused by the gate on every attempt, so the rest is remembered then."""
    known = {tried_key(h["genome"]) for h in seen}
    if len(seen) < HISTORY // 2:
        return known
    return known | set(ctx.remember(experiment, "surrogate_tried", attempt, lambda: sorted(
        {tried_key(e.proposal["genome"]) for e in ctx.evaluated(experiment, genome=True)} - known)))


def local_search(ctx: LabContext, experiment: int, attempt: int) -> dict[str, Any] | None:
    """Where the current local search began ({"since": id}), or {"since": None} when the next experiment
    starts a new one: with [search] restart_after = S, a local search (the campaign's first begins with
    the warm-up) ends once S evaluated experiments in a row have not beaten its best, so a search caught
    in one basin of the landscape starts again elsewhere. None: restarts are off. Remembered."""
    after = ctx.config.search.restart_after
    if not after:
        return None

    def compute() -> dict[str, Any]:
        since, best, stale = None, None, 0
        for e in ctx.evaluated(experiment, genome=True):
            if since is None:  # this experiment begins the next local search
                since, best, stale = e.id, e.score, 0
            elif ctx.task.better(e.score, best):
                best, stale = e.score, 0
            else:
                stale += 1
                if stale >= after:
                    since = None
        return {"since": since}

    return ctx.remember(experiment, "surrogate_local", attempt, compute)


def _mutants(space: Any, elites: list[dict[str, Any]], rng: random.Random) -> list[tuple[dict[str, Any], Any]]:
    """Random mutations (one or two steps) of the elites, each with its parent."""
    pool = []
    for _ in range(POOL_MUTANTS):
        parent = rng.choice(elites)
        child = space.mutate(parent["genome"], rng)
        if rng.random() < 0.3:
            child = space.mutate(child, rng)
        pool.append((child, parent))
    return pool


def _neighbours(space: Any, order: list[dict[str, Any]], known: set[str]) -> list[tuple[dict[str, Any], Any]] | None:
    """The untried one-step neighbours of the first experiment in `order` that has any left: a local
    search around the best, which on NAS-Bench-201's smooth landscape finds the optimum's cluster fast.
    None: the space does not enumerate neighbours."""
    for parent in order:
        near = space.neighbours(parent["genome"])
        if near is None:
            return None
        left = [(g, parent) for g in near if tried_key(g) not in known]
        if left:
            return left
    return []


def workspace_evaluated(ctx: LabContext, genome: bool = True) -> list[tuple[str, Any]]:
    """(campaign id, experiment) for the evaluated experiments of the workspace's other campaigns with the
    same [task] settings (task, preset, table, dataset...), each campaign's in the order they finished,
    the latest PRIOR: what the workspace has learnt. `genome`: only those that carry one."""
    from archlab.campaign_folder import list_campaigns
    from archlab.memory.ledger import Ledger

    mine, rows = ctx.config.task.model_dump(mode="json"), []
    for folder in list_campaigns(ctx.config.workspace):
        try:
            same = folder.id != ctx.folder.id and folder.read_config().get("task") == mine
        except (OSError, ValueError):  # a damaged campaign folder is not this step's to mend
            same = False
        if not same or not folder.ledger.exists():
            continue
        ledger = Ledger(folder.ledger)
        try:
            rows += [(folder.id, e) for e in evaluated_in(ledger, genome=genome, order="finished, id")]
        finally:
            ledger.close()
    return rows[-PRIOR:]


def workspace_prior(ctx: LabContext, experiment: int, attempt: int) -> list[dict[str, Any]]:
    """The workspace's evaluated genomes and scores (`workspace_evaluated`) the model starts from. Remembered
    like the campaign's own, so a replay or resume never reads campaigns that came later."""
    if not ctx.config.search.learn_from_workspace:
        return []
    return ctx.remember(experiment, "surrogate_prior", attempt, lambda: [
        {"campaign": campaign, "id": e.id, "score": e.score, "genome": e.proposal["genome"]}
        for campaign, e in workspace_evaluated(ctx)])


def _restart(ctx: LabContext, space: Any, known: set[str], seen: list[dict[str, Any]], rng: random.Random) -> Pick:
    """The first experiment of a new local search: an untried uniform sample (the model, fitted where the
    last search dwelt, would draw it back there)."""
    genome = space.sample(rng)
    for _ in range(100):
        if tried_key(genome) not in known:
            break
        genome = space.sample(rng)
    after = ctx.config.search.restart_after
    return Pick(genome, f"surrogate: the local search went {after} evaluated experiments without beating its best; "
                        "a new one starts from a uniform sample", view=[h["id"] for h in seen])


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
    known = tried(ctx, experiment, attempt, seen)
    explore = (len(seen) - warmup) % EXPLORE_EVERY == EXPLORE_EVERY - 1
    local = None
    if ctx.config.search.candidates == "neighbours":
        order = [*elites, *ranked]
        search = local_search(ctx, experiment, attempt)
        if search is not None:
            if search["since"] is None:
                return _restart(ctx, space, known, seen, rng)
            order = [h for h in order if h["id"] >= search["since"]]  # this local search's own experiments only
        local = _neighbours(space, order, known)
    pool = list(local) if local is not None else _mutants(space, elites, rng)
    fresh_from = len(pool)
    pool += [(space.sample(rng), None) for _ in range(POOL_FRESH)]
    unique: dict[str, int] = {}
    for i, (g, _) in enumerate(pool):
        unique.setdefault(tried_key(g), i)
    keep = [i for k, i in unique.items() if k not in known]
    if (explore or local is not None) and any((i >= fresh_from) == explore for i in keep):
        keep = [i for i in keep if (i >= fresh_from) == explore]  # the neighbours, or on exploring steps the fresh
    if not keep:  # everything drawn was evaluated already: a fresh sample, the gate decides
        return Pick(space.sample(rng), "surrogate: every drawn candidate was evaluated; uniform sample", view=ids)
    prior = workspace_prior(ctx, experiment, attempt)
    mean, std = predict(seen + prior, [pool[i][0] for i in keep], rng.randrange(2**31))
    best = ranked[0]["score"]
    gain = acquisition(ctx.config.search.acquisition, mean, std, best, task.higher())
    pick = max(range(len(keep)), key=lambda j: (float(gain[j]), -j))
    genome, parent = pool[keep[pick]]
    predicted = {k: round(float(v[pick]), 6) for k, v in (("mean", mean), ("std", std))}
    kind = "an untried neighbour" if local else "a mutation"
    source = f"{kind} of #{parent['id']}" if parent is not None else "a fresh sample (exploration)"
    if selector is not None:
        source += f" ({selector.note})"
    fitted = f"{len(seen)} evaluated" + (f" (+{len(prior)} from the workspace's other campaigns)" if prior else "")
    motivation = (f"surrogate: extra-trees on {fitted} ranked {len(keep)} candidates "
                  f"({ctx.config.search.acquisition}, best so far {best:.4g}); picked {source}, "
                  f"predicted {task.metric} {predicted['mean']:.4g} ± {predicted['std']:.2g}")
    return Pick(genome, motivation, parent["id"] if parent else None, parent["genome"] if parent else None,
                predicted, ids)
