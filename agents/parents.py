"""Parent selection, one setting (`[search] parents`) shared by evolution, the surrogate's
mutants and the LLM researcher's "build on" parent:

    tournament  each strategy's own (the default, unchanged): evolution's tournament among the
                latest `population`, the surrogate's best 8, the LLM's campaign best
    islands     `islands` populations by experiment number, each a tournament of its own latest
                members; every `migrate_every` evaluated, each island takes its neighbour's best
    map_elites  an archive of the best experiment per cell of the task's descriptors
                (DesignSpace.descriptors: nb201 convolutions × skips, lm rule × feature map);
                the parent is a uniformly drawn cell's elite, so every niche keeps breeding
    ucb         a UCB1 bandit over the elites: a parent's reward is the share of its children
                that beat it (a failed child is a loss), plus an exploration bonus

Each step remembers its pool (ctx.remember, "parents"): a bounded list of rows, never the
whole history, so resume and replay draw the same parent from the same rows."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from archlab.agents.context import LabContext
from archlab.errors import ConfigError

UCB_ARMS = 16  # the bandit's arms: the best this many evaluated experiments


@dataclass
class Pool:
    """The rows one selection draws from: {"id", "score", "genome", ...} dicts, best first
    where the mode ranks them; `note` says in words what the pool is."""

    mode: str
    rows: list[dict[str, Any]]
    note: str = ""
    tournament: int = 1

    @property
    def ids(self) -> list[int]:
        return [r["id"] for r in self.rows]

    def draw(self, task: Any, rng: random.Random) -> dict[str, Any]:
        """One parent."""
        if self.mode == "map_elites":
            return rng.choice(self.rows)
        if self.mode == "ucb":
            return self.rows[0]  # ranked by the bound when built; ties by score
        contenders = rng.sample(self.rows, min(self.tournament, len(self.rows)))
        return task.ranked(contenders, lambda r: r["score"])[0]  # equal scores: the first drawn

    def elites(self, task: Any, k: int, rng: random.Random) -> list[dict[str, Any]]:
        """Up to k parents for a batch of mutants (the surrogate's pool)."""
        if self.mode == "map_elites":
            return rng.sample(self.rows, min(k, len(self.rows)))
        if self.mode == "ucb":
            return self.rows[:k]
        return task.ranked(self.rows, lambda r: r["score"], tiebreak=lambda r: r["id"])[:k]


def _row(e: Any, **extra: Any) -> dict[str, Any]:
    return {"id": e.id, "score": e.score, "genome": (e.proposal or {}).get("genome"), **extra}


def check_descriptors(task: Any) -> None:
    """map_elites needs the task's descriptors: refused up front, not at the first parent."""
    space = getattr(task, "space", None)
    if space is None or space.descriptors(space.sample(random.Random(0))) is None:
        raise ConfigError(f"[search] parents = \"map_elites\" needs descriptors, and task `{task.name}` declares none; "
                          "use tournament, islands or ucb")


def build(ctx: LabContext, experiment: int) -> Pool | None:
    """The pool under the campaign's setting; None for tournament (each strategy's own) and
    before there is anything to select from. The LLM's experiments need no genome, except in
    the archive (its cells are the genome's descriptors)."""
    search, task = ctx.config.search, ctx.task
    mode = search.parents
    genome = ctx.strategy != "llm" or mode == "map_elites"
    rows = ctx.evaluated(experiment, genome, order="finished, id") if mode != "tournament" else []
    if not rows:
        return None
    if mode == "map_elites":
        cells: dict[str, Any] = {}
        for e in task.ranked(rows, tiebreak=lambda e: e.id):
            cell = ", ".join(f"{k}={v}" for k, v in sorted(task.space.descriptors(e.proposal["genome"]).items()))
            cells.setdefault(cell, e)
        return Pool(mode, [_row(e, cell=c) for c, e in sorted(cells.items())],
                    f"MAP-Elites archive of {len(cells)} filled cells over {len(rows)} evaluated")
    if mode == "ucb":
        children: dict[int, list[bool]] = {}
        parent_score = {e.id: e.score for e in rows}
        for e in ctx.ledger.experiments(status=["done", "failed"]):
            if e.parent in parent_score and e.id != experiment and (e.proposal or {}).get("arm") != "control":
                won = e.status == "done" and e.score is not None and task.better(e.score, parent_score[e.parent])
                children.setdefault(e.parent, []).append(won)
        arms = task.ranked(rows, tiebreak=lambda e: e.id)[:UCB_ARMS]
        total = sum(len(children.get(e.id, [])) for e in arms)

        def bound(e: Any) -> float:
            kids = children.get(e.id, [])
            return (sum(kids) + 1) / (len(kids) + 2) + math.sqrt(2 * math.log(total + 1) / (len(kids) + 1))

        order = sorted(range(len(arms)), key=lambda i: (-round(bound(arms[i]), 12), i))
        return Pool(mode, [_row(arms[i], children=len(children.get(arms[i].id, [])),
                                wins=sum(children.get(arms[i].id, [])), ucb=round(bound(arms[i]), 6))
                           for i in order], f"UCB over the best {len(arms)} by their {total} children")
    # islands
    n, island = search.islands, experiment % search.islands
    mine = [e for e in rows if e.id % n == island][-search.population:]
    migrants = []
    boundary = (len(rows) // search.migrate_every) * search.migrate_every
    neighbour = [e for e in rows[:boundary] if e.id % n == (island - 1) % n]
    if neighbour:
        best = task.ranked(neighbour, tiebreak=lambda e: e.id)[0]
        if best not in mine:
            migrants = [best]
    if not mine:  # an island not yet settled: the whole latest population
        mine = rows[-search.population:]
    note = (f"island {island + 1} of {n}: its latest {len(mine)}"
            + (f" and #{migrants[0].id} migrated from island {(island - 1) % n + 1}" if migrants else ""))
    return Pool(mode, [_row(e) for e in [*mine, *migrants]], note, search.tournament)


def pool(ctx: LabContext, experiment: int, attempt: int) -> Pool | None:
    """The step's pool, remembered."""
    def compute() -> dict[str, Any] | None:
        p = build(ctx, experiment)
        return None if p is None else {"mode": p.mode, "rows": p.rows, "note": p.note, "tournament": p.tournament}

    value = ctx.remember(experiment, "parents", attempt, compute)
    return None if value is None else Pool(**value)


def describe(p: Pool, parent: dict[str, Any], metric: str) -> str:
    """Why this parent, in words (the proposal's motivation)."""
    what = f"#{parent['id']} ({metric}={parent['score']:.4g})"
    if p.mode == "map_elites":
        return f"{p.note}; drew the elite of cell [{parent['cell']}], {what}"
    if p.mode == "ucb":
        return (f"{p.note}; {what} has the highest bound {parent['ucb']:.3g} "
                f"({parent['wins']} of {parent['children']} children better)")
    return f"{p.note}; {what} won"
