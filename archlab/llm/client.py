"""The one seam to a model: `LLMClient.complete()`, used by the researcher, coder,
analyst, judge and chat alike, and the three ways agents read answers built on it
(`structured`, `code`, `text`). litellm underneath; every call is a line of llm.jsonl."""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from archlab.errors import LLMError, ModelRefused, ModelUnavailable
from archlab.llm import answers, models, record, schemas, transport
from archlab.llm.loop import CONSTRAINED, AnswerLoop, Completion, ContextOverflow, Usage
from archlab.llm.scripted import ScriptedModel, mock_response, script_path

DOWNGRADE = {"json_schema": "json_object", "json_object": "prompt", "tools": "prompt"}
DEFAULT_MAX_TOKENS = {"research": 1024, "code": 4096, "analyse": 600, "judge": 400, "chat": 1024}
REASONING_ROOM = 4096  # extra completion tokens for a model that thinks before it answers


def _key_for(model: str) -> str:
    return {"anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}.get(models.provider(model), "OPENAI_API_KEY")


class LLMClient(AnswerLoop):
    """One model, one llm.jsonl. Thread-safe: parallel experiments share a client.
    `complete` is the seam; `structured`, `code` and `text` (loop.py) are built on it."""

    def __init__(self, model: str, log_path: Path, *, max_attempts: int = 3, temperature: float = 0.7,
                 code_temperature: float | None = None, timeout_s: float = 120.0, api_base: str | None = None,
                 structured: str = "auto", edit: str = "auto", tools: str = "auto",
                 max_tokens: dict[str, int] | None = None,
                 reasoning_tokens: int | None = None, context_tokens: int | None = None,
                 policy: transport.RetryPolicy | None = None, on_usage: Callable[[Usage], None] | None = None,
                 guard: Callable[[], None] | None = None, script: Any = None, seed: int | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        models.validate_model_string(model)
        self.model, self.log_path = model, Path(log_path)
        self.max_attempts, self.temperature = max_attempts, temperature
        self.timeout_s, self.api_base = timeout_s, api_base
        self.code_temperature = code_temperature
        self.edit, self.tools_mode = edit, tools
        self.max_tokens = {**DEFAULT_MAX_TOKENS, **(max_tokens or {})}
        self.reasoning_tokens = reasoning_tokens
        self.context_tokens = context_tokens
        self.policy = policy or transport.RetryPolicy()
        self.on_usage, self.guard, self.sleep = on_usage, guard, sleep
        self.seed = seed  # the campaign seed: each call sends one derived from it (servers that honour it repeat)
        # Answers from a script instead of a provider: the scripted mock model, or a replay's record.
        if script is None and model.startswith("scripted/"):
            script = ScriptedModel(script_path(model))
        self.script = script
        self._mode = models.structured_mode(model, api_base, structured)
        self._lock = threading.Lock()
        self._down: ModelUnavailable | None = None  # once unreachable or refused, no further calls

    @classmethod
    def from_config(cls, llm: Any, log_path: Path, model: str | None = None, **kwargs: Any) -> LLMClient:
        """A client with the [llm] settings of a Config: for `model` (one of an ensemble), else the default."""
        policy = transport.RetryPolicy(llm.retries, llm.backoff_s, llm.backoff_max_s, llm.retry_after_max_s)
        settings = dict(max_attempts=llm.max_attempts, temperature=llm.temperature,
                        code_temperature=llm.code_temperature, timeout_s=llm.timeout_s,
                        api_base=llm.api_base, structured=llm.structured, edit=llm.edit, tools=llm.tools,
                        max_tokens=llm.max_tokens.model_dump(), reasoning_tokens=llm.reasoning_tokens,
                        context_tokens=llm.context_tokens, policy=policy)
        return cls(model or llm.model or llm.models[0], log_path, **{**settings, **kwargs})

    def reset(self) -> None:
        """Forget an earlier outage or refusal: the next call goes out again (a chat's next question)."""
        with self._lock:
            self._down = None

    # --- what the client does, in words (doctor, the campaign header) ----------------------
    @property
    def mode(self) -> str:
        return self._mode

    def describe(self) -> str:
        window = self.window()
        return (f"{self.model}{f' at {self.api_base}' if self.api_base else ''}; structured output: {self._mode}"
                f"{' (falls back to a simpler format if the server refuses)' if self._mode in CONSTRAINED else ''}; "
                f"input window {window:,} tokens; chat tools: "
                f"{'native' if models.native_tools(self.model, self.tools_mode) else 'JSON actions'}")

    def window(self) -> int:
        return models.input_window(self.model, self.context_tokens)

    def completion_tokens(self, step: str) -> int:
        room = self.reasoning_tokens
        if room is None:
            room = REASONING_ROOM if models.supports_reasoning(self.model) else 0
        return self.max_tokens.get(step.split(":")[0], 1024) + room

    def budget(self, step: str) -> int:
        """Tokens the prompt of `step` may take: the window less the answer's room."""
        from archlab.llm.window import MARGIN

        return max(256, self.window() - self.completion_tokens(step) - MARGIN)

    # --- the seam -------------------------------------------------------------------------
    def complete(self, messages: list[dict[str, Any]], *, step: str, experiment: int | None, attempt: int,
                 tools: list[dict[str, Any]] | None = None, schema: type[BaseModel] | None = None,
                 validate: Callable[[Completion], list[str]] | None = None) -> Completion:
        """One answer, with transport retries; logged (with `validate`'s verdict) and billed.
        Raises ModelUnreachable / ModelRefused (the campaign pauses or stops), ContextOverflow,
        BudgetExceeded (from the guard, before any call), or LLMError."""
        if self._down is not None:
            raise type(self._down)(str(self._down))
        if self.guard is not None:
            self.guard()  # the budget is checked before every attempt: overshoot is at most one call
        messages = json.loads(json.dumps(messages))  # a snapshot: the log must not change later
        while True:
            mode = self._mode if schema is not None else "text"
            try:
                return self._call(messages, step, experiment, attempt, tools, schema, mode, validate)
            except _Downgrade:
                continue

    def _call(self, messages: list[dict[str, Any]], step: str, experiment: int | None, attempt: int,
              tools: list[dict[str, Any]] | None, schema: type[BaseModel] | None, mode: str,
              validate: Callable[[Completion], list[str]] | None) -> Completion:
        litellm = models.import_litellm()
        max_tokens = self.completion_tokens(step)
        temperature = self.temperature_for(step)
        rec = record.new_record(self.model, step, experiment, attempt, messages, temperature,
                                tools=[t["function"]["name"] for t in tools] if tools else None,
                                mode=mode, max_tokens=max_tokens)
        kwargs = self._kwargs(messages, max_tokens, tools, schema, mode, temperature)
        if self.seed is not None:
            kwargs["seed"] = rec["request"]["seed"] = call_seed(self.seed, experiment, step, attempt)
        if hasattr(self.script, "check_request"):  # replay: a request unlike the recorded one stops it
            self.script.check_request(rec)
        failures = 0

        def once() -> Any:
            if self.script is not None:
                rule = self.script.rule(step, experiment, attempt)
                return litellm.completion(**{**kwargs, "model": models.SCRIPTED_LITELLM_MODEL,
                                             "mock_response": mock_response(rule, models.SCRIPTED_LITELLM_MODEL)})
            return litellm.completion(**kwargs)

        def failed(exc: BaseException, kind: str, wait: float | None) -> None:
            nonlocal failures
            failures += 1
            note = f"; retrying in {wait:.1f} s" if wait is not None else ""
            self._write({**rec, "transport_try": failures},
                        valid=False, error=record.scrub(f"{kind}: {transport.describe(exc)}{note}", key_shapes=True))

        t0 = time.perf_counter()
        try:
            response = transport.call_with_retries(once, self.policy, model=self.model, on_failure=failed,
                                                   sleep=self.sleep)
        except ModelUnavailable as exc:
            with self._lock:
                self._down = self._down or exc
            raise
        except LLMError as exc:  # a scripted model without a rule, or a replay's recorded failure
            self._write(rec, valid=False, error=record.scrub(str(exc), key_shapes=True))
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            kind = transport.classify(exc)
            text = record.scrub(transport.describe(exc), key_shapes=True)
            self._write({**rec, "latency_s": round(time.perf_counter() - t0, 4)}, valid=False, error=f"{kind}: {text}")
            if kind == transport.FORMAT and mode in DOWNGRADE:
                with self._lock:
                    if self._mode == mode:
                        self._mode = DOWNGRADE[mode]
                raise _Downgrade() from None
            if kind == transport.CONTEXT:
                raise ContextOverflow(f"{step} (experiment {experiment}): the prompt does not fit "
                                      f"{self.model}'s window: {text}") from None
            refused = ModelRefused(f"{self.model} refused the request ({step}, experiment {experiment}): {text}; "
                                   "check [llm] model, api_base and the request settings, then resume")
            with self._lock:
                self._down = self._down or refused
            raise refused from None
        return self._finish(response, rec, mode, time.perf_counter() - t0, validate, litellm)

    def temperature_for(self, step: str) -> float:
        if step.split(":")[0] == "code" and self.code_temperature is not None:
            return self.code_temperature
        return self.temperature

    def _kwargs(self, messages: list[dict[str, Any]], max_tokens: int, tools: list[dict[str, Any]] | None,
                schema: type[BaseModel] | None, mode: str, temperature: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(model=self.model, messages=messages, temperature=temperature,
                                      timeout=self.timeout_s, max_tokens=max_tokens, num_retries=0, max_retries=0,
                                      drop_params=True)
        if self.api_base:
            kwargs["api_base"] = self.api_base
            if not os.environ.get(_key_for(self.model)):
                kwargs["api_key"] = "no-key"  # local OpenAI-compatible servers want a key, any key
        if models.provider(self.model) in ("ollama", "ollama_chat"):
            kwargs["num_ctx"] = self.window()  # else Ollama cuts the prompt to its own default silently
        if tools:
            kwargs["tools"] = tools
        if schema is not None and mode in CONSTRAINED:
            body = schemas.for_decoding(schema)
            if mode == "json_schema":
                kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": schema.__name__, "schema": body, "strict": False}}
            elif mode == "json_object":
                kwargs["response_format"] = {"type": "json_object", "schema": body}  # llama.cpp constrains to it
            else:
                kwargs["tools"] = [{"type": "function", "function": {
                    "name": schema.__name__, "description": (schema.__doc__ or "").strip(), "parameters": body}}]
                kwargs["tool_choice"] = {"type": "function", "function": {"name": schema.__name__}}
        return kwargs

    def _finish(self, response: Any, rec: dict[str, Any], mode: str, latency: float,
                validate: Callable[[Completion], list[str]] | None, litellm: Any) -> Completion:
        choice = response.choices[0]
        msg = choice.message
        raw = msg.content or ""
        calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
                 for tc in (getattr(msg, "tool_calls", None) or [])]
        if mode == "tools" and calls and not raw.strip():
            raw = calls[0]["arguments"] or ""  # the schema travelled as the forced tool's arguments
            calls = []
        text, thought = answers.strip_reasoning(raw)
        reasoning = "\n".join(x for x in (getattr(msg, "reasoning_content", None) or "", thought) if x).strip()
        usage = Usage(int(getattr(response.usage, "prompt_tokens", 0) or 0),
                      int(getattr(response.usage, "completion_tokens", 0) or 0),
                      self._cost(litellm, response), round(latency, 4))
        done = Completion(text, raw, reasoning, calls, str(choice.finish_reason or "stop"), usage, mode)
        done.errors = (list(validate(done)) if validate
                       else ([] if (text.strip() or calls) else ["the answer was empty"]))
        rec.update(response=raw, reasoning=reasoning or None, tool_calls=calls or None,
                   finish_reason=done.finish_reason, prompt_tokens=usage.prompt_tokens,
                   completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd, latency_s=usage.latency_s)
        self._write(rec, valid=not done.errors, error="; ".join(done.errors) or None)
        if self.on_usage is not None:
            self.on_usage(usage)  # may raise BudgetExceeded: the call is already logged
        return done

    @staticmethod
    def _cost(litellm: Any, response: Any) -> float:
        try:
            return float(litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:  # noqa: BLE001 - a model missing from litellm's price map (local, scripted) costs 0
            return 0.0

    def _write(self, rec: dict[str, Any], *, valid: bool, error: str | None) -> None:
        record.append(self.log_path, {**rec, "valid": valid, "error": error})


def call_seed(seed: int, experiment: int | None, step: str, attempt: int) -> int:
    """The sampling seed of one call, from the campaign seed and where the call is (never from time)."""
    import hashlib

    key = f"{seed}:{experiment}:{step}:{attempt}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF


class _Downgrade(Exception):
    """Internal: the server refused the structured-output format; ask again in a simpler one."""
