"""The LLM client: litellm underneath, structured answers into pydantic models.

Every attempt is one JSON line in the campaign's llm.jsonl (request, response,
tokens, cost, a hash of the request): that file is what replay feeds back.
litellm is imported lazily (about 2 s) so the CLI and offline runs stay fast.
"""

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from archlab.errors import ConfigError, LLMError
from archlab.scripted import ScriptedModel, script_path

# Common litellm providers, so validating a config never needs the 2 s import.
KNOWN_PROVIDERS = (
    "openai", "anthropic", "ollama", "ollama_chat", "hosted_vllm", "vllm", "azure", "azure_ai",
    "gemini", "vertex_ai", "bedrock", "mistral", "groq", "together_ai", "openrouter", "deepseek",
    "fireworks_ai", "deepinfra", "cohere", "cohere_chat", "huggingface", "xai", "perplexity",
    "cerebras", "sambanova", "nvidia_nim", "databricks", "watsonx", "lm_studio", "llamafile",
    "openai_like", "custom_openai", "litellm_proxy", "dashscope", "moonshot", "scripted",
)
MODEL_FORM = ("provider/model, e.g. openai/gpt-4.1, ollama/qwen2.5-coder, "
              "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct, anthropic/claude-sonnet-4-5 "
              "(offline: scripted/path/to/script.json)")
SCRIPTED_LITELLM_MODEL = "openai/scripted"  # scripted answers still travel through litellm

_litellm = None
_import_lock = threading.Lock()
_log_lock = threading.Lock()

M = TypeVar("M", bound=BaseModel)


def _import_litellm():
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map
            import litellm

            litellm.suppress_debug_info = True  # no "Provider List: ..." banners on errors
            litellm.set_verbose = False
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            _litellm = litellm
    return _litellm


def validate_model_string(model: str) -> None:
    """ConfigError unless `model` is provider/model with a provider litellm knows."""
    provider, sep, name = model.partition("/")
    if not sep or not provider or not name.strip("/"):
        raise ConfigError(f"model {model!r} is not of the form {MODEL_FORM}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.\-]*", provider):
        raise ConfigError(f"model {model!r}: provider {provider!r} must be a lowercase name "
                          f"without spaces; the form is {MODEL_FORM}")
    if provider != "scripted" and re.search(r"\s", name):  # a script path may hold spaces
        raise ConfigError(f"model {model!r}: the model name may not contain spaces; "
                          f"the form is {MODEL_FORM}")
    if provider in KNOWN_PROVIDERS:
        return
    known = sorted(str(getattr(p, "value", p)) for p in _import_litellm().provider_list)
    if provider not in known:
        import difflib

        close = difflib.get_close_matches(provider, known + list(KNOWN_PROVIDERS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model {model!r}: unknown provider {provider!r}.{hint} The form is "
                          f"{MODEL_FORM}; providers: https://docs.litellm.ai/docs/providers")


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float


# --- reading a JSON object out of an answer ----------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)


def _balanced_objects(text: str):
    """Yield each balanced {...} substring, string-literal aware, leftmost first."""
    start, tries = text.find("{"), 0
    while start != -1 and tries < 100:  # bounded: braces in prose code must not go quadratic
        tries += 1
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            c = text[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    yield text[start:i + 1]
                    break
        start = text.find("{", start + 1)


def extract_json_object(text: str) -> dict:
    """The JSON object in an answer: bare, in a ```json fence, or the first {...} in prose.

    ValueError with a message fit to send back to the model."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("the answer was empty")
    if "{" not in stripped:
        raise ValueError("the answer contains no JSON object")
    error = None  # the parse error of the first candidate that looks like an object
    for candidate in [stripped, *(m.group(1) for m in _FENCE.finditer(text)), *_balanced_objects(text)]:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError as e:
            if error is None and candidate.lstrip().startswith("{"):
                error = e
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(f"the JSON object in the answer is invalid: {error}" if error
                     else "the answer contains no valid JSON object")


def _validation_errors(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        out.append(f"field '{loc}': {err['msg']}")
    return out


def _prompt_schema(node: Any, in_properties: bool = False) -> Any:
    """The JSON schema without pydantic's per-field "title" noise (a shorter prompt)."""
    if isinstance(node, dict):
        return {k: _prompt_schema(v, k == "properties" and not in_properties)
                for k, v in node.items() if in_properties or not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_prompt_schema(v) for v in node]
    return node


# --- secrets never reach the log ---------------------------------------------------------------

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_SECRET_SHAPE = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}")


def scrub(text: str, *, key_shapes: bool = False) -> str:
    """Replace values of secret-looking environment variables by ***; with key_shapes, also
    anything shaped like an API key (providers echo keys in error messages)."""
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    return _SECRET_SHAPE.sub("***", text) if key_shapes else text


def _scrub_obj(obj: Any) -> Any:
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: _scrub_obj(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub_obj(v) for v in obj]
    return obj


def request_hash(model: str, messages: list[dict], temperature: float) -> str:
    """sha256 of the canonical JSON of what decides an answer: model, messages, temperature."""
    canon = json.dumps({"model": model, "messages": messages, "temperature": temperature},
                       sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


class LLMClient:
    """One model, one llm.jsonl. Thread-safe: parallel experiments share a client."""

    def __init__(self, model: str, log_path: Path, *, max_attempts: int = 3,
                 temperature: float = 0.7, timeout_s: float = 120.0, api_base: str | None = None,
                 on_usage: Callable[[Usage], None] | None = None, num_retries: int = 2,
                 script: Any = None):
        validate_model_string(model)
        self.model = model
        self.log_path = Path(log_path)
        self.max_attempts = max_attempts
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.api_base = api_base
        self.on_usage = on_usage
        self.num_retries = num_retries
        # Answers from a script instead of a provider: the scripted mock model, or a replay's record.
        if script is None and model.startswith("scripted/"):
            script = ScriptedModel(script_path(model))
        self.script = script

    # --- public -----------------------------------------------------------------------------

    def structured(self, messages: list[dict], schema: type[M], *, step: str, experiment: int | None,
                   check: Callable[[M], list[str]] | None = None) -> M:
        """An answer validated into `schema` (and by `check`), with error feedback and retries."""
        from archlab.prompts import render

        convo = [dict(m) for m in messages]
        errors: list[str] = []
        for attempt in range(self.max_attempts):
            answer, usage, record = self._complete(convo, step, experiment, attempt)
            obj, errors = self._parse(answer, schema, check)
            self._log(record, valid=not errors, error="; ".join(errors) or None)
            self._report(usage)
            if not errors:
                return obj
            if answer.strip():
                convo.append({"role": "assistant", "content": answer})
            convo.append({"role": "user", "content": render(
                "feedback.j2", errors=errors, schema=_prompt_schema(schema.model_json_schema()))})
        listed = "\n".join(f"  - {e}" for e in errors)
        raise LLMError(f"{step} (experiment {experiment}): {self.model} gave no valid "
                       f"{schema.__name__} in {self.max_attempts} attempts; last errors:\n{listed}")

    def text(self, messages: list[dict], *, step: str, experiment: int | None) -> str:
        """A free-form answer; an empty one is asked again, up to max_attempts."""
        for attempt in range(self.max_attempts):
            answer, usage, record = self._complete(list(messages), step, experiment, attempt)
            ok = bool(answer.strip())
            self._log(record, valid=ok, error=None if ok else "the answer was empty")
            self._report(usage)
            if ok:
                return answer
        raise LLMError(f"{step} (experiment {experiment}): {self.model} gave an empty answer "
                       f"{self.max_attempts} times")

    # --- one call ---------------------------------------------------------------------------

    def _complete(self, messages: list[dict], step: str, experiment: int | None,
                  attempt: int) -> tuple[str, Usage, dict]:
        """One litellm call. Returns the answer text, its usage and the log record (not yet
        written); a failed call is logged here and raised as LLMError."""
        litellm = _import_litellm()
        messages = json.loads(json.dumps(messages))  # a snapshot: the log must not change later
        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "experiment": experiment, "step": step, "attempt": attempt, "model": self.model,
            "request": {"messages": messages, "temperature": self.temperature},
            "request_hash": request_hash(self.model, messages, self.temperature),
            "response": None, "error": None, "valid": False,
            "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "latency_s": 0.0,
        }
        kwargs: dict[str, Any] = dict(model=self.model, messages=messages,
                                      temperature=self.temperature, timeout=self.timeout_s,
                                      num_retries=self.num_retries, drop_params=True)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if hasattr(self.script, "check_request"):  # replay: a request unlike the recorded one stops it
            self.script.check_request(record)
        t0 = time.perf_counter()
        try:
            if self.script is not None:
                rule = self.script.rule(step, experiment, attempt)
                kwargs["model"] = SCRIPTED_LITELLM_MODEL
                kwargs["mock_response"] = (rule.response if rule.error is None
                                           else Exception(f"scripted error: {rule.error}"))
            response = litellm.completion(**kwargs)
        except Exception as e:
            record["latency_s"] = round(time.perf_counter() - t0, 4)
            if isinstance(e, LLMError):
                message = str(e)
            else:
                message = (f"{step} (experiment {experiment}): the call to {self.model} failed "
                           f"after {self.num_retries} retries: {type(e).__name__}: {str(e)[:1000]}")
            message = scrub(message, key_shapes=True)
            self._log(record, valid=False, error=message)
            raise LLMError(message) from None
        latency = time.perf_counter() - t0
        answer = response.choices[0].message.content or ""
        usage = Usage(prompt_tokens=int(getattr(response.usage, "prompt_tokens", 0) or 0),
                      completion_tokens=int(getattr(response.usage, "completion_tokens", 0) or 0),
                      cost_usd=self._cost(litellm, response), latency_s=round(latency, 4))
        record.update(response=answer, prompt_tokens=usage.prompt_tokens,
                      completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd,
                      latency_s=usage.latency_s)
        return answer, usage, record

    @staticmethod
    def _cost(litellm, response) -> float:
        try:
            return float(litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:  # a model missing from litellm's price map (local, scripted) costs 0
            return 0.0

    @staticmethod
    def _parse(answer: str, schema: type[M], check) -> tuple[M | None, list[str]]:
        try:
            obj = schema.model_validate(extract_json_object(answer))
        except ValueError as e:  # pydantic's ValidationError is a ValueError too
            return None, _validation_errors(e) if isinstance(e, ValidationError) else [str(e)]
        errors = list(check(obj)) if check else []
        return (None, errors) if errors else (obj, [])

    def _report(self, usage: Usage) -> None:
        if self.on_usage is not None:
            self.on_usage(usage)  # may raise BudgetExceeded: the attempt is already logged

    def _log(self, record: dict, *, valid: bool, error: str | None) -> None:
        line = json.dumps(_scrub_obj({**record, "valid": valid, "error": error}),
                          ensure_ascii=False) + "\n"
        with _log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line)
