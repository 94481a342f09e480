"""Transport: what a provider's error means. A provider that misbehaves on purpose
cannot be hired here, so a small OpenAI-compatible listener on 127.0.0.1 stands in
for one (real HTTP through litellm and the openai SDK: status codes and headers as
a provider sends them); the scripted model covers the rest."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import BaseModel

from archlab.errors import BudgetExceeded, ModelRefused, ModelUnreachable
from archlab.llm import LLMClient
from archlab.llm.transport import RetryPolicy

ASK = [{"role": "user", "content": "Say hi."}]
OK_BODY = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
           "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
           "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}


class FakeProvider:
    """Answers POST /v1/chat/completions from a list of (status, headers, body); the last repeats."""

    def __init__(self, replies: list[tuple[int, dict, dict]]) -> None:
        self.replies, self.hits, self.bodies = replies, [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))))
                outer.hits.append(time.monotonic())
                status, headers, body = outer.replies[min(len(outer.hits), len(outer.replies)) - 1]
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {**headers, "content-type": "application/json"}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider():
    made: list[FakeProvider] = []

    def make(replies):
        made.append(FakeProvider(replies))
        return made[-1]

    yield make
    for p in made:
        p.close()


def error(message: str, kind: str = "rate_limit_error") -> dict:
    return {"error": {"message": message, "type": kind}}


def real(tmp_path: Path, url: str, **kw) -> LLMClient:
    return LLMClient("openai/test-model", tmp_path / "llm.jsonl", api_base=url, timeout_s=10, **kw)


def log(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "llm.jsonl").read_text().splitlines()]


def test_429_with_retry_after_waits_what_the_provider_asked(tmp_path, provider):
    p = provider([(429, {"retry-after": "1"}, error("slow down")), (200, {}, OK_BODY)])
    llm = real(tmp_path, p.url, policy=RetryPolicy(retries=3, backoff_s=0.01))
    assert llm.text(ASK, step="analyse", experiment=1) == "hi"
    assert len(p.hits) == 2 and p.hits[1] - p.hits[0] >= 0.95, "Retry-After: 1 was not honoured"
    first, second = log(tmp_path)
    assert first["transport_try"] == 1 and "RateLimitError" in first["error"] and "retrying in 1.0 s" in first["error"]
    assert second["valid"] and second["prompt_tokens"] == 7


def test_429_without_retry_after_backs_off_exponentially_with_jitter(tmp_path):
    waits: list[float] = []
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [{"step": "analyse", "status": 429, "times": 4, "error": "slow down"},
                                            {"step": "analyse", "response": "fine"}]}))
    llm = LLMClient(f"scripted/{script}", tmp_path / "llm.jsonl", sleep=waits.append,
                    policy=RetryPolicy(retries=5, backoff_s=1.0, backoff_max_s=60))
    assert llm.text(ASK, step="analyse", experiment=1) == "fine"
    assert len(waits) == 4
    for i, w in enumerate(waits):  # 1, 2, 4, 8 s, each jittered down to half at most
        assert 2 ** i * 0.5 <= w <= 2 ** i, waits


def test_a_retry_after_beyond_the_limit_pauses_at_once(tmp_path):
    waits: list[float] = []
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [{"step": "analyse", "status": 429, "retry_after": 3600,
                                             "error": "quota"}]}))
    llm = LLMClient(f"scripted/{script}", tmp_path / "llm.jsonl", sleep=waits.append,
                    policy=RetryPolicy(retries=5, retry_after_max_s=300))
    with pytest.raises(ModelUnreachable, match="asks to wait 3600 s"):
        llm.text(ASK, step="analyse", experiment=1)
    assert waits == [] and len(log(tmp_path)) == 1


@pytest.mark.parametrize("status, hint", [(401, "API key"), (403, "no access"), (404, "does not know this model")])
def test_refusals_are_not_retried_and_say_what_to_fix(tmp_path, provider, status, hint):
    p = provider([(status, {}, error("nope", "invalid_request_error"))])
    llm = real(tmp_path, p.url, policy=RetryPolicy(retries=5, backoff_s=0.01))
    with pytest.raises(ModelRefused) as e:
        llm.text(ASK, step="analyse", experiment=1)
    assert len(p.hits) == 1 and hint in str(e.value) and "resume" in str(e.value)
    with pytest.raises(ModelRefused):  # the client is down now: no further calls go out
        llm.text(ASK, step="analyse", experiment=2)
    assert len(p.hits) == 1


def test_a_bad_request_is_not_retried(tmp_path, provider):
    p = provider([(400, {}, error("temperature must be at most 2", "invalid_request_error"))])
    with pytest.raises(ModelRefused, match="temperature must be at most 2"):
        real(tmp_path, p.url, policy=RetryPolicy(retries=5, backoff_s=0.01)).text(ASK, step="analyse", experiment=1)
    assert len(p.hits) == 1


def test_an_outage_outlasting_the_retries_is_unreachable_and_trips_the_breaker(tmp_path, provider):
    p = provider([(503, {}, error("overloaded", "server_error"))])
    llm = real(tmp_path, p.url, policy=RetryPolicy(retries=2, backoff_s=0.01))
    with pytest.raises(ModelUnreachable, match="3 tries failed in a row"):
        llm.text(ASK, step="analyse", experiment=1)
    assert len(p.hits) == 3
    with pytest.raises(ModelUnreachable):  # parallel experiments stop at once too
        llm.text(ASK, step="analyse", experiment=2)
    assert len(p.hits) == 3
    assert [r["transport_try"] for r in log(tmp_path)] == [1, 2, 3]


def test_a_server_refusing_json_schema_is_downgraded_once(tmp_path, provider):
    class Hi(BaseModel):
        greeting: str

    refusal = (500, {}, error("1 validation error: response_format.type: Input should be 'text' or 'json_object'",
                              "server_error"))
    ok = dict(OK_BODY, choices=[{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": '{"greeting": "hi"}'}}])
    p = provider([refusal, (200, {}, ok)])
    llm = real(tmp_path, p.url)
    assert llm.mode == "json_schema"  # auto, for an OpenAI-compatible server
    assert llm.structured(ASK, Hi, step="research", experiment=1).greeting == "hi"
    assert llm.mode == "json_object" and len(p.hits) == 2
    assert p.bodies[0]["response_format"]["type"] == "json_schema"
    assert p.bodies[1]["response_format"] == {"type": "json_object", "schema": Hi.model_json_schema()}
    llm.structured(ASK, Hi, step="research", experiment=2)
    assert len(p.hits) == 3 and p.bodies[2]["response_format"]["type"] == "json_object"


def test_a_context_window_error_trims_once_and_retries(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"step": "analyse", "attempt": 0, "status": 400, "error": "maximum context length is 4096 tokens"},
        {"step": "analyse", "response": "fits now"}]}))
    budgets: list[int] = []

    def fit(budget: int) -> list[dict]:
        budgets.append(budget)
        return [{"role": "user", "content": "x" * min(budget, 50)}]

    llm = LLMClient(f"scripted/{script}", tmp_path / "llm.jsonl", context_tokens=4096)
    assert llm.text(None, step="analyse", experiment=1, fit=fit) == "fits now"
    assert len(budgets) == 2 and budgets[1] == budgets[0] * 6 // 10


def test_the_budget_is_checked_before_every_attempt(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [{"step": "research", "response": "not json at all"}]}))
    spent = {"calls": 0}

    def guard() -> None:
        if spent["calls"] >= 2:
            raise BudgetExceeded("USD budget reached")

    llm = LLMClient(f"scripted/{script}", tmp_path / "llm.jsonl", max_attempts=5, guard=guard,
                    on_usage=lambda u: spent.__setitem__("calls", spent["calls"] + 1))

    class Hi(BaseModel):
        greeting: str

    with pytest.raises(BudgetExceeded):
        llm.structured(ASK, Hi, step="research", experiment=1)
    assert spent["calls"] == 2 and len(log(tmp_path)) == 2
