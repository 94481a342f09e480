"""Getting one answer from a provider: what a failure means and how long to wait.

Transient failures (429, 5xx, timeouts, connection errors) are retried with
exponential backoff and jitter, honouring Retry-After (tenacity); when they
outlast the retries the model is *unreachable* and the campaign pauses. A
refusal no retry can fix (401, 403, 404, an unknown model) stops it at once.
A context-window error and a server that refuses the structured-output format
are told to the caller, which trims the prompt or downgrades the format."""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archlab.errors import ModelRefused, ModelUnreachable

TRANSIENT, CONTEXT, FORMAT, REFUSED, BAD_REQUEST = "transient", "context", "format", "refused", "bad_request"
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "response format", "'format'", "grammar")
_CREDENTIAL_WORDS = ("missing credentials", "api_key client option must be set", "no api key", "invalid api key",
                     "incorrect api key", "llm provider not provided")
_HINTS = {
    401: "the provider rejected the API key: set it (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY) and resume",
    403: "the key has no access to this model: check the account or choose another [llm] model, then resume",
    404: "the provider does not know this model (or [llm] api_base is wrong): fix [llm] model / api_base, then resume",
}


def status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def classify(exc: BaseException) -> str:
    """One of TRANSIENT, CONTEXT, FORMAT, REFUSED, BAD_REQUEST."""
    import litellm

    text = str(exc).lower()
    if isinstance(exc, litellm.ContextWindowExceededError) or "context length" in text or "context window" in text \
            or "maximum context" in text or "too many tokens" in text:
        return CONTEXT
    status = status_of(exc)
    if status in (400, 422, 500) and any(w in text for w in _FORMAT_WORDS):
        return FORMAT  # e.g. llama.cpp 0.3: "response_format.type: Input should be 'text' or 'json_object'" (a 500)
    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError)) \
            or status in (401, 403, 404) or any(w in text for w in _CREDENTIAL_WORDS):
        return REFUSED
    if isinstance(exc, (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError,
                        litellm.InternalServerError, litellm.ServiceUnavailableError, litellm.BadGatewayError)) \
            or status in (408, 409, 425, 429) or (status is not None and status >= 500):
        return TRANSIENT
    if "timed out" in text or "timeout" in type(exc).__name__.lower() or "connection" in type(exc).__name__.lower():
        return TRANSIENT
    return BAD_REQUEST


def retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait (Retry-After / retry-after-ms), if it said."""
    for headers in (getattr(exc, "headers", None), getattr(getattr(exc, "response", None), "headers", None),
                    getattr(exc, "litellm_response_headers", None)):
        if not headers:
            continue
        try:
            if headers.get("retry-after-ms") is not None:
                return max(0.0, float(headers["retry-after-ms"]) / 1000)
            if headers.get("retry-after") is not None:
                return max(0.0, float(headers["retry-after"]))
        except (TypeError, ValueError):
            continue  # an HTTP date: fall back to our own backoff
    return None


@dataclass
class RetryPolicy:
    retries: int = 5               # transient failures retried per call before the model counts as unreachable
    backoff_s: float = 1.0         # first wait; doubles each retry, with jitter
    backoff_max_s: float = 60.0    # longest wait between two tries
    retry_after_max_s: float = 300.0  # a provider asking for longer pauses the campaign now

    def wait(self, failures: int, exc: BaseException, rng: random.Random) -> float:
        """Seconds before the next try: Retry-After when given, else exponential with jitter."""
        asked = retry_after(exc)
        if asked is not None:
            return asked
        base = min(self.backoff_max_s, self.backoff_s * (2 ** (failures - 1)))
        return min(self.backoff_max_s, base * (0.5 + rng.random() / 2))


def describe(exc: BaseException) -> str:
    status = status_of(exc)
    text = " ".join(str(exc).split())[:600]
    return f"{type(exc).__name__}{f' (HTTP {status})' if status else ''}: {text}"


def call_with_retries(call: Callable[[], Any], policy: RetryPolicy, *, model: str,
                      on_failure: Callable[[BaseException, str, float | None], None],
                      sleep: Callable[[float], None] = time.sleep) -> Any:
    """`call()` until it answers. Transient failures wait and try again, up to
    policy.retries; then ModelUnreachable. REFUSED raises ModelRefused at once;
    CONTEXT, FORMAT and BAD_REQUEST are re-raised for the caller. on_failure(exc,
    kind, wait) sees every failure (it logs it)."""
    from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

    rng = random.Random()  # jitter only spreads retries in time; it decides nothing that replay checks
    gave_up: dict[str, Any] = {}

    def transient(exc: BaseException) -> bool:
        return classify(exc) == TRANSIENT

    def wait(state: RetryCallState) -> float:
        if state.attempt_number > policy.retries:
            return 0.0  # tenacity asks before it checks `stop`: this was the last try
        exc = state.outcome.exception()
        seconds = policy.wait(state.attempt_number, exc, rng)
        if seconds > policy.retry_after_max_s:
            on_failure(exc, TRANSIENT, None)
            gave_up["why"] = (f"the provider asks to wait {seconds:.0f} s "
                              f"(longer than {policy.retry_after_max_s:.0f} s); "
                              f"the last error: {describe(exc)}")
            raise _Stop()
        return seconds

    def before_sleep(state: RetryCallState) -> None:
        on_failure(state.outcome.exception(), TRANSIENT, state.next_action.sleep if state.next_action else None)

    retrying = Retrying(stop=stop_after_attempt(policy.retries + 1), wait=wait, sleep=sleep,
                        retry=retry_if_exception(transient), before_sleep=before_sleep, reraise=True)
    try:
        return retrying(call)
    except _Stop:
        raise ModelUnreachable(f"{model} is unreachable: {gave_up['why']}") from None
    except Exception as exc:
        kind = classify(exc)
        if kind == TRANSIENT:
            on_failure(exc, kind, None)
            raise ModelUnreachable(f"{model} is unreachable: {policy.retries + 1} tries failed in a row; "
                                   f"the last: {describe(exc)}") from None
        if kind == REFUSED:
            on_failure(exc, kind, None)
            hint = _HINTS.get(status_of(exc) or 0, "check [llm] model, api_base (a local server needs it: "
                              "--api-base http://127.0.0.1:8080/v1) and the API key, then resume")
            raise ModelRefused(f"{model} refused the request: {describe(exc)}; {hint}") from None
        raise


class _Stop(Exception):
    """Internal: a Retry-After too long to wait for."""
