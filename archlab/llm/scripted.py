"""The scripted model: a named stand-in for a hosted LLM, for tests and offline demos.

Model string `scripted/<path-to-script.json>`. A script is JSON:

    {"rules": [
        {"step": "research", "response": "..."},
        {"step": "code", "experiment": 3, "attempt": 0, "response": {"code": "..."},
         "finish_reason": "length", "reasoning": "...", "usage": {"prompt_tokens": 900, "completion_tokens": 4000}},
        {"step": "research", "status": 429, "retry_after": 2, "times": 3, "error": "slow down"},
        {"step": "chat:0:0", "response": "", "tool_calls": [{"name": "leaderboard", "arguments": {}}]},
        {"step": "research", "response": "...", "usage": {"prompt_tokens": 5000, "completion_tokens": 1000},
         "priced_as": "gpt-4.1"}
    ]}

`experiment` and `attempt` are optional (absent = any). A call is answered by the
most specific matching rule (experiment+attempt > experiment > attempt > step only;
ties: first in file); a rule with `times` answers that many calls, then the next
rule matches. Matching by (step, experiment, attempt) and not by call order keeps
answers exact under parallel experiments and resume. A `response` that is a JSON
object or list is sent as its json.dumps. An `error` fails the call the way a
provider does: `status` 429/5xx/401/403/404/400 raise litellm's exception for that
status (`retry_after` sets the Retry-After header), "timeout" and "connection" a
timeout or a connection error; a 400 whose error mentions "context" is a
context-window error. Every answer travels through litellm (`mock_response`).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.errors import ConfigError, LLMError

PREFIX = "scripted/"
RULE_KEYS = {"step", "experiment", "attempt", "response", "error", "status", "retry_after", "times",
             "finish_reason", "reasoning", "tool_calls", "usage", "priced_as"}


@dataclass(frozen=True)
class Rule:
    step: str
    experiment: int | None
    attempt: int | None
    response: str | None  # exactly one of response / error
    error: str | None
    status: int | str | None = None
    retry_after: float | None = None
    times: int | None = None
    finish_reason: str = "stop"
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, int] | None = field(default=None, hash=False)
    priced_as: str | None = None  # a model of litellm's price map: the answer costs what that model's would

    def matches(self, step: str, experiment: int | None, attempt: int) -> bool:
        return (self.step == step and (self.experiment is None or self.experiment == experiment)
                and (self.attempt is None or self.attempt == attempt))

    @property
    def specificity(self) -> int:
        return 2 * (self.experiment is not None) + (self.attempt is not None)


def script_path(model: str) -> Path:
    """The script file named by a `scripted/<path>` model string."""
    return Path(model.removeprefix(PREFIX))


def _int_or_none(raw: dict[str, Any], key: str, where: str) -> None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{where}: '{key}' must be an integer or absent")


def _parse_rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a rule must be a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - RULE_KEYS
    if unknown:
        optional = sorted(RULE_KEYS - {"step", "experiment", "attempt", "response", "error"})
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; a rule has step, experiment?, attempt?, "
                          f"and response or error (optional: {', '.join(optional)})")
    if not isinstance(raw.get("step"), str) or not raw["step"]:
        raise ConfigError(f"{where}: 'step' (a non-empty string) is required")
    for key in ("experiment", "attempt", "times"):
        _int_or_none(raw, key, where)
    if ("response" in raw) == ("error" in raw or "status" in raw):
        raise ConfigError(f"{where}: give exactly one of 'response' or 'error' (with an optional 'status')")
    status = raw.get("status")
    if status is not None and not (isinstance(status, int) and 400 <= status < 600
                                   or status in ("timeout", "connection")):
        raise ConfigError(f"{where}: 'status' must be an HTTP error status (400-599), \"timeout\" or \"connection\"")
    error = raw.get("error", f"HTTP {status}" if status is not None else None)
    if "error" in raw and not isinstance(error, str):
        raise ConfigError(f"{where}: 'error' must be a string")
    response = raw.get("response")
    if "response" in raw and not isinstance(response, str):
        # objects and lists are what a model would write as JSON; null is an empty answer
        response = "" if response is None else json.dumps(response, ensure_ascii=False)
    calls = raw.get("tool_calls")
    if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) and "name" in c for c in calls)):
        raise ConfigError(f"{where}: 'tool_calls' must be a list of {{\"name\": ..., \"arguments\": ...}}")
    return Rule(raw["step"], raw.get("experiment"), raw.get("attempt"), response, error, status,
                raw.get("retry_after"), raw.get("times"), raw.get("finish_reason") or "stop", raw.get("reasoning"),
                calls, raw.get("usage"), raw.get("priced_as"))


class ScriptedModel:
    """Answers calls from a script file; see the module docstring for the format."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"scripted model: no script file at {self.path}") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"scripted model: cannot read {self.path}: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise ConfigError(f'scripted model {self.path}: expected {{"rules": [...]}} at the top')
        self.rules = [_parse_rule(r, f"{self.path} rule {i}") for i, r in enumerate(data["rules"])]
        self._used: dict[int, int] = {}
        self._lock = threading.Lock()

    def rule(self, step: str, experiment: int | None, attempt: int) -> Rule:
        """The most specific rule for this call (counting it against its `times`);
        LLMError when none matches."""
        with self._lock:
            best: int | None = None
            for i, r in enumerate(self.rules):  # strict '>' keeps the first of equally specific rules
                if not r.matches(step, experiment, attempt):
                    continue
                if r.times is not None and self._used.get(i, 0) >= r.times:
                    continue
                if best is None or r.specificity > self.rules[best].specificity:
                    best = i
            if best is None:
                raise LLMError(
                    f"scripted model {self.path} has no rule for step {step!r}, experiment {experiment}, "
                    f"attempt {attempt}; add one, e.g. "
                    f'{{"step": "{step}", "experiment": {json.dumps(experiment)}, "attempt": {attempt}, '
                    f'"response": "..."}}')
            self._used[best] = self._used.get(best, 0) + 1
            return self.rules[best]

    def answer(self, step: str, experiment: int | None, attempt: int) -> str:
        """The scripted response text; LLMError for an `error` rule or no match."""
        r = self.rule(step, experiment, attempt)
        if r.error is not None:
            raise LLMError(f"scripted model {self.path}: scripted error for step {step!r}: {r.error}")
        assert r.response is not None
        return r.response


def _tool_call(i: int, step: str, call: dict[str, Any]) -> dict[str, Any]:
    args = call.get("arguments")
    return {"id": call.get("id") or f"call_{step.replace(':', '_')}_{i}", "type": "function",
            "function": {"name": call["name"], "arguments": args if isinstance(args, str) else json.dumps(args or {})}}


def mock_response(rule: Rule, model: str) -> Any:
    """What litellm's `mock_response` gets for a rule: the text (litellm fills usage),
    a full ModelResponse (finish reason, tool calls, reasoning, usage), or the
    exception a provider would raise."""
    litellm = __import__("litellm")
    if rule.error is not None:
        return provider_error(rule.status, rule.error, rule.retry_after, model)
    if rule.tool_calls is None and (rule.response or "").lstrip().startswith("{"):
        try:  # a logged chat answer, {"content": ..., "tool_calls": [...]}, is a script too
            data = json.loads(rule.response or "")
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
            from dataclasses import replace

            rule = replace(rule, response=data.get("content") or "", tool_calls=data["tool_calls"])
    plain = (rule.finish_reason == "stop" and rule.reasoning is None and not rule.tool_calls and rule.usage is None
             and rule.priced_as is None)
    if plain:
        return rule.response or ""
    calls = [_tool_call(i, rule.step, c) for i, c in enumerate(rule.tool_calls or [])]
    message: dict[str, Any] = {"role": "assistant", "content": rule.response or ""}
    if calls:
        message["tool_calls"] = calls
    if rule.reasoning is not None:
        message["reasoning_content"] = rule.reasoning
    usage = rule.usage or {}
    prompt, completion = int(usage.get("prompt_tokens", 10)), int(usage.get("completion_tokens", 20))
    return litellm.ModelResponse(
        model=rule.priced_as or model,
        choices=[{"index": 0, "finish_reason": "tool_calls" if calls and rule.finish_reason == "stop"
                  else rule.finish_reason, "message": message}],
        usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})


def provider_error(status: int | str | None, message: str, retry_after: float | None, model: str) -> Exception:
    """The exception litellm raises for a provider's error of this status."""
    import httpx
    import litellm

    if status == "timeout":
        return litellm.Timeout(message=f"scripted: {message}", model=model, llm_provider="openai")
    if status == "connection":
        return litellm.APIConnectionError(message=f"scripted: {message}", llm_provider="openai", model=model)
    if status is None:
        return Exception(f"scripted error: {message}")
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    response = httpx.Response(int(status), headers=headers, request=httpx.Request("POST", "http://scripted/v1"))
    by_status = {401: litellm.AuthenticationError, 403: litellm.PermissionDeniedError, 404: litellm.NotFoundError,
                 429: litellm.RateLimitError, 500: litellm.InternalServerError, 502: litellm.BadGatewayError,
                 503: litellm.ServiceUnavailableError}
    kwargs = dict(message=f"scripted: {message}", llm_provider="openai", model=model, response=response)
    if status == 400 and "context" in message.lower():
        return litellm.ContextWindowExceededError(message=f"scripted: {message}", model=model, llm_provider="openai",
                                                  response=response)
    if status == 400:
        return litellm.BadRequestError(**kwargs)
    cls = by_status.get(int(status))
    if cls is None:
        return litellm.APIError(status_code=int(status), **kwargs)
    return cls(**kwargs)
