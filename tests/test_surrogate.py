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


@pytest.mark.parametrize("acquisition", ["greedy", "ei"])
def test_surrogate_campaign_replays_with_zero_divergence(tmp_path, nb201_table, acquisition):
    campaign = _campaign(tmp_path, nb201_table, "surrogate", 7, 14, parallel=3, acquisition=acquisition)
    report = replay(tmp_path / "surrogate-7", campaign.folder.id)
    assert report.ok, str(report.divergence)
    assert len(report.experiments) == len(campaign.ledger.experiments())
    remembered = [ev for ev in campaign.ledger.events(kind="seen.surrogate_history")]
    assert remembered, "the evaluated set each step fitted on is remembered, so a replay needs nothing later"
