"""The LLM client, through litellm for real (mock_response via the scripted model)."""

import ast
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel

from archlab.errors import ConfigError, LLMError, ModelUnreachable
from archlab.llm import LLMClient, Usage, validate_model_string
from archlab.llm.answers import read_object
from archlab.llm.scripted import ScriptedModel
from archlab.llm.transport import RetryPolicy
from archlab.prompts import TEMPLATE_DIR, render, template_source_hash


class Proposal(BaseModel):
    name: str
    motivation: str


class Code(BaseModel):
    code: str


GOOD = {"name": "gated-conv", "motivation": "cheaper than attention"}


def code_parses(obj: Code) -> list[str]:
    try:
        ast.parse(obj.code)
    except SyntaxError as e:
        return [f"the code does not parse: {e.msg} (line {e.lineno})"]
    return []


def script(tmp_path: Path, rules: list[dict]) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"rules": rules}))
    return f"scripted/{path}"


def client(tmp_path: Path, rules: list[dict], **kw) -> LLMClient:
    return LLMClient(script(tmp_path, rules), tmp_path / "run" / "llm.jsonl", **kw)


def log(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "run" / "llm.jsonl").read_text().splitlines()]


ASK = [{"role": "system", "content": "You are a researcher."},
       {"role": "user", "content": "Propose an architecture."}]


def test_fenced_json_in_prose_is_accepted_and_logged(tmp_path):
    answer = f"Here is my proposal.\n```json\n{json.dumps(GOOD, indent=2)}\n```\nHope it helps!"
    usages: list[Usage] = []
    llm = client(tmp_path, [{"step": "research", "response": answer}], on_usage=usages.append)
    obj = llm.structured(ASK, Proposal, step="research", experiment=7)
    assert obj == Proposal(**GOOD)
    [rec] = log(tmp_path)
    assert set(rec) >= {"ts", "experiment", "step", "attempt", "model", "request", "request_hash",
                        "response", "error", "valid", "prompt_tokens", "completion_tokens",
                        "cost_usd", "latency_s"}
    assert (rec["experiment"], rec["step"], rec["attempt"], rec["valid"]) == (7, "research", 0, True)
    assert rec["model"] == llm.model and rec["response"] == answer and rec["error"] is None
    assert rec["request"]["messages"] == ASK and rec["request"]["temperature"] == 0.7
    assert rec["request"]["mode"] == "prompt" and rec["finish_reason"] == "stop"
    assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0  # litellm's mock fills usage
    assert rec["cost_usd"] == 0.0 and rec["latency_s"] >= 0
    assert [(u.prompt_tokens, u.completion_tokens) for u in usages] == [
        (rec["prompt_tokens"], rec["completion_tokens"])]


@pytest.mark.parametrize("bad, schema, check, expect", [
    ("I think we should try a gated convolution.", Proposal, None, "no JSON object"),
    ({"name": "x"}, Proposal, None, "field 'motivation': Field required"),
    ("", Proposal, None, "the answer was empty"),
    ('{"code": "class Mixer(:\\n  pass"}', Code, code_parses, "the code does not parse"),
    ('{"name": "x", "motivation": "y"', Proposal, None, "never closed"),
    ('{"name": "x", "motivation": 3}', Proposal, None, "field 'motivation': Input should be a valid string (got 3)"),
])
def test_bad_answer_gets_feedback_then_succeeds(tmp_path, bad, schema, check, expect):
    good = GOOD if schema is Proposal else {"code": "class Mixer:\n    pass\n"}
    llm = client(tmp_path, [{"step": "code", "attempt": 0, "response": bad},
                            {"step": "code", "attempt": 1, "response": good}])
    obj = llm.structured(ASK, schema, step="code", experiment=1, check=check)
    assert obj == schema(**good)
    first, second = log(tmp_path)
    assert first["valid"] is False and expect in first["error"]
    assert second["valid"] is True and second["attempt"] == 1
    sent = second["request"]["messages"]
    assert sent[:2] == ASK
    bad_text = bad if isinstance(bad, str) else json.dumps(bad)
    # the failed answer goes back as the assistant's turn (an empty one is left out)
    assert [m["role"] for m in sent[2:]] == (["assistant", "user"] if bad_text else ["user"])
    if bad_text:
        assert sent[2]["content"] == bad_text
    feedback = sent[-1]["content"]
    assert expect in feedback and "only a JSON object" in feedback
    assert '"required":[' in feedback and all(f'"{f}"' in feedback for f in schema.model_fields)
    assert len(sent) <= 4, "a retry carries only the last bad answer"


def test_all_attempts_bad_raises_readable_error_and_logs_each(tmp_path):
    llm = client(tmp_path, [{"step": "research", "response": "no idea"}], max_attempts=3)
    with pytest.raises(LLMError) as e:
        llm.structured(ASK, Proposal, step="research", experiment=4)
    msg = str(e.value)
    assert "research" in msg and "experiment 4" in msg and "3 attempts" in msg
    assert "no JSON object" in msg
    recs = log(tmp_path)
    assert [(r["attempt"], r["valid"]) for r in recs] == [(0, False), (1, False), (2, False)]
    assert all(r["response"] == "no idea" for r in recs)


def test_request_hash_stable_and_content_sensitive(tmp_path):
    llm = client(tmp_path, [{"step": "research", "response": GOOD}])
    llm.structured(ASK, Proposal, step="research", experiment=1)
    llm.structured(ASK, Proposal, step="research", experiment=2)
    changed = [ASK[0], {"role": "user", "content": "Propose a different architecture."}]
    llm.structured(changed, Proposal, step="research", experiment=3)
    h1, h2, h3 = (r["request_hash"] for r in log(tmp_path))
    assert h1 == h2 != h3
    assert len(h1) == 64


def test_secret_from_env_never_reaches_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-456")
    llm = client(tmp_path, [{"step": "research", "response": GOOD}])
    llm.structured(ASK, Proposal, step="research", experiment=1)
    # a real provider call that fails in transport (nothing listens on port 9 of loopback)
    real = LLMClient("openai/gpt-4.1", tmp_path / "run" / "llm.jsonl", api_base="http://127.0.0.1:9",
                     policy=RetryPolicy(retries=0), timeout_s=5)
    with pytest.raises(ModelUnreachable) as e:
        real.text(ASK, step="analyse", experiment=1)
    assert "secret" not in str(e.value)
    text = (tmp_path / "run" / "llm.jsonl").read_text()
    assert "secret-123" not in text and "secret-456" not in text
    assert len(text.splitlines()) == 2


def test_transport_failure_is_named_and_quiet(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-a-real-key-000")
    real = LLMClient("openai/gpt-4.1", tmp_path / "run" / "llm.jsonl", api_base="http://127.0.0.1:9",
                     policy=RetryPolicy(retries=0), timeout_s=5)
    with pytest.raises(ModelUnreachable) as e:
        real.structured(ASK, Proposal, step="research", experiment=2)
    assert "openai/gpt-4.1 is unreachable" in str(e.value) and "Connection" in str(e.value)
    # litellm's mock exception path, via a scripted error rule (a 500)
    llm = client(tmp_path, [{"step": "research", "error": "boom"}], policy=RetryPolicy(retries=0))
    with pytest.raises(ModelUnreachable, match="boom"):
        llm.structured(ASK, Proposal, step="research", experiment=3)
    recs = log(tmp_path)
    assert [r["valid"] for r in recs] == [False, False]
    assert recs[0]["response"] is None and "Connection" in recs[0]["error"]
    assert "boom" in recs[1]["error"]
    out = capsys.readouterr()
    assert "Provider List" not in out.out + out.err and "Give Feedback" not in out.out + out.err


def test_text_answer_and_empty_retry(tmp_path):
    llm = client(tmp_path, [{"step": "analyse", "attempt": 0, "response": ""},
                            {"step": "analyse", "response": "The gated mixer wins by 0.02 bpb."}])
    assert llm.text(ASK, step="analyse", experiment=5) == "The gated mixer wins by 0.02 bpb."
    assert [(r["attempt"], r["valid"]) for r in log(tmp_path)] == [(0, False), (1, True)]


def test_parallel_experiments_log_whole_lines(tmp_path):
    rules = [{"step": "research", "experiment": i, "response": {**GOOD, "name": f"n{i}"}}
             for i in range(8)]
    llm = client(tmp_path, rules)
    results: dict[int, Proposal] = {}

    def run(i: int) -> None:
        results[i] = llm.structured(ASK, Proposal, step="research", experiment=i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: p.name for i, p in results.items()} == {i: f"n{i}" for i in range(8)}
    recs = log(tmp_path)
    assert sorted(r["experiment"] for r in recs) == list(range(8))
    assert all(json.loads(r["response"])["name"] == f"n{r['experiment']}" for r in recs)


def test_cost_comes_from_litellm_price_map():
    from archlab.llm import import_litellm

    litellm = import_litellm()
    priced = litellm.completion(model="openai/gpt-4.1", messages=ASK, mock_response="hi")
    unpriced = litellm.completion(model="openai/scripted", messages=ASK, mock_response="hi")
    assert LLMClient._cost(litellm, priced) > 0
    assert LLMClient._cost(litellm, unpriced) == 0.0


# --- model strings ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["openai/gpt-4.1", "ollama/qwen2.5-coder",
                                   "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct",
                                   "anthropic/claude-sonnet-4-5", "scripted/x.json",
                                   "fireworks_ai/accounts/fireworks/models/llama-v3p1-8b-instruct",
                                   "openrouter/anthropic/claude-3.5-sonnet", "nebius/some-model"])
def test_model_string_accepted(model):
    validate_model_string(model)


@pytest.mark.parametrize("model, says", [
    ("gpt4", "provider/model"), ("openai/", "provider/model"), ("/gpt-4.1", "provider/model"),
    ("foo bar/x", "without spaces"), ("openai/gpt 4", "spaces"),
    ("nosuchprovider/x", "unknown provider 'nosuchprovider'"), ("opneai/gpt-4.1", "openai"),
])
def test_model_string_rejected_with_fix(model, says):
    with pytest.raises(ConfigError) as e:
        validate_model_string(model)
    assert says in str(e.value)
    assert "openai/gpt-4.1" in str(e.value) or "Did you mean" in str(e.value)


def test_validating_a_common_model_does_not_import_litellm():
    code = ("import sys; from archlab.llm import validate_model_string; "
            "validate_model_string('ollama/qwen2.5-coder'); assert 'litellm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- scripted model ----------------------------------------------------------------------------

def test_scripted_most_specific_rule_wins(tmp_path):
    path = Path(script(tmp_path, [
        {"step": "code", "response": "any"},
        {"step": "code", "attempt": 1, "response": "attempt-1"},
        {"step": "code", "experiment": 3, "response": "exp-3"},
        {"step": "code", "experiment": 3, "response": "exp-3-second"},
        {"step": "code", "experiment": 3, "attempt": 1, "response": {"code": "x"}},
    ]).removeprefix("scripted/"))
    m = ScriptedModel(path)
    assert m.answer("code", 9, 0) == "any"
    assert m.answer("code", 9, 1) == "attempt-1"
    assert m.answer("code", 3, 0) == "exp-3"  # ties: first in file
    assert json.loads(m.answer("code", 3, 1)) == {"code": "x"}
    with pytest.raises(LLMError, match="no rule for step 'research', experiment 3, attempt 0"):
        m.answer("research", 3, 0)


@pytest.mark.parametrize("content, says", [
    ("not json", "cannot read"), ('{"rule": []}', '"rules"'),
    ('{"rules": [{"response": "x"}]}', "'step'"),
    ('{"rules": [{"step": "a"}]}', "exactly one of"),
    ('{"rules": [{"step": "a", "experiment": "3", "response": "x"}]}', "'experiment'"),
    ('{"rules": [{"step": "a", "respons": "x"}]}', "unknown keys"),
])
def test_bad_script_is_config_error(tmp_path, content, says):
    (tmp_path / "s.json").write_text(content)
    with pytest.raises(ConfigError, match=says):
        LLMClient(f"scripted/{tmp_path / 's.json'}", tmp_path / "llm.jsonl")
    with pytest.raises(ConfigError, match="no script file"):
        ScriptedModel(tmp_path / "missing.json")


# --- prompts -----------------------------------------------------------------------------------

def test_feedback_template_and_hash():
    text = render("feedback.j2", errors=["field 'name': Field required"], schema={"type": "object"})
    assert "- field 'name': Field required" in text and '{"type":"object"}' in text
    with pytest.raises(Exception, match="errors"):
        render("feedback.j2", schema={})  # StrictUndefined: a missing variable is an error
    expected = hashlib.sha256((TEMPLATE_DIR / "feedback.j2").read_bytes()).hexdigest()
    assert template_source_hash("feedback.j2") == expected


def test_read_object_forms():
    assert read_object('{"name": "a", "motivation": "b"}', Proposal)[0] == Proposal(name="a", motivation="b")
    assert read_object('Sure: {"name": "}", "motivation": "{"} done', Proposal)[0].name == "}"
    assert read_object('```\n{"name": "a", "motivation": "b"}\n```', Proposal)[0].name == "a"
    assert "never closed" in read_object('{"name": "a",', Proposal)[1][0]
