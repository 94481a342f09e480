"""llm.jsonl: one JSON line per model call (request, response, reasoning, finish
reason, tokens, cost, a hash of the request). It is what replay feeds back, so
secrets are scrubbed before a line is written."""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_SECRET_SHAPE = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}")
_log_lock = threading.Lock()


def scrub(text: str, *, key_shapes: bool = False) -> str:
    """Replace values of secret-looking environment variables by ***; with key_shapes, also
    anything shaped like an API key (providers echo keys in error messages)."""
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    return _SECRET_SHAPE.sub("***", text) if key_shapes else text


def scrub_obj(obj: Any) -> Any:
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: scrub_obj(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_obj(v) for v in obj]
    return obj


def request_hash(model: str, messages: list[dict], temperature: float) -> str:
    """sha256 of the canonical JSON of what decides an answer: model, messages, temperature."""
    canon = json.dumps({"model": model, "messages": messages, "temperature": temperature},
                       sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def new_record(model: str, step: str, experiment: int | None, attempt: int, messages: list[dict],
               temperature: float, **request: Any) -> dict[str, Any]:
    return {
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "experiment": experiment, "step": step, "attempt": attempt, "model": model,
        "request": {"messages": messages, "temperature": temperature,
                    **{k: v for k, v in request.items() if v is not None}},
        "request_hash": request_hash(model, messages, temperature),
        "response": None, "reasoning": None, "tool_calls": None, "finish_reason": None,
        "error": None, "valid": False,
        "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "latency_s": 0.0,
    }


def append(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(scrub_obj(record), ensure_ascii=False) + "\n"
    with _log_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
