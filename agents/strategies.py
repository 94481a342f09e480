"""Offline researchers: random search, regularised evolution and the surrogate strategy
(agents/surrogate.py) over the task's design space. They stand in for the LLM when no model is configured and are
the baselines an LLM campaign must beat."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from archlab.agents import parents
from archlab.agents.context import LabContext
from archlab.agents.evidence import avoid_failures


def _population(ctx: LabContext, experiment: int, attempt: int) -> list[SimpleNamespace]:
    """Regularised evolution's population: the most recently finished evaluated
    experiments that carry a genome (ageing: the oldest drop out). Remembered with
    their scores and genomes, so a replay needs nothing the original saw later."""
    def latest() -> list[dict[str, Any]]:
        rows = ctx.evaluated(experiment, genome=True, order="finished DESC, id DESC")
        return [{"id": e.id, "score": e.score, "genome": e.proposal["genome"]}
                for e in rows[: ctx.config.search.population]]

    return [SimpleNamespace(**row) for row in ctx.remember(experiment, "population", attempt, latest)]


def propose_offline(ctx: LabContext, experiment: int, attempt: int,
                    strategy: str | None = None) -> tuple[dict[str, Any], list[int]]:
    """A proposal dict (name, motivation, design, genome, parent_id) and the ids it looked at;
    `strategy` overrides the campaign's (the random-control arm samples uniformly)."""
    strategy = strategy or ctx.strategy
    rng = ctx.rng(experiment, "propose", attempt)
    space = ctx.task.space
    search = ctx.config.search
    population = _population(ctx, experiment, attempt) if strategy == "evolution" else []
    predicted = None
    # Parents other than the tournament (agents/parents.py), once the first population is evaluated.
    selector = (parents.pool(ctx, experiment, attempt)
                if strategy == "evolution" and search.parents != "tournament" and len(population) >= search.population
                else None)
    if selector is not None:
        chosen = selector.draw(ctx.task, rng)
        best = SimpleNamespace(**chosen)
        genome = space.mutate(best.genome, rng)
        motivation = f"{parents.describe(selector, chosen, ctx.task.metric)}; mutate one component"
        parent: int | None = best.id
        view = selector.ids
    elif strategy == "surrogate":
        from archlab.agents import surrogate

        pick = surrogate.propose(ctx, experiment, attempt, rng)
        genome, motivation, parent, predicted, view = (pick.genome, pick.motivation, pick.parent, pick.predicted,
                                                       pick.view)
        best = SimpleNamespace(genome=pick.parent_genome)
    elif strategy == "evolution" and len(population) >= search.population:
        contenders = rng.sample(population, search.tournament)
        best = ctx.task.ranked(contenders)[0]  # equal scores: the first drawn, as max() would
        genome = space.mutate(best.genome, rng)
        motivation = (f"tournament of {search.tournament} from the last {search.population} evaluated; "
                      f"#{best.id} won with {ctx.task.metric}={best.score:.4g}; mutate one component")
        parent = best.id
        view = [e.id for e in population]
    else:
        genome = space.sample(rng)
        why = ("random search" if strategy == "random"
               else f"initial population ({len(population)}/{search.population})")
        motivation, parent, view = f"{why}: uniform sample of the design space", None, [e.id for e in population]
    redraw = (lambda r: space.mutate(best.genome, r)) if parent is not None else space.sample
    genome, avoided = avoid_failures(ctx, experiment, attempt, genome, redraw)
    if avoided:
        motivation += f"; redrew {len(avoided)} candidate(s) too close to failures ({', '.join(avoided)})"
    proposal = {"name": space.describe(genome), "motivation": motivation,
                "design": space.describe(genome), "genome": genome, "parent_id": parent}
    if predicted is not None and not avoided:  # what the surrogate expected, to be held against the result
        proposal["predicted"] = predicted
    return proposal, view
