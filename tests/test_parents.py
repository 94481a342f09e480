"""Parent selection beyond tournaments ([search] parents, agents/parents.py) through the real
campaign loop: islands keep their own lineages and migrate, MAP-Elites breeds from every niche
of the task's descriptors, the UCB bandit prefers parents whose children improve; each replays
with zero divergence. And several LLM ideas per experiment ([search] proposals_per_step,
agents/ideas.py): the gate and the surrogate rank them before anything is coded."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import synthetic_accuracy

from archlab.campaign import Campaign
from archlab.config import load_config
from archlab.errors import ConfigError
from archlab.replay import replay
from archlab.tasks.nb201.arch import OPS, genome_to_arch


def _campaign(tmp_path: Path, table: Path, budget: int = 24, strategy: str = "evolution", **search):
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(table)},
        "budget": {"experiments": budget}, "memory": {"enabled": False},
        "search": {"strategy": strategy, "seed": 3, "baselines": False, "population": 6, "parallel": 2, **search}})
    campaign = Campaign.create(cfg)
    campaign.run()
    return campaign


def _pools(campaign) -> dict[int, dict]:
    return {ev["experiment"]: ev["data"]["value"] for ev in campaign.ledger.events(kind="seen.parents")}


def _replays(tmp_path: Path, campaign) -> None:
    report = replay(tmp_path / "runs", campaign.folder.id)
    assert report.ok, str(report.divergence)
    assert len(report.experiments) == len(campaign.ledger.experiments())


def test_map_elites_breeds_from_every_niche_and_replays(tmp_path, nb201_table):
    campaign = _campaign(tmp_path, nb201_table, parents="map_elites", parallel=1)  # one at a time: a known archive
    space, pools = campaign.ctx.task.space, _pools(campaign)
    assert pools, "past the first population every parent comes from the archive"
    for exp, pool in pools.items():
        cells = [r["cell"] for r in pool["rows"]]
        assert len(cells) == len(set(cells)), "one elite per cell"
        before = [e for e in campaign.ledger.experiments(status=["done"]) if e.id < exp]
        archive: dict[str, float] = {}
        for e in before:
            d = space.descriptors(e.proposal["genome"])
            cell = f"convs={d['convs']}, skips={d['skips']}"
            archive[cell] = max(archive.get(cell, -1e9), e.score)
        assert {r["cell"]: r["score"] for r in pool["rows"]} == archive, "each filled cell's best, and only those"
    parents = [campaign.ledger.get(e.parent) for e in campaign.ledger.experiments() if e.parent is not None]
    niches = {json.dumps(space.descriptors(p.proposal["genome"]), sort_keys=True) for p in parents}
    assert len(niches) >= 4, f"parents from {len(niches)} niches only"
    assert all("MAP-Elites archive" in e.proposal["motivation"] for e in campaign.ledger.experiments()
               if e.parent is not None)
    _replays(tmp_path, campaign)


def test_islands_keep_their_lineages_migrate_and_replay(tmp_path, nb201_table):
    campaign = _campaign(tmp_path, nb201_table, budget=30, parents="islands", islands=3, migrate_every=6)
    pools = _pools(campaign)
    migrations = 0
    for exp, pool in pools.items():
        own = [r for r in pool["rows"] if r["id"] % 3 == exp % 3]
        foreign = [r for r in pool["rows"] if r["id"] % 3 != exp % 3]
        if own:
            assert len(foreign) <= 1, "an island holds its own members and at most one migrant"
        migrations += bool(own and foreign)
        if foreign and own:
            assert "migrated from island" in pool["note"] and foreign[0]["id"] % 3 == (exp - 1) % 3
        parent = campaign.ledger.get(exp).parent
        assert parent in {r["id"] for r in pool["rows"]}
    assert migrations >= 3
    _replays(tmp_path, campaign)


def test_the_ucb_bandit_prefers_parents_whose_children_improve_and_replays(tmp_path, nb201_table):
    campaign = _campaign(tmp_path, nb201_table, parents="ucb")
    ledger = campaign.ledger
    for exp, pool in _pools(campaign).items():
        bounds = [r["ucb"] for r in pool["rows"]]
        assert bounds == sorted(bounds, reverse=True)
        assert ledger.get(exp).parent == pool["rows"][0]["id"], "the arm with the highest bound is the parent"
        for r in pool["rows"]:
            kids = [e for e in ledger.experiments(status=["done", "failed"]) if e.parent == r["id"] and e.id != exp]
            assert r["children"] <= len(kids) and r["wins"] <= r["children"]
    counts = [r["children"] for pool in _pools(campaign).values() for r in pool["rows"]]
    assert max(counts) >= 2, "the bandit comes back to a parent"
    _replays(tmp_path, campaign)


def test_the_surrogate_mutates_the_archives_elites(tmp_path, nb201_table):
    campaign = _campaign(tmp_path, nb201_table, budget=14, strategy="surrogate", parents="map_elites")
    guided = [e for e in campaign.ledger.experiments() if e.parent is not None]
    assert guided and all("MAP-Elites" in e.proposal["motivation"] for e in guided)
    _replays(tmp_path, campaign)


def test_map_elites_needs_descriptors(tmp_path):
    cfg = load_config(None, env={}, overrides={"workspace": str(tmp_path / "runs"), "task": {"name": "noise"},
                                               "search": {"parents": "map_elites"}})
    with pytest.raises(ConfigError, match="needs descriptors.*use tournament, islands or ucb"):
        Campaign.create(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- several LLM ideas per experiment -------------------------------------------------------------

def _ideas_rules(experiments: int, seed: int = 0) -> tuple[list[dict], dict[int, list[list[str]]]]:
    """Three designed cells per experiment, in random order of quality."""
    rng, rules, offered = random.Random(seed), [], {}
    for exp in range(1, experiments + 1):
        cells = [[rng.choice(OPS) for _ in range(6)] for _ in range(3)]
        offered[exp] = cells
        ideas = [{"name": f"cell-{exp}-{i}", "motivation": "try these ops", "design": " ".join(c),
                  "genome": {"edges": c}} for i, c in enumerate(cells)]
        rules.append({"step": "research:0", "experiment": exp, "response": json.dumps({"ideas": ideas})})
    rules.append({"step": "analyse:0", "response": "Convolutions help."})
    return rules, offered


def _llm_campaign(tmp_path: Path, table: Path, rules: list[dict], budget: int, **over):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": rules}))
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(table)},
        "llm": {"model": f"scripted/{script}", "code_from_design": True}, "budget": {"experiments": budget},
        "memory": {"enabled": False},
        "search": {"baselines": False, "proposals_per_step": 3, "seed": 1, **over}})
    campaign = Campaign.create(cfg)
    campaign.run()
    return campaign


def test_the_surrogate_picks_the_most_promising_of_the_models_ideas(tmp_path, nb201_table):
    budget = 16
    rules, offered = _ideas_rules(budget)
    campaign = _llm_campaign(tmp_path, nb201_table, rules, budget)
    ledger = campaign.ledger
    rankings = {ev["experiment"]: ev["data"]["value"] for ev in ledger.events(kind="seen.ideas")}
    assert sorted(rankings) == list(range(1, budget + 1))
    chosen_gain, offered_gain = [], []
    for exp, ranking in rankings.items():
        e = ledger.get(exp)
        assert e.status == "done"
        assert e.proposal["genome"]["edges"] == offered[exp][ranking["chosen"]]
        assert [a["name"] for a in e.proposal["alternatives"]] == [
            f"cell-{exp}-{i}" for i in range(3) if i != ranking["chosen"]]
        if ranking["features"] == "genome":  # fitted: the pick has the best predicted score
            means = [r["mean"] for r in ranking["ideas"]]
            assert means[ranking["chosen"]] == max(means)
            assert e.proposal["predicted"]["mean"] == max(means)
            truth = [synthetic_accuracy(genome_to_arch({"edges": c}))[0] for c in offered[exp]]
            chosen_gain.append(truth[ranking["chosen"]])
            offered_gain.append(sum(truth) / 3)
        else:
            assert ranking["chosen"] == 0 and "predicted" not in e.proposal
    assert len(chosen_gain) >= budget - 5
    assert sum(chosen_gain) / len(chosen_gain) > sum(offered_gain) / len(offered_gain) + 1.0, \
        "the filter trains better cells than the model's ideas on average"
    # the model is told how its past predictions turned out
    calls = [json.loads(line) for line in campaign.folder.llm_log.read_text().splitlines()]
    last = next(c for c in calls if c["experiment"] == budget and c["step"] == "research:0")
    prompt = last["request"]["messages"][-1]["content"]
    assert "What the lab's predictor expected of your past ideas" in prompt and "Propose up to 3" in prompt
    _replays(tmp_path, campaign)


def test_a_second_campaign_ranks_its_first_ideas_on_what_the_workspace_learnt(tmp_path, nb201_table):
    """[search] learn_from_workspace: the ideas' model also fits on the workspace's other campaigns of the
    same task settings, so a second campaign ranks its ideas from its first experiment on (alone it needs 4
    of its own), and replays with zero divergence after a later campaign ran."""
    first = _llm_campaign(tmp_path, nb201_table, _ideas_rules(8, seed=0)[0], 8)
    rules, offered = _ideas_rules(3, seed=1)
    second = _llm_campaign(tmp_path, nb201_table, rules, 3)
    alone = _llm_campaign(tmp_path, nb201_table, rules, 3, learn_from_workspace=False)
    for exp in (1, 2, 3):
        ranking = second.ledger.events(experiment=exp, kind="seen.ideas")[-1]["data"]["value"]
        assert ranking["features"] == "genome" and ranking["fitted_on"] == exp - 1
        assert ranking["prior"] == len(first.ledger.experiments(status=["done"])) == 8
        means = [r["mean"] for r in ranking["ideas"]]
        assert means[ranking["chosen"]] == max(means)
        assert second.ledger.get(exp).proposal["genome"]["edges"] == offered[exp][ranking["chosen"]]
        unranked = alone.ledger.events(experiment=exp, kind="seen.ideas")[-1]["data"]["value"]
        assert unranked["features"] == "none" and "prior" not in unranked and unranked["chosen"] == 0
    _llm_campaign(tmp_path, nb201_table, _ideas_rules(2, seed=2)[0], 2)  # a later campaign: the replay must not see it
    _replays(tmp_path, second)


def test_an_idea_the_gate_would_refuse_is_ranked_last(tmp_path, nb201_table):
    """Experiment 2 offers #1's cell again first: the gate's hash would refuse it, so it is not the pick."""
    cell = ["nor_conv_3x3"] * 6
    other = ["skip_connect", "nor_conv_1x1", "none", "avg_pool_3x3", "nor_conv_3x3", "none"]
    one = {"name": "deep", "motivation": "m", "design": "all 3x3", "genome": {"edges": cell}}
    rules = [{"step": "research:0", "experiment": 1, "response": json.dumps({"ideas": [one]})},
             {"step": "research:0", "experiment": 2, "response": json.dumps({"ideas": [
                 {**one, "name": "deep-again"}, {"name": "mixed", "motivation": "m", "design": "d",
                                                 "genome": {"edges": other}}]})},
             {"step": "analyse:0", "response": "ok"}]
    campaign = _llm_campaign(tmp_path, nb201_table, rules, 2)
    second = campaign.ledger.get(2)
    assert second.status == "done" and second.proposal["genome"]["edges"] == other
    assert second.proposal["alternatives"][0]["refused"] == "the same design as #1"
    # the experiment's page says which ideas were not chosen, and why
    from fastapi.testclient import TestClient

    from archlab.web.app import create_app

    client = TestClient(create_app(tmp_path / "runs", campaign.config), base_url="http://127.0.0.1")
    page = client.get(f"/c/{campaign.folder.id}/e/2")
    assert page.status_code == 200
    assert "Ideas not chosen" in page.text
    assert "deep-again — the gate would refuse it: the same design as #1" in page.text


def test_when_every_idea_repeats_the_past_the_researcher_is_asked_again_before_any_code(tmp_path, nb201_table):
    cell = ["nor_conv_3x3"] * 6
    other = ["skip_connect", "nor_conv_1x1", "none", "avg_pool_3x3", "nor_conv_3x3", "none"]
    one = {"name": "deep", "motivation": "m", "design": "all 3x3", "genome": {"edges": cell}}
    rules = [{"step": "research:0", "experiment": 1, "response": json.dumps({"ideas": [one]})},
             {"step": "research:0", "experiment": 2, "response": json.dumps({"ideas": [{**one, "name": "again"}]})},
             {"step": "research:1", "experiment": 2, "response": json.dumps({"ideas": [
                 {"name": "mixed", "motivation": "m", "design": "d", "genome": {"edges": other}}]})},
             {"step": "analyse:0", "response": "ok"}]
    campaign = _llm_campaign(tmp_path, nb201_table, rules, 2)
    second = campaign.ledger.get(2)
    assert second.status == "done" and second.proposal["genome"]["edges"] == other
    refused = campaign.ledger.events(experiment=2, kind="gate.ideas_refused")
    assert len(refused) == 1 and refused[0]["data"]["neighbour"] == 1
    assert not campaign.ledger.events(experiment=2, kind="gate.duplicate"), "refused before code and the gate"
    calls = [json.loads(line) for line in campaign.folder.llm_log.read_text().splitlines()]
    retry = next(c for c in calls if c["experiment"] == 2 and c["step"] == "research:1")
    prompt = retry["request"]["messages"][-1]["content"]
    assert "the idea repeats a past experiment; the most promising, 'again', is the same design as #1" in prompt
    _replays(tmp_path, campaign)


def test_ideas_without_a_design_are_ranked_by_their_text(tmp_path, nb201_table):
    """Free-form ideas (no genome): the surrogate reads their sentence embedding, and an idea whose
    text repeats a past experiment is a near duplicate, ranked last."""
    from test_llm_campaign import CELL_A, CELL_B, CELL_C, code

    cells = [CELL_A, CELL_B, CELL_C, CELL_A.replace("ops.skip_connect(x0)", "ops.none(x0)"),
             CELL_B.replace("ops.nor_conv_3x3(x1)\n    return", "ops.nor_conv_1x1(x1)\n    return")]

    def idea(name: str) -> dict:
        return {"name": name, "motivation": f"{name} motivation", "design": f"{name} design"}

    rules = [{"step": "analyse:0", "response": "ok"}]
    for exp, cell in enumerate(cells, 1):
        ideas = [idea(f"idea-{exp}")] if exp < 5 else [idea("idea-1"), idea("idea-5")]  # #1's text again first
        rules += [{"step": "research:0", "experiment": exp, "response": json.dumps({"ideas": ideas})},
                  {"step": "code:0", "experiment": exp, "response": code(cell)}]
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": rules}))
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "llm": {"model": f"scripted/{script}"}, "budget": {"experiments": 5}, "memory": {"embeddings": "hash"},
        "search": {"baselines": False, "proposals_per_step": 2}})
    campaign = Campaign.create(cfg)
    campaign.run()
    last = next(ev["data"]["value"] for ev in campaign.ledger.events(experiment=5, kind="seen.ideas"))
    assert last["features"] == "text" and last["fitted_on"] == 4
    assert last["ideas"][0]["refused"].startswith("a near duplicate of #1 'idea-1'")
    assert campaign.ledger.get(5).name == "idea-5" and campaign.ledger.get(5).status == "done"
