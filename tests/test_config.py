"""Config precedence (file < environment < flags) and the errors a user sees."""
from pathlib import Path

import pytest

from archlab.config import load_config
from archlab.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "archlab.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert cfg.task.name == "lm" and cfg.llm.model is None and cfg.strategy == "evolution"


def test_file_then_env_then_flags(tmp_path):
    path = write(tmp_path, '[budget]\nexperiments = 5\nhours = 2\n[task]\nname = "nb201"\ntable = "t.csv"\n')
    cfg = load_config(path, env={})
    assert cfg.budget.experiments == 5 and cfg.task.options == {"table": "t.csv"}
    cfg = load_config(path, env={"ARCHLAB_BUDGET_EXPERIMENTS": "7"})
    assert cfg.budget.experiments == 7 and cfg.budget.hours == 2
    cfg = load_config(path, env={"ARCHLAB_BUDGET_EXPERIMENTS": "7"}, overrides={"budget": {"experiments": 9}})
    assert cfg.budget.experiments == 9


def test_model_sets_llm_strategy(tmp_path):
    cfg = load_config(write(tmp_path, '[llm]\nmodel = "openai/gpt-4.1"\n'), env={})
    assert cfg.strategy == "llm"
    cfg = load_config(None, env={"ARCHLAB_LLM_MODEL": "ollama/qwen2.5-coder", "ARCHLAB_SEARCH_STRATEGY": "random"})
    assert cfg.strategy == "random"


@pytest.mark.parametrize("text, env, overrides, needle", [
    ("[budget]\nexperiments = -3\n", {}, {}, "budget.experiments"),
    ("", {}, {"llm": {"model": "gpt4"}}, "provider/model"),
    ("budget = 5\n", {}, {}, "must be a table ([budget])"),
    ("[budget]\nexperimnts = 5\n", {}, {}, "unknown setting"),
    ("[search]\npopulation = 4\ntournament = 9\n", {}, {}, "tournament"),
    ("", {"ARCHLAB_NOPE_X": "1"}, {}, "ARCHLAB_<SECTION>_<KEY>"),
    ("[budget\n", {}, {}, "not valid TOML"),
])
def test_bad_config_is_explained(tmp_path, text, env, overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env=env, overrides=overrides)
    assert needle in str(err.value)


def test_missing_config_file_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_unknown_task_and_missing_table_are_clear():
    from archlab.tasks import get_task

    with pytest.raises(ConfigError, match="unknown task 'nope'.*nb201"):
        get_task("nope")
    with pytest.raises(ConfigError, match="table"):
        get_task("nb201", {}).validate()


def test_resume_with_a_bad_override_is_explained_and_stores_nothing(tmp_path, nb201_table):
    from archlab.campaign import Campaign

    cfg = load_config(None, env={}, overrides={"workspace": str(tmp_path),
                                               "task": {"name": "nb201", "table": str(nb201_table)},
                                               "budget": {"experiments": 2}})
    campaign = Campaign.create(cfg)
    with pytest.raises(ConfigError, match="budget.experiments"):
        Campaign.open(tmp_path, campaign.folder.id, {"budget": {"experiments": 0}})
    assert Campaign.open(tmp_path, campaign.folder.id).config.budget.experiments == 2


def test_bad_gpu_list_in_the_environment():
    with pytest.raises(ConfigError, match="ARCHLAB_SANDBOX_GPUS=0,1"):
        load_config(None, env={"ARCHLAB_SANDBOX_GPUS": "a"})
