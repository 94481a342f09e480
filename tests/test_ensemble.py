"""Model ensembles ([llm] models): the bandit gives each experiment one model, by
improvements per dollar; the pick survives a pause and resume and is reproduced by
replay; the report, `show` and the chat say what each model yielded."""
from __future__ import annotations

import itertools
import json
import random
import subprocess
from pathlib import Path

import pytest
from conftest import ARCHLAB, OPS, arch_string, synthetic_accuracy

from archlab.campaign import Campaign
from archlab.config import load_config
from archlab.errors import ConfigError
from archlab.llm import ensemble
from archlab.llm.ensemble import ModelYield, choices, pick, yields
from archlab.memory.ledger import Ledger
from archlab.tasks import get_task

USAGE = {"prompt_tokens": 1000, "completion_tokens": 200}  # priced as gpt-4.1: $0.0036 a call


def _val(edges: tuple[str, ...]) -> float:
    return synthetic_accuracy(arch_string(edges))[0]


def designs(n: int) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(good, bad): n distinct cells each. The good ones rise strictly and all beat every bad
    one, so each good proposal improves on everything before it and no bad one ever does."""
    no_none = sorted((e for e in itertools.product(OPS[1:], repeat=6)), key=_val)  # 'none' cells act alike
    bad = [e for e in no_none if e.count("avg_pool_3x3") == 5][:n]
    top = [e for e in no_none if _val(e) > max(map(_val, bad)) + 5]
    step = len(top) // n
    good = [top[i * step] for i in range(n)]
    assert len(bad) == n and all(_val(a) < _val(b) for a, b in itertools.pairwise(good))
    return good, bad


def script(path: Path, cells: list[tuple[str, ...]], name: str, outage: int | None = None) -> Path:
    """A model that proposes cells[e - 1] for experiment e (whichever experiments it is given)
    and writes its code; `outage`: that experiment's code call is rate-limited."""
    space = get_task("nb201").space
    rules: list[dict] = []
    for e, edges in enumerate(cells, 1):
        genome = {"edges": list(edges)}
        body = {"name": f"{name}-{e}", "motivation": f"{name}'s idea {e}", "design": f"{name} cell {e}",
                "parent_id": None, "genome": genome}
        rules.append({"step": "research:0", "experiment": e, "response": f"```json\n{json.dumps(body)}\n```",
                      "usage": USAGE, "priced_as": "gpt-4.1"})
        if e == outage:
            rules.append({"step": "code:0", "experiment": e, "status": 429, "error": "slow down"})
        rules.append({"step": "code:0", "experiment": e, "usage": USAGE, "priced_as": "gpt-4.1",
                      "response": "```python\n" + space.render(genome) + "```"})
    rules.append({"step": "analyse:0", "response": "noted", "usage": USAGE, "priced_as": "gpt-4.1"})
    path.write_text(json.dumps({"rules": rules}))
    return path


def ensemble_config(tmp_path: Path, table: Path, n: int, outage: int | None = None, **over) -> dict:
    good, bad = designs(n)
    good_model = f"scripted/{script(tmp_path / 'good.json', good, 'good', outage)}"
    bad_model = f"scripted/{script(tmp_path / 'bad.json', bad, 'bad', outage)}"
    return {"workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(table)},
            "llm": {"models": [bad_model, good_model], "retries": 0, "backoff_s": 0.0},
            "budget": {"experiments": n}, "search": {"baselines": False}, "memory": {"enabled": False}, **over}


def calls(folder) -> list[dict]:
    return [json.loads(line) for line in folder.llm_log.read_text().splitlines()]


def models_by_experiment(folder) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for c in calls(folder):
        if c["experiment"] is not None:
            out.setdefault(c["experiment"], set()).add(c["model"])
    return out


# -- (a) one model always better: it gets the experiments; the record says so -------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory, nb201_table):
    tmp = tmp_path_factory.mktemp("ensemble")
    cfg = load_config(None, env={}, overrides=ensemble_config(tmp, nb201_table, 8))
    campaign = Campaign.create(cfg)
    campaign.run()
    return campaign


def test_the_better_model_gets_most_experiments_after_the_first_round(finished):
    bad, good = finished.config.llm.models
    picks = choices(finished.ledger)
    assert [picks[e]["model"] for e in (1, 2)] == [bad, good], "each model once first, in the order listed"
    later = [picks[e]["model"] for e in range(3, 9)]
    assert later.count(good) >= 5, later
    # every call of an experiment went to the model it was given: researcher, coder and analyst alike
    by_exp = models_by_experiment(finished.folder)
    assert all(by_exp[e] == {picks[e]["model"]} for e in range(1, 9)), by_exp
    assert {c["step"] for c in calls(finished.folder) if c["experiment"] == 3} == {"research:0", "code:0", "analyse:0"}


def test_the_yield_table_counts_each_models_experiments_and_cost(finished, tmp_path):
    bad, good = finished.config.llm.models
    picks = choices(finished.ledger)
    mine = {m: [e for e, p in picks.items() if p["model"] == m] for m in (bad, good)}
    usd = {m: sum(c["cost_usd"] for c in calls(finished.folder) if c["model"] == m) for m in (bad, good)}
    assert usd[good] == pytest.approx(0.0036 * 3 * len(mine[good]))  # research, code, analyse: priced
    from archlab.analysis.campaign_reader import CampaignReader

    record = {y.model: y for y in CampaignReader.open(finished.folder).model_yields()}
    assert (record[good].experiments, record[good].valid) == (len(mine[good]), len(mine[good]))
    assert record[good].improvements == len(mine[good]), "each good cell beat everything before it"
    assert (record[bad].experiments, record[bad].improvements) == (len(mine[bad]), 0)
    assert record[good].cost == pytest.approx(usd[good]) and record[bad].cost == pytest.approx(usd[bad])
    assert not record[good].local and record[good].yield_ == pytest.approx(len(mine[good]) / usd[good])

    from archlab.analysis.report import build_report

    md = build_report(finished.folder, tmp_path / "report").markdown.read_text()
    section = md.split("## Models", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `"): [c.strip() for c in line.split("|")[2:-1]]
            for line in section.splitlines() if line.startswith("| `")}
    assert rows[good][:3] == [str(len(mine[good]))] * 3 and rows[bad][2] == "0"
    assert rows[good][4] == f"{usd[good]:.4f}" and "(local)" not in rows[bad][6]
    assert "with an ensemble of" in md


def test_show_and_the_chat_say_which_model_did_best(finished, cli_env):
    bad, good = finished.config.llm.models
    ws = str(finished.folder.root.parent)
    res = subprocess.run([*ARCHLAB, "show", finished.folder.id, "--json", "--workspace", ws],
                         capture_output=True, text=True, env=cli_env)
    assert res.returncode == 0, res.stderr
    shown = {m["model"]: m for m in json.loads(res.stdout)["models"]}
    assert shown[good]["improvements"] > 0 and shown[bad]["improvements"] == 0
    from archlab.analysis.chat import retrieval_answer
    from archlab.analysis.chat_tools import Lab, call_tool

    lab = Lab(Path(ws), finished.folder.id)
    found = call_tool(lab, "model_yield", {})["campaigns"][0]
    assert found["best_yield"] == good
    answer = retrieval_answer(lab, "which model did best?").text
    assert f"Best yield: {good}." in answer and f"{bad}: {shown[bad]['experiments']} experiments" in answer
    # and the campaign's web page
    from fastapi.testclient import TestClient

    from archlab.web.app import create_app

    page = TestClient(create_app(Path(ws), finished.config), base_url="http://127.0.0.1").get(
        f"/c/{finished.folder.id}").text
    table = page[page.index('<table id="models">'):]
    table = table[:table.index("</table>")]
    assert good in table and bad in table and f"<td>{shown[good]['improvements']}</td>" in table


# -- (b) a pause and resume keep each experiment's model; replay reproduces every pick --------------------

def test_resume_keeps_the_pick_and_replay_reproduces_it(tmp_path, nb201_table, monkeypatch):
    from archlab.replay import replay

    over = ensemble_config(tmp_path, nb201_table, 5, outage=3)
    campaign = Campaign.create(load_config(None, env={}, overrides=over))
    summary = campaign.run()
    assert summary.paused == "unreachable" and campaign.ledger.get(3).status == "running"
    given = choices(campaign.ledger)[3]["model"]
    other = next(m for m in campaign.config.llm.models if m != given)

    ensemble_config(tmp_path, nb201_table, 5)  # the provider is back
    with monkeypatch.context() as m:  # the bandit would now say otherwise: the paused experiment must not care
        m.setattr(ensemble, "pick", lambda models, record, rng: other)
        resumed = Campaign.open(tmp_path / "runs", campaign.folder.id)
        resumed.run()
    rows = {e.id: e.status for e in resumed.ledger.experiments()}
    assert rows == {i: "done" for i in range(1, 6)}, rows
    by_exp = models_by_experiment(resumed.folder)
    assert by_exp[3] == {given}, "research before the pause and code after it: one model"
    assert by_exp[4] == by_exp[5] == {other}, "new experiments took the (forced) pick"
    assert len(resumed.ledger.events(3, "seen.model")) == 1, "the pick was read back, not made again"

    report = replay(tmp_path / "runs", campaign.folder.id)
    assert report.ok, str(report.divergence)
    assert report.experiments == [1, 2, 3, 4, 5]
    replayed = Ledger(tmp_path / "runs" / report.replay / "ledger.sqlite")
    assert choices(replayed) == choices(resumed.ledger)


# -- the rule, and what a local model costs ----------------------------------------------------------------

def test_the_bandit_tries_each_model_once_then_prefers_improvements_per_dollar():
    a, b = ModelYield("x/a", picked=1), ModelYield("x/b")
    assert pick(["x/a", "x/b"], [a, b], random.Random(0)) == "x/b", "an untried model first"
    # the same improvement rate, one ten times the price: the cheap one gets most experiments
    dear = ModelYield("x/dear", picked=10, experiments=10, improvements=3, cost=1.0)
    cheap = ModelYield("x/cheap", picked=10, experiments=10, improvements=3, cost=0.1)
    got = [pick(["x/dear", "x/cheap"], [dear, cheap], random.Random(s)) for s in range(200)]
    assert got.count("x/cheap") > 150
    # the same price, one improving twice as often: it gets most
    often = ModelYield("x/often", picked=20, experiments=20, improvements=8, cost=1.0)
    rare = ModelYield("x/rare", picked=20, experiments=20, improvements=2, cost=1.0)
    got = [pick(["x/rare", "x/often"], [rare, often], random.Random(s)) for s in range(200)]
    assert got.count("x/often") > 150


def test_a_local_model_is_billed_by_its_seconds(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for model in ("openai/gpt-4.1", "ollama/qwen"):
        exp = ledger.allocate("campaign")
        ledger.event(exp, "seen.model", {"attempt": 0, "value": {"model": model, "incumbent": 50.0}})
        ledger.update(exp, status="done", score=60.0 if model.startswith("ollama") else 40.0)
    log = tmp_path / "llm.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in (
        {"experiment": 1, "model": "openai/gpt-4.1", "cost_usd": 0.02, "latency_s": 3.0},
        {"experiment": 2, "model": "ollama/qwen", "cost_usd": 0.0, "latency_s": 90.0},
        {"experiment": 2, "model": "ollama/qwen", "cost_usd": 0.0, "latency_s": 90.0},
        {"experiment": None, "model": "ollama/qwen", "step": "chat:0:0", "cost_usd": 0.0, "latency_s": 500.0})))
    hosted, local = yields(["openai/gpt-4.1", "ollama/qwen"], ledger, get_task("nb201"),
                           ensemble.CallTally(log).update(), usd_per_hour=2.0)
    assert (hosted.cost, hosted.local, hosted.improvements) == (0.02, False, 0)  # 40 did not beat 50
    assert local.local and local.cost == pytest.approx(180 * 2.0 / 3600)         # the chat's call is no experiment's
    assert local.improvements == 1 and local.gain == pytest.approx(10.0)
    assert local.yield_ == pytest.approx(1 / local.cost)


# -- (c) settings ----------------------------------------------------------------------------------------------

def test_models_make_an_ensemble_and_a_bad_entry_is_named(cli_env, tmp_path):
    cfg = load_config(None, env={"ARCHLAB_LLM_MODELS": "openai/gpt-4.1,ollama/qwen2.5-coder"})
    assert cfg.strategy == "llm" and cfg.llm.ensemble == ["openai/gpt-4.1", "ollama/qwen2.5-coder"]
    assert cfg.llm.default_model == "openai/gpt-4.1"
    with pytest.raises(ConfigError) as err:
        load_config(None, env={}, overrides={"llm": {"models": ["openai/gpt-4.1", "gpt4"]}})
    assert "llm.models: entry 1: model 'gpt4' is not of the form provider/model" in str(err.value)
    with pytest.raises(ConfigError, match="listed more than once"):
        load_config(None, env={}, overrides={"llm": {"models": ["openai/gpt-4.1", "openai/gpt-4.1"]}})
    res = subprocess.run([*ARCHLAB, "run", "--task", "nb201", "--models", "openai/gpt-4.1,qwen",
                          "--workspace", str(tmp_path / "runs")], capture_output=True, text=True, env=cli_env)
    assert res.returncode == 2 and "llm.models: entry 1: model 'qwen'" in res.stderr
    assert not (tmp_path / "runs").exists(), "no campaign folder for a bad setting"
