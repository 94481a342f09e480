"""The command line a user types: fast help, check's verdicts, doctor, clear errors."""
from __future__ import annotations

import subprocess
import sys

from conftest import ARCHLAB

GOOD = ("def cell(x0, ops):\n    x1 = ops.nor_conv_3x3(x0)\n    x2 = ops.skip_connect(x0) + ops.nor_conv_1x1(x1)\n"
        "    return ops.avg_pool_3x3(x0) + ops.none(x1) + ops.nor_conv_3x3(x2)\n")


def run(args, env, cwd=None):
    return subprocess.run([*ARCHLAB, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_help_lists_commands_without_heavy_imports(cli_env):
    code = ("import sys; sys.argv=['archlab','--help']\n"
            "from archlab.cli import app\ntry: app()\nexcept SystemExit: pass\n"
            "heavy=[m for m in ('litellm','torch','langgraph','chromadb') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env)
    for command in ("run", "resume", "ls", "show", "check", "eval", "tasks", "doctor"):
        assert command in res.stdout
    assert "HEAVY []" in res.stdout


def test_check_accepts_and_rejects_with_reason(tmp_path, nb201_table, cli_env):
    good, leaky, bad = tmp_path / "good.py", tmp_path / "bad.py", tmp_path / "static.py"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("nor_conv_1x1", "conv_7x7"))
    leaky.write_text("import socket\n" + GOOD)
    args = ["--task", "nb201", "--table", str(nb201_table), "--workspace", str(tmp_path / "runs")]
    ok = run(["check", str(good), *args], cli_env)
    assert ok.returncode == 0 and "ACCEPTED" in ok.stdout and "|nor_conv_3x3~0|" in ok.stdout
    rejected = run(["check", str(bad), *args], cli_env)
    assert rejected.returncode == 1 and "REJECTED at check" in rejected.stdout and "conv_7x7" in rejected.stdout
    static = run(["check", str(leaky), *args], cli_env)
    assert static.returncode == 1 and "import of `socket` is not allowed" in static.stdout


def test_bad_input_gets_actionable_errors(tmp_path, cli_env):
    res = run(["run", "--task", "nb201", "--workspace", str(tmp_path)], cli_env)
    assert res.returncode == 2 and "nb201 needs a table" in res.stderr and "Traceback" not in res.stderr
    res = run(["run", "--model", "gpt4", "--workspace", str(tmp_path)], cli_env)
    assert res.returncode == 2 and "provider/model" in res.stderr
    res = run(["run", "--budget", "-1", "--workspace", str(tmp_path)], cli_env)
    assert res.returncode == 2 and "budget.experiments" in res.stderr
    res = run(["show", "nope", "--workspace", str(tmp_path)], cli_env)
    assert res.returncode == 2 and "no campaign 'nope'" in res.stderr
    assert not any(tmp_path.iterdir()), "a rejected config must not leave a campaign folder"


def test_doctor_and_tasks(cli_env):
    res = run(["doctor"], cli_env)
    assert res.returncode == 0
    for item in ("python", "torch", "GPU", "docker engine", "ray", "model"):
        assert item in res.stdout
    assert "nb201" in run(["tasks"], cli_env).stdout


def test_doctor_says_how_the_model_is_spoken_to(cli_env):
    hosted = run(["doctor"], {**cli_env, "ARCHLAB_LLM_MODEL": "openai/gpt-4.1"}).stdout
    assert "openai/gpt-4.1; structured output: json_schema" in " ".join(hosted.split())
    local = run(["doctor"], {**cli_env, "ARCHLAB_LLM_MODEL": "openai/qwen", "ARCHLAB_LLM_API_BASE":
                             "http://127.0.0.1:8000/v1", "ARCHLAB_LLM_CONTEXT_TOKENS": "16384"}).stdout
    local = " ".join(local.split())
    assert "structured output: json_schema (falls back" in local and "input window 16,384 tokens" in local
    assert "chat tools: JSON actions" in local
    forced = run(["doctor"], {**cli_env, "ARCHLAB_LLM_MODEL": "anthropic/claude-sonnet-4-5",
                              "ARCHLAB_LLM_STRUCTURED": "prompt"}).stdout
    assert "structured output: prompt" in " ".join(forced.split())


def test_lm_probes_reject_leaky_and_batch_mixing_mixers_without_training(tmp_path, cli_env):
    from test_lm import BATCH_MIXING, LEAKY

    ws = tmp_path / "runs"
    for name, code, reason in (("leaky", LEAKY, "causality"), ("mixing", BATCH_MIXING, "batch")):
        path = tmp_path / f"{name}.py"
        path.write_text(code)
        checked = run(["check", "--task", "lm", str(path), "--workspace", str(ws)], cli_env)
        assert checked.returncode == 1 and "REJECTED at check" in checked.stdout, checked.stdout + checked.stderr
        assert reason in checked.stdout
        evaluated = run(["eval", "--task", "lm", str(path), "--workspace", str(ws)], cli_env)
        assert evaluated.returncode == 1 and reason in evaluated.stdout, evaluated.stdout + evaluated.stderr
    from archlab.memory.ledger import Ledger

    ledger = Ledger(next(ws.glob("eval-lm-*")) / "ledger.sqlite")
    assert [e.status for e in ledger.experiments()] == ["failed", "failed"]
    assert ledger.events(kind="train.start") == [], "a rejected mixer must not be trained"
