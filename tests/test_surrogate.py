"""The surrogate strategy (agents/surrogate.py) through the real campaign loop: it ranks drawn
candidates before compute and finds better cells than random search for the same queries on a
landscape a model can learn; its proposals say what it predicted; it replays with zero divergence."""
from __future__ import annotations

import pytest

from archlab.campaign import Campaign
from archlab.config import load_config
from archlab.replay import replay


def _campaign(tmp_path, table, strategy: str, seed: int, budget: int, **search):
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / f"{strategy}-{seed}"), "task": {"name": "nb201", "table": str(table)},
        "budget": {"experiments": budget}, "memory": {"enabled": False},
        "search": {"strategy": strategy, "seed": seed, "baselines": False, "population": 6, **search}})
    campaign = Campaign.create(cfg)
    campaign.run()
    return campaign


def _best_val(campaign) -> float:
    return max(e.metrics["val_acc"] for e in campaign.ledger.experiments(status=["done"], origin=["campaign"]))


@pytest.mark.slow
def test_surrogate_finds_better_cells_than_random_for_the_same_queries(tmp_path, nb201_table):
    """The synthetic table's accuracy grows with the convolutions in a cell: a model learns it
    from a few evaluated cells, and spends the rest of the queries near the top."""
    for seed in range(3):
        surrogate = _campaign(tmp_path, nb201_table, "surrogate", seed, 24)
        random = _campaign(tmp_path, nb201_table, "random", seed, 24)
        assert _best_val(surrogate) > _best_val(random), f"seed {seed}"
        rows = surrogate.ledger.experiments(origin=["campaign"])
        guided = [e for e in rows if (e.proposal or {}).get("predicted")]
        assert len(guided) >= 24 - 6 - 2, "past the warm-up every pick but the exploration ones is predicted"
        assert all("surrogate" in e.proposal["motivation"] for e in rows)
        assert any(e.parent is not None for e in guided) and any(e.parent is None for e in rows[6:]), \
            "it mutates elites and still samples fresh cells"


def test_the_surrogate_searches_the_untried_neighbours_of_the_best_so_far(tmp_path, nb201_table):
    """The default candidates: each model-ranked pick changes one edge of the best experiment evaluated
    before it whose neighbours were not all tried yet; every tenth pick is a fresh sample instead."""
    campaign = _campaign(tmp_path, nb201_table, "surrogate", 3, 30)
    space = campaign.ctx.task.space
    rows = campaign.ledger.experiments(origin=["campaign"], order="id")
    by_id = {e.id: e for e in rows}
    tried: set[str] = set()
    neighbour_picks = 0
    for n, e in enumerate(rows):
        before = rows[:n]
        if n >= 6 and e.parent is not None:
            parent = by_id[e.parent]
            assert sum(a != b for a, b in zip(parent.proposal["genome"]["edges"], e.proposal["genome"]["edges"],
                                              strict=True)) == 1
            better = [b for b in before if b.score > parent.score]
            assert all(all(str(g) in tried for g in space.neighbours(b.proposal["genome"])) for b in better), \
                f"#{e.id} left a better experiment's neighbourhood untried"
            assert "untried neighbour" in e.proposal["motivation"]
            neighbour_picks += 1
        tried.add(str(e.proposal["genome"]))
    assert neighbour_picks >= 30 - 6 - 3
    assert sum(e.parent is None for e in rows[6:]) >= 2, "exploration: fresh samples past the warm-up"


def test_the_surrogate_learns_from_the_workspace_s_other_campaigns_of_the_same_task(tmp_path, nb201_table):
    """A second campaign in the workspace fits its model on the first one's results too (same task
    settings only), says so, remembers them, and replays with zero divergence after more campaigns ran."""
    def run(seed: int, budget: int, dataset: str = "cifar10"):
        cfg = load_config(None, env={}, overrides={
            "workspace": str(tmp_path / "ws"), "task": {"name": "nb201", "table": str(nb201_table), "dataset": dataset},
            "budget": {"experiments": budget}, "memory": {"enabled": False},
            "search": {"strategy": "surrogate", "seed": seed, "baselines": False, "population": 6}})
        campaign = Campaign.create(cfg)
        campaign.run()
        return campaign

    first = run(0, 10)
    other_task = run(1, 8, dataset="cifar100")
    second = run(2, 9)
    priors = [ev["data"]["value"] for ev in second.ledger.events(kind="seen.surrogate_prior")]
    assert priors, "past the warm-up each model-ranked step remembers the workspace's rows it fitted on"
    assert all({r["campaign"] for r in p} == {first.folder.id} and len(p) == 10 for p in priors), \
        "only the campaign with the same task settings, all of its evaluated experiments"
    guided = [e for e in second.ledger.experiments(origin=["campaign"]) if (e.proposal or {}).get("predicted")]
    assert guided and all("+10 from the workspace's other campaigns" in e.proposal["motivation"] for e in guided)
    elsewhere = other_task.ledger.events(kind="seen.surrogate_prior")
    assert elsewhere and all(ev["data"]["value"] == [] for ev in elsewhere), "another dataset's scores stay out"
    run(3, 6)  # a later campaign: the replay must not see it
    report = replay(tmp_path / "ws", second.folder.id)
    assert report.ok, str(report.divergence)


def test_a_local_search_that_stops_improving_starts_again_from_a_fresh_sample(tmp_path, nb201_table):
    """[search] restart_after = S: once S evaluated experiments in a row have not beaten the local search's
    best, the next experiment is an untried uniform sample, and the neighbours searched after it are those
    of the new search's own experiments. It replays with zero divergence."""
    after = 5
    campaign = _campaign(tmp_path, nb201_table, "surrogate", 2, 40, restart_after=after)
    rows = campaign.ledger.experiments(status=["done"], origin=["campaign"], order="id")
    starts, since, best, stale = [], rows[0].id, rows[0].score, 0
    for e in rows[1:]:
        if since is None:  # S without improvement: this one starts the next local search
            assert "a new one starts from a uniform sample" in e.proposal["motivation"] and e.parent is None
            starts.append(e.id)
            since, best, stale = e.id, e.score, 0
            continue
        assert "a new one starts" not in e.proposal["motivation"]
        if e.parent is not None:
            assert e.parent >= since, f"#{e.id} searched the neighbours of #{e.parent}, before this search began"
        stale = 0 if e.score > best else stale + 1
        best = max(best, e.score)
        if stale >= after:
            since = None
    assert len(starts) >= 2, "the synthetic landscape's top is found fast, so the search restarts"
    genomes = [str(e.proposal["genome"]) for e in rows]
    assert len(set(genomes)) == len(genomes), "a restart never repeats a tried cell"
    report = replay(tmp_path / "surrogate-2", campaign.folder.id)
    assert report.ok, str(report.divergence)


def test_a_campaign_from_before_the_candidates_setting_keeps_its_random_mutants(tmp_path, nb201_table):
    """A surrogate campaign recorded before [search] candidates and learn_from_workspace existed drew random
    mutants from its own results; resume and replay must take the same steps, so its config reads so."""
    import json

    campaign = _campaign(tmp_path, nb201_table, "surrogate", 1, 2)
    data = json.loads(campaign.folder.config.read_text())
    assert data["search"]["candidates"] == "neighbours"
    del data["search"]["candidates"], data["search"]["learn_from_workspace"], data["search"]["restart_after"]
    campaign.folder.config.write_text(json.dumps(data))
    reopened = Campaign.open(tmp_path / "surrogate-1", campaign.folder.id)
    assert reopened.config.search.candidates == "mutants" and not reopened.config.search.learn_from_workspace
    assert reopened.config.search.restart_after == 0, "one local search, as it ran"


@pytest.mark.parametrize("task", ["nb201", "lm"])
def test_a_space_s_neighbours_are_exactly_what_one_mutation_reaches(task, nb201_table):
    import json
    import random

    from archlab.tasks import get_task

    space = get_task(task, {"table": str(nb201_table)} if task == "nb201" else {}).space
    rng = random.Random(0)
    for _ in range(5):
        genome = space.sample(rng)
        near = [json.dumps(g, sort_keys=True) for g in space.neighbours(genome)]
        assert len(near) == len(set(near)) and json.dumps(genome, sort_keys=True) not in near
        assert {json.dumps(space.mutate(genome, rng), sort_keys=True) for _ in range(400)} == set(near)


@pytest.mark.parametrize("acquisition,candidates", [("greedy", "neighbours"), ("ei", "neighbours"),
                                                    ("greedy", "mutants")])
def test_surrogate_campaign_replays_with_zero_divergence(tmp_path, nb201_table, acquisition, candidates):
    campaign = _campaign(tmp_path, nb201_table, "surrogate", 7, 14, parallel=3, acquisition=acquisition,
                         candidates=candidates)
    report = replay(tmp_path / "surrogate-7", campaign.folder.id)
    assert report.ok, str(report.divergence)
    assert len(report.experiments) == len(campaign.ledger.experiments())
    remembered = [ev for ev in campaign.ledger.events(kind="seen.surrogate_history")]
    assert remembered, "the evaluated set each step fitted on is remembered, so a replay needs nothing later"


def test_past_its_fitting_window_the_surrogate_still_never_repeats_an_evaluated_cell(tmp_path, nb201_table,
                                                                                     monkeypatch):
    """The model fits on at most HISTORY experiments; the cells left out of that window are still
    tried ones. Were they forgotten, the best's neighbourhood would offer them again, the gate would
    refuse each on every attempt and the campaign would fail its remaining experiments."""
    from archlab.agents import surrogate

    monkeypatch.setattr(surrogate, "HISTORY", 8)
    campaign = _campaign(tmp_path, nb201_table, "surrogate", 5, 40)
    counts = campaign.ledger.counts()
    assert counts.get("done") == 40 and not counts.get("failed"), counts
    genomes = [str(e.proposal["genome"]) for e in campaign.ledger.experiments(status=["done"], origin=["campaign"])]
    assert len(set(genomes)) == len(genomes)
    assert any(ev["data"]["value"] for ev in campaign.ledger.events(kind="seen.surrogate_tried")), \
        "the tried cells outside the window are remembered"
    report = replay(tmp_path / "surrogate-5", campaign.folder.id)
    assert report.ok, str(report.divergence)
