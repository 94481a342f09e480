"""What isolates candidate code, said and enforced: a model campaign refuses to run
unisolated, `isolation = "none"` opts out on the record, offline template code runs with a
warning, and each step has a wall time that fits it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ARCHLAB
from test_llm_campaign import GOOD_RULES

from archlab.agents.context import job_limits
from archlab.config import SandboxConfig
from archlab.errors import ConfigError
from archlab.sandbox import isolation
from archlab.tasks import get_task

NO_BWRAP = "/nonexistent-bin"  # a PATH on which bubblewrap cannot be found


def run_cli(args: list[str], env: dict[str, str], **extra: str) -> subprocess.CompletedProcess:
    env = {**env, "ARCHLAB_SEARCH_BASELINES": "false", **extra}  # the script answers experiments 1 and 2
    return subprocess.run(ARCHLAB + args, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def model_run(tmp_path: Path, nb201_table: Path) -> list[str]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": GOOD_RULES}))
    return ["run", "--task", "nb201", "--table", str(nb201_table), "--model", f"scripted/{script}",
            "--budget", "2", "--workspace", str(tmp_path / "runs"), "-q"]


def campaigns(root: Path) -> list[Path]:
    return [p for p in root.glob("*") if (p / "config.json").exists()] if root.exists() else []


def test_without_bubblewrap_a_model_campaign_stops_before_any_job(tmp_path, model_run, cli_env):
    res = run_cli(model_run, cli_env, PATH=NO_BWRAP)
    assert res.returncode == 2, res.stdout + res.stderr  # a setting to change, like any config error
    said = " ".join((res.stdout + res.stderr).split())
    assert "cannot isolate candidate code here: bubblewrap (bwrap) is not installed" in said
    assert "apt-get install bubblewrap" in said and '[sandbox] backend = "docker"' in said
    assert '[sandbox] isolation = "none"' in said
    assert campaigns(tmp_path / "runs") == [], "a folder (or a job) before the refusal"


def test_isolation_none_runs_it_unisolated_on_the_record(tmp_path, model_run, cli_env):
    res = run_cli(model_run, cli_env, PATH=NO_BWRAP, ARCHLAB_SANDBOX_ISOLATION="none")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sandbox: none" in res.stderr  # the header, beside the model line
    [folder] = campaigns(tmp_path / "runs")
    assert json.loads((folder / "config.json").read_text())["sandbox"]["isolation"] == "none"
    shown = run_cli(["show", folder.name, "--workspace", str(tmp_path / "runs")], cli_env)
    assert shown.returncode == 0, shown.stderr
    assert 'sandbox: none (unisolated: [sandbox] isolation = "none")' in shown.stdout
    data = json.loads(run_cli(["show", folder.name, "--json", "--workspace", str(tmp_path / "runs")], cli_env).stdout)
    assert data["isolation"] == "none" and data["counts"]["done"] == 2


def test_offline_template_code_runs_unisolated_with_a_warning(tmp_path, nb201_table, cli_env):
    res = run_cli(["run", "--task", "nb201", "--table", str(nb201_table), "--budget", "2", "-q",
                   "--workspace", str(tmp_path / "runs")], cli_env, PATH=NO_BWRAP)
    assert res.returncode == 0, res.stdout + res.stderr
    warning = [line for line in res.stderr.splitlines() if line.startswith("warning: jobs run unisolated")]
    assert len(warning) == 1 and "apt-get install bubblewrap" in warning[0], res.stderr


@pytest.mark.skipif(isolation.bwrap_problem() is not None, reason=f"bubblewrap cannot run here: "
                    f"{isolation.bwrap_problem()}")
def test_a_model_campaign_runs_isolated_and_says_so(tmp_path, model_run, cli_env):
    res = run_cli(model_run, cli_env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sandbox: process+bwrap" in res.stderr
    [folder] = campaigns(tmp_path / "runs")
    shown = run_cli(["show", folder.name, "--workspace", str(tmp_path / "runs")], cli_env)
    assert "sandbox: process+bwrap" in shown.stdout and "unisolated" not in shown.stdout
    doctor = run_cli(["doctor"], cli_env)
    assert "isolation: process+bwrap" in " ".join(doctor.stdout.split())


def test_resolve_follows_the_setting(monkeypatch):
    monkeypatch.setattr(isolation, "bwrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(ConfigError, match="cannot isolate candidate code here"):
        isolation.resolve("auto", code_from_model=True)
    with pytest.raises(ConfigError, match="apt-get install bubblewrap"):
        isolation.resolve("bwrap", code_from_model=False)
    warned: list[str] = []
    assert isolation.resolve("auto", code_from_model=False, warn=warned.append) == "none"
    assert len(warned) == 1 and warned[0].startswith("warning: jobs run unisolated")
    assert isolation.resolve("none", code_from_model=True) == "none"
    monkeypatch.setattr(isolation, "bwrap_problem", lambda: None)
    assert isolation.resolve("auto", code_from_model=True) == "bwrap"
    assert isolation.describe("process", "bwrap") == "process+bwrap"
    assert isolation.describe("docker", "none", runtime="runsc") == "docker+runsc"
    assert isolation.describe("ray", "bwrap", inner="process") == "ray(process+bwrap)"
    assert isolation.describe("ray", "none", inner="docker") == "ray(docker)"


def test_each_step_has_a_wall_time_that_fits_it(nb201_table):
    lm = get_task("lm")
    assert job_limits(lm, SandboxConfig(), "check").wall_time_s == 60  # a check takes ~1.6 s
    assert job_limits(lm, SandboxConfig(), "train").wall_time_s == 600
    assert job_limits(get_task("lm", preset="small"), SandboxConfig(), "train").wall_time_s == 4 * 3600
    nb201 = get_task("nb201", {"table": str(nb201_table)})
    assert job_limits(nb201, SandboxConfig(), "check").wall_time_s == 30
    custom = SandboxConfig(check_wall_s=5, train_wall_s=50)
    assert job_limits(lm, custom, "check").wall_time_s == 5 and job_limits(lm, custom, "train").wall_time_s == 50
