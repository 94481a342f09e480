"""The real LLM path, end to end: Qwen2.5-Coder-0.5B-Instruct served by llama.cpp's
OpenAI-compatible server on loopback, reached through litellm over HTTP exactly as a
user's `--model openai/... --api-base ...` would. No scripted answer anywhere.

These tests run in order on one campaign (the chat and the replay read the nb201
campaign) and skip, saying why, where the server or the model is absent; CI sets
REAL_MODEL_REQUIRED=1 so that their absence fails instead."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ARCHLAB

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(1800)]  # a 0.5B model on 2 cores: minutes a call
STATE: dict[str, object] = {}
# Reasons a model can see and act on (its answer did not validate, its code failed a check it was
# shown): anything else (a crash, a transport error) would be the lab's fault, not the model's.
MODEL_REASONS = ("researcher:", "coder:", "check ", "train ", "researcher: ", "duplicate")


def toml(path: Path, server, workspace: Path, task: str, extra: str = "") -> Path:
    path.write_text(f'workspace = "{workspace}"\n{task}\n'
                    f'[llm]\nmodel = "{server.model}"\napi_base = "{server.url}"\ntimeout_s = 600\n'
                    f'[llm.max_tokens]\nanalyse = 300\n{extra}')
    return path


def calls(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "llm.jsonl").read_text().splitlines()]


def run(args: list[str], env: dict, timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([*ARCHLAB, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_nb201_campaign_with_the_real_model(llama_server, nb201_table, tmp_path_factory, cli_env):
    from archlab.memory.ledger import Ledger

    root = tmp_path_factory.mktemp("real-nb201")
    cfg = toml(root / "archlab.toml", llama_server, root / "runs",
               f'[task]\nname = "nb201"\ntable = "{nb201_table}"\n')
    res = run(["run", "-c", str(cfg), "--budget", "3", "-q"], cli_env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "structured output: json_schema" in res.stderr  # auto, for an OpenAI-compatible server
    folder = next(p for p in (root / "runs").iterdir() if p.name.startswith("nb201-"))
    STATE.update(root=root, cfg=cfg, campaign=folder.name)

    rows = [e for e in Ledger(folder / "ledger.sqlite").experiments() if e.origin == "campaign"]
    done = [e for e in rows if e.status == "done"]
    assert len(rows) == 3 and len(done) >= 2, [(e.id, e.status, e.failure_reason) for e in rows]
    for e in rows:  # a valid proposal, code that passed the gate and the check, or a reason the model saw
        assert e.status == "done" or (e.failure_reason or "").startswith(MODEL_REASONS), e.failure_reason
    for e in done:
        assert e.text_hash and e.ast_hash and e.metrics["val_acc"] > 0 and e.proposal["genome"]["edges"]
    log = calls(folder)
    answered = [c for c in log if c["response"] is not None]
    assert answered and all(c["prompt_tokens"] > 0 and c["completion_tokens"] > 0 for c in answered)
    assert all(c["model"] == llama_server.model for c in log)
    # the server took json_object with the schema once json_schema was refused (llama.cpp 0.3)
    assert {c["request"]["mode"] for c in answered if c["step"].startswith("research")} == {"json_object"}


def test_lm_campaign_of_one_experiment_is_gated_checked_and_recorded(llama_server, tmp_path_factory, cli_env):
    from archlab.memory.ledger import Ledger

    root = tmp_path_factory.mktemp("real-lm")
    cfg = toml(root / "archlab.toml", llama_server, root / "runs", '[task]\nname = "lm"\npreset = "tiny"\n',
               "code = 1500\n[search]\nbaselines = false\nmax_repairs = 1\n")
    res = run(["run", "-c", str(cfg), "--budget", "1", "-q"], cli_env)
    assert res.returncode == 0, res.stdout + res.stderr
    folder = next(p for p in (root / "runs").iterdir() if p.name.startswith("lm-"))
    [row] = Ledger(folder / "ledger.sqlite").experiments()
    assert row.status in ("done", "failed")
    if row.status == "failed":
        assert row.failure_reason.startswith(MODEL_REASONS), row.failure_reason
    else:
        assert row.metrics["val_bpb"] > 0
    steps = [c["step"].split(":")[0] for c in calls(folder)]
    assert "research" in steps and "code" in steps


def test_chat_answers_through_a_tool_that_names_the_best(llama_server, cli_env):
    from archlab.memory.ledger import Ledger

    if "campaign" not in STATE:
        pytest.skip("needs the nb201 campaign of test_nb201_campaign_with_the_real_model")
    root, campaign = Path(STATE["root"]), str(STATE["campaign"])
    ledger = Ledger(root / "runs" / campaign / "ledger.sqlite")
    best = max((e for e in ledger.experiments(status=["done"])), key=lambda e: e.score)
    res = run(["chat", campaign, "-q", "Which experiment is best?", "-c", str(STATE["cfg"])], cli_env, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() and "→ " in res.stderr  # at least one tool call, shown as it ran
    chat = calls(root / "runs" / campaign)
    chat = [c for c in chat if c["step"].startswith("chat:")]
    results = [m["content"] for c in chat for m in c["request"]["messages"]
               if m["role"] in ("user", "tool") and str(m["content"]).startswith(("Result of", "{"))]
    assert any(f'"id": {best.id}' in r and best.name in r for r in results), results


def test_replay_of_the_real_campaign_needs_no_server(llama_server, cli_env):
    if "campaign" not in STATE:
        pytest.skip("needs the nb201 campaign of test_nb201_campaign_with_the_real_model")
    llama_server.stop()
    res = run(["replay", str(STATE["campaign"]), "-c", str(STATE["cfg"])], cli_env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no divergence" in res.stdout and "replayed 6 experiments" in res.stdout
