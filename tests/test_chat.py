"""The analyst chat over a real offline nb201 campaign: the LLM path driven by
scripted tool calls through litellm (what it called, what the tools returned,
the conversation kept across sessions, every call in llm.jsonl), the retrieval
mode with no model, the statistics behind `compare`, and the CLI commands."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from archlab.analysis.chat import RETRIEVAL_BANNER, ChatAnalyst
from archlab.analysis.chat_tools import Lab, call_tool
from archlab.memory.ledger import Ledger

_BUILT: dict[str, tuple[Path, str]] = {}


def shared_campaign(table: Path, tmp_path_factory) -> tuple[Path, str]:
    """One real 10-experiment evolution campaign (plus 3 baselines), built once per test session."""
    if "ws" not in _BUILT:
        from archlab.campaign import Campaign
        from archlab.config import load_config

        ws = tmp_path_factory.mktemp("chat") / "runs"
        cfg = load_config(None, env={}, overrides={
            "workspace": str(ws), "task": {"name": "nb201", "table": str(table)}, "budget": {"experiments": 10},
            "search": {"strategy": "evolution", "population": 4, "tournament": 2}})
        campaign = Campaign.create(cfg)
        campaign.run()
        campaign.ledger.close()
        _BUILT["ws"] = (ws, campaign.folder.id)
    return _BUILT["ws"]


def copy_workspace(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def built(nb201_table, tmp_path_factory) -> tuple[Path, str]:
    return shared_campaign(nb201_table, tmp_path_factory)


@pytest.fixture
def ws(built, tmp_path) -> tuple[Path, str]:
    """A private copy: tests that write (chat history, plots, edits) do not meet."""
    return copy_workspace(built[0], tmp_path / "runs"), built[1]


def ranked(ws: Path, cid: str, metric: str = "val_acc"):
    ledger = Ledger(ws / cid / "ledger.sqlite")
    rows = [e for e in ledger.experiments(status=["done"]) if e.metrics]
    return sorted(rows, key=lambda e: -e.metrics[metric])


def test_scripted_analyst_answers_through_its_tools(ws, tmp_path):
    ws, cid = ws
    by_test = ranked(ws, cid, "test_acc")
    top, second = by_test[0], by_test[1]
    child = next(e for e in ranked(ws, cid) if e.parent is not None and e.origin == "campaign")
    script = tmp_path / "chat.json"
    script.write_text(json.dumps({"rules": [
        {"step": "chat:0:0", "response": {"tool_calls": [
            {"name": "leaderboard", "arguments": {"metric": "test_acc", "limit": 3}}]}},
        {"step": "chat:0:1", "response": {"tool_calls": [
            {"name": "show_experiment", "arguments": {"id": top.id}},
            {"name": "diff_code", "arguments": {"a": top.id, "b": second.id}}]}},
        {"step": "chat:0:2", "response": f"#{top.id} {top.name} has the best test accuracy."},
        {"step": "chat:1:0", "response": {"tool_calls": [
            {"name": "compare", "arguments": {"a": top.id, "b": second.id}},
            {"name": "lineage", "arguments": {"id": child.id}},
            {"name": "plot", "arguments": {"kind": "best_so_far"}},
            {"name": "show_experiment", "arguments": {"id": 999}}]}},
        {"step": "chat:1:1", "response": "Single runs: no seeds, so no test."},
    ]}))
    lab = Lab(ws, cid)
    analyst = ChatAnalyst(lab, f"scripted/{script}")
    first = analyst.ask("Which candidate has the best test accuracy, and how does its code differ from the runner-up?")
    assert first.mode == "llm" and first.text.startswith(f"#{top.id}")
    assert [c["name"] for c in first.tool_calls] == ["leaderboard", "show_experiment", "diff_code"]
    board = first.tool_calls[0]["result"]["boards"][0]
    assert [r["id"] for r in board["rows"]] == [e.id for e in by_test[:3]]
    assert board["rows"][0]["test_acc"] == top.metrics["test_acc"] and board["rows"][0]["seeds"] == 1
    shown = first.tool_calls[1]["result"]
    assert shown["id"] == top.id and "def cell" in shown["code"] and shown["metrics"] == top.metrics
    diff = first.tool_calls[2]["result"]["diff"]
    assert diff.startswith(f"--- #{top.id}") and "\n-" in diff and "\n+" in diff

    # a second session on the same campaign continues the conversation from its checkpoint
    analyst.close()
    again = ChatAnalyst(Lab(ws, cid), f"scripted/{script}")
    second_turn = again.ask(f"Is #{top.id} really better than #{second.id}? Where does #{child.id} come from?")
    calls = {c["name"]: c["result"] for c in second_turn.tool_calls}
    assert calls["compare"]["test"] is None and "no seeds" in calls["compare"]["note"]
    assert calls["compare"]["better"] == f"#{top.id}"
    assert calls["lineage"]["ancestors"][0]["id"] == child.parent
    assert Path(calls["plot"]["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no experiment #999" in second_turn.tool_calls[3]["result"]["error"]
    history = again.history()
    assert [m["role"] for m in history].count("user") == 2 and history[-1]["content"].startswith("Single runs")
    again.close()

    log = [json.loads(line) for line in (ws / cid / "llm.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == ["chat:0:0", "chat:0:1", "chat:0:2", "chat:1:0", "chat:1:1"]
    assert all(r["valid"] and r["experiment"] is None and "compare" in r["request"]["tools"] for r in log)
    assert log[0]["tool_calls"][0]["name"] == "leaderboard" and log[0]["finish_reason"] == "tool_calls"
    turn2 = [m["content"] for m in log[3]["request"]["messages"] if m["role"] == "user"]
    assert len(turn2) == 2 and turn2[0].startswith("Which candidate")  # the history went to the model
    tool_msgs = [m for m in log[2]["request"]["messages"] if m["role"] == "tool"]
    assert len(tool_msgs) == 3 and json.loads(tool_msgs[0]["content"])["boards"]


def test_retrieval_mode_names_the_best_experiment_and_why(ws):
    ws, cid = ws
    best = ranked(ws, cid)[0]
    answer = ChatAnalyst(Lab(ws, cid), None).ask("Which experiment is best and why?")
    lines = answer.text.splitlines()
    assert answer.mode == "retrieval" and lines[0] == RETRIEVAL_BANNER
    assert f"Best: #{best.id} {best.name} ({best.origin}), val_acc = {best.score:.4g}" in answer.text
    assert best.metrics["arch"] in answer.text and "no seeds" in answer.text
    assert {c["name"] for c in answer.tool_calls} >= {"leaderboard", "search_memory"}


def test_search_uses_the_vector_memory_when_there_is_one(ws):
    from archlab.memory.vector import VectorMemory

    ws, cid = ws
    baseline = Ledger(ws / cid / "ledger.sqlite").get(2)
    memory = VectorMemory(path=ws / "memory", embeddings="hash")  # instant, offline; minilm in real use
    try:
        found = call_tool(Lab(ws, cid, memory=memory), "search_memory", {"query": baseline.proposal["motivation"]})
    finally:
        memory.close()
    assert found["source"] == "vector memory"
    assert found["experiments"][0]["id"] == 2 and found["experiments"][0]["name"] == baseline.name
    plain = call_tool(Lab(ws, cid), "search_memory", {"query": baseline.proposal["motivation"]})
    assert plain["source"] == "ledger text search (no vector memory configured)"
    assert 2 in [r["id"] for r in plain["experiments"]]


def test_compare_runs_welch_where_there_are_seeds(ws, monkeypatch):
    ws, cid = ws
    a, b = ranked(ws, cid)[:2]
    ledger = Ledger(ws / cid / "ledger.sqlite")
    seeds_a, seeds_b = [92.1, 92.9, 93.4, 92.6], [90.0, 91.2, 90.7]
    ledger.update(a.id, metrics={**a.metrics, "seeds": [{"val_acc": v} for v in seeds_a]})
    ledger.update(b.id, metrics={**b.metrics, "val_acc_seeds": seeds_b})
    lab = Lab(ws, cid)
    result = call_tool(lab, "compare", {"a": a.id, "b": b.id})
    from scipy import stats

    expected = stats.ttest_ind(seeds_a, seeds_b, equal_var=False)
    assert result["seeds_a"] == 4 and result["seeds_b"] == 3
    assert result["test"]["p"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert result["value_a"] == pytest.approx(sum(seeds_a) / 4)
    row = call_tool(lab, "leaderboard", {"limit": 2})["boards"][0]["rows"][0]
    assert row["seeds"] == 4 and row["ci95"][0] < sum(seeds_a) / 4 < row["ci95"][1]
    monkeypatch.setitem(sys.modules, "scipy", None)  # the small implementation gives the same p
    assert call_tool(lab, "compare", {"a": a.id, "b": b.id})["test"]["p"] == pytest.approx(expected.pvalue, rel=1e-7)


def test_workspace_chat_spans_campaigns_and_reports_bad_calls(ws):
    ws, cid = ws
    shutil.copytree(ws / cid, ws / "nb201-copy")
    lab = Lab(ws)
    assert set(lab.views) == {cid, "nb201-copy"} and lab.home == ws / "chat"
    boards = call_tool(lab, "leaderboard", {"limit": 1})["boards"]
    assert len(boards) == 2 and boards[0]["rows"][0]["id"] == boards[1]["rows"][0]["id"]
    assert "several campaigns" in call_tool(lab, "lineage", {"id": 4})["error"]
    assert call_tool(lab, "lineage", {"id": 4, "campaign": "copy"})["experiment"]["campaign"] == "nb201-copy"
    assert "bad arguments" in call_tool(lab, "compare", {"a": "x", "b": 2, "campaign": cid})["error"]
    assert "unknown tool" in call_tool(lab, "rm_rf", {})["error"]
    campaign_only = call_tool(lab, "leaderboard", {"origin": "campaign", "campaign": cid})["boards"][0]
    leader = lab.views[cid].ranked()[0]
    if leader.origin != "campaign":  # what leads overall is named when the filter leaves it out
        assert campaign_only["best_of_all_origins"]["id"] == leader.id
    assert all(r["origin"] == "campaign" for r in campaign_only["rows"])
    missing = call_tool(lab, "leaderboard", {"metric": "bleu", "campaign": cid})["boards"][0]
    assert "no metric" in missing["error"] and "test_acc" in missing["metrics"]
    found = call_tool(lab, "search_memory", {"query": "nor_conv_3x3 convolution", "campaign": cid})
    assert found["experiments"] and found["source"].startswith(("ledger", "vector"))


def test_cli_one_shot_retrieval_and_report(ws):
    import typer
    from typer.testing import CliRunner

    from archlab.cli import chat as chat_cli
    from archlab.cli import report as report_cli

    ws, cid = ws
    app = typer.Typer()
    app.command()(chat_cli.chat)
    app.command()(report_cli.report)
    runner = CliRunner()
    res = runner.invoke(app, ["chat", cid, "-q", "which experiment is best and why", "-w", str(ws)],
                        env={"ARCHLAB_LLM_MODEL": "", "ARCHLAB_MEMORY_EMBEDDINGS": "hash"})
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == RETRIEVAL_BANNER
    assert f"Best: #{ranked(ws, cid)[0].id}" in res.stdout and "(vector memory)" in res.stdout
    res = runner.invoke(app, ["chat", "-w", str(ws)], input="which is best?\nexit\n",
                        env={"ARCHLAB_LLM_MODEL": "", "ARCHLAB_MEMORY_ENABLED": "false"})
    assert res.exit_code == 0 and res.stdout.count(RETRIEVAL_BANNER) == 1, res.output
    assert "talking about " + cid in res.stderr
    res = runner.invoke(app, ["report", cid, "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert (ws / cid / "report" / "report.html").exists() and (ws / cid / "report" / "lineage.png").exists()
    res = runner.invoke(app, ["chat", "nope", "-q", "hi", "-w", str(ws)])
    assert res.exit_code == 2 and "no campaign 'nope'" in res.output


# --- what real models send: malformed calls, calls written as text, rate limits, no native tools ---

def chat_script(tmp_path: Path, rules: list[dict]) -> str:
    script = tmp_path / "chat.json"
    script.write_text(json.dumps({"rules": rules}))
    return f"scripted/{script}"


def test_malformed_tool_calls_go_back_to_the_model_as_errors(ws, tmp_path):
    ws, cid = ws
    model = chat_script(tmp_path, [
        {"step": "chat:0:0", "response": "", "tool_calls": [
            {"name": "leaderboard", "arguments": "[1, 2]"},            # a list, not an object
            {"name": "leaderboard", "arguments": '{"limit": 3,'},      # not JSON
            {"name": "drop_table", "arguments": {}}]},                 # no such tool
        {"step": "chat:0:1", "response": "Sorry: the leaderboard, properly this time.", "tool_calls": [
            {"name": "leaderboard", "arguments": {"limit": 2}}]},
        {"step": "chat:0:2", "response": "The best is at the top."}])
    answer = ChatAnalyst(Lab(ws, cid), model).ask("Which experiment is best?")
    errors = [c["result"]["error"] for c in answer.tool_calls[:3]]
    assert "must be a JSON object" in errors[0] and "not JSON" in errors[1] and "unknown tool 'drop_table'" in errors[2]
    assert answer.tool_calls[3]["result"]["boards"][0]["rows"] and answer.text == "The best is at the top."
    log = [json.loads(line) for line in (ws / cid / "llm.jsonl").read_text().splitlines()]
    sent = [m for m in log[1]["request"]["messages"] if m["role"] == "tool"]
    assert len(sent) == 3 and "must be a JSON object" in sent[0]["content"]


def test_cli_prints_list_arguments_instead_of_crashing(ws, tmp_path):
    from typer.testing import CliRunner

    ws, cid = ws
    model = chat_script(tmp_path, [
        {"step": "chat:0:0", "response": "", "tool_calls": [{"name": "leaderboard", "arguments": "[1, 2]"}]},
        {"step": "chat:0:1", "response": "done"}])
    app = cli_app()
    res = CliRunner().invoke(app, ["chat", cid, "-q", "best?", "-w", str(ws), "--model", model],
                             env={"ARCHLAB_MEMORY_ENABLED": "false"})
    assert res.exit_code == 0, res.output
    assert "→ leaderboard([1, 2])" in res.stderr and res.stdout.strip() == "done"


@pytest.mark.parametrize("written", [
    '<tool_call>\n{"name": "leaderboard", "arguments": {"limit": 2}}\n</tool_call>',
    '{"name": "leaderboard", "arguments": {"limit": 2}}',
    '```json\n{"function": {"name": "leaderboard", "arguments": {"limit": 2}}}\n```',
])
def test_a_tool_call_written_as_text_is_run_never_shown(ws, tmp_path, written):
    ws, cid = ws
    model = chat_script(tmp_path, [{"step": "chat:0:0", "response": written},
                                   {"step": "chat:0:1", "response": "Here is the top 2."}])
    answer = ChatAnalyst(Lab(ws, cid), model).ask("top 2?")
    assert [c["name"] for c in answer.tool_calls] == ["leaderboard"]
    assert len(answer.tool_calls[0]["result"]["boards"][0]["rows"]) == 2
    assert answer.text == "Here is the top 2." and "tool_call" not in answer.text


def test_an_unknown_tool_written_as_text_is_refused_not_answered(ws, tmp_path):
    ws, cid = ws
    model = chat_script(tmp_path, [{"step": "chat:0:0", "response": '{"name": "shell", "arguments": {"cmd": "ls"}}'},
                                   {"step": "chat:0:1", "response": "I cannot run shell commands."}])
    answer = ChatAnalyst(Lab(ws, cid), model).ask("list files")
    assert "unknown tool 'shell'" in answer.tool_calls[0]["result"]["error"]
    assert answer.text == "I cannot run shell commands."


def cli_app():
    import typer

    from archlab.cli import chat as chat_cli
    from archlab.cli import report as report_cli

    app = typer.Typer()
    app.command()(chat_cli.chat)
    app.command()(report_cli.report)
    return app


def test_an_interactive_session_survives_a_rate_limit(ws, tmp_path):
    from typer.testing import CliRunner

    ws, cid = ws
    model = chat_script(tmp_path, [{"step": "chat:0:0", "status": 429, "error": "rate limited"},
                                   {"step": "chat:1:0", "response": "Still here: #2 is best."}])
    res = CliRunner().invoke(cli_app(), ["chat", cid, "-w", str(ws), "--model", model],
                             input="which is best?\nand now?\nexit\n",
                             env={"ARCHLAB_MEMORY_ENABLED": "false", "ARCHLAB_LLM_RETRIES": "1",
                                  "ARCHLAB_LLM_BACKOFF_S": "0"})
    assert res.exit_code == 0, res.output
    assert "unreachable" in res.stderr and "ask again" in res.stderr
    assert "Still here: #2 is best." in res.stdout


def test_a_model_without_native_tools_uses_json_actions(ws, tmp_path):
    from archlab.config import LLMConfig

    ws, cid = ws
    best = ranked(ws, cid)[0]
    model = chat_script(tmp_path, [
        {"step": "chat:0:0", "response": {"action": "leaderboard", "arguments": {"limit": 1}, "answer": ""}},
        {"step": "chat:0:1", "response": {"action": "answer", "arguments": {}, "answer": f"#{best.id} is best."}}])
    analyst = ChatAnalyst(Lab(ws, cid), model, settings=LLMConfig(tools="json"))
    answer = analyst.ask("Which experiment is best?")
    assert answer.tool_calls[0]["result"]["boards"][0]["rows"][0]["id"] == best.id
    assert answer.text == f"#{best.id} is best."
    log = [json.loads(line) for line in (ws / cid / "llm.jsonl").read_text().splitlines()]
    assert "tools" not in log[0]["request"] and "ONE JSON object" in log[0]["request"]["messages"][0]["content"]
    assert log[1]["request"]["messages"][-1]["content"].startswith("Result of leaderboard:")
