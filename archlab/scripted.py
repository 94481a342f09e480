"""The scripted model: a named stand-in for a hosted LLM, for tests and offline demos.

Model string `scripted/<path-to-script.json>`. A script is JSON:

    {"rules": [
        {"step": "research", "response": "..."},
        {"step": "code", "experiment": 3, "attempt": 0, "response": {"code": "..."}},
        {"step": "code", "experiment": 3, "attempt": 1, "error": "rate limited"}
    ]}

`experiment` and `attempt` are optional (absent = any). A call is answered by
the most specific matching rule (experiment+attempt > experiment > attempt >
step only; ties: first in file). Matching by (step, experiment, attempt) and
not by call order keeps answers exact under parallel experiments and resume.
A `response` that is a JSON object or list is sent as its json.dumps; an
`error` rule makes the call fail like a transport error.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archlab.errors import ConfigError, LLMError

PREFIX = "scripted/"


@dataclass(frozen=True)
class Rule:
    step: str
    experiment: int | None
    attempt: int | None
    response: str | None  # exactly one of response / error
    error: str | None

    def matches(self, step: str, experiment: int | None, attempt: int) -> bool:
        return (
            self.step == step
            and (self.experiment is None or self.experiment == experiment)
            and (self.attempt is None or self.attempt == attempt)
        )

    @property
    def specificity(self) -> int:
        return 2 * (self.experiment is not None) + (self.attempt is not None)


def script_path(model: str) -> Path:
    """The script file named by a `scripted/<path>` model string."""
    return Path(model.removeprefix(PREFIX))


def _parse_rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a rule must be a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - {"step", "experiment", "attempt", "response", "error"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; "
                          "a rule has step, experiment?, attempt?, and response or error")
    if not isinstance(raw.get("step"), str) or not raw["step"]:
        raise ConfigError(f"{where}: 'step' (a non-empty string) is required")
    for key in ("experiment", "attempt"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{where}: '{key}' must be an integer or absent")
    if ("response" in raw) == ("error" in raw):
        raise ConfigError(f"{where}: give exactly one of 'response' or 'error'")
    error = raw.get("error")
    if "error" in raw and not isinstance(error, str):
        raise ConfigError(f"{where}: 'error' must be a string")
    response = raw.get("response")
    if "response" in raw and not isinstance(response, str):
        # objects and lists are what a model would write as JSON; null is an empty answer
        response = "" if response is None else json.dumps(response, ensure_ascii=False)
    return Rule(raw["step"], raw.get("experiment"), raw.get("attempt"), response, error)


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

    def rule(self, step: str, experiment: int | None, attempt: int) -> Rule:
        """The most specific rule for this call; LLMError when none matches."""
        best: Rule | None = None
        for r in self.rules:  # strict '>' keeps the first of equally specific rules
            if r.matches(step, experiment, attempt) and (best is None or r.specificity > best.specificity):
                best = r
        if best is None:
            raise LLMError(
                f"scripted model {self.path} has no rule for step {step!r}, experiment {experiment}, "
                f"attempt {attempt}; add one, e.g. "
                f'{{"step": "{step}", "experiment": {json.dumps(experiment)}, "attempt": {attempt}, '
                f'"response": "..."}}')
        return best

    def answer(self, step: str, experiment: int | None, attempt: int) -> str:
        """The scripted response text; LLMError for an `error` rule or no match."""
        r = self.rule(step, experiment, attempt)
        if r.error is not None:
            raise LLMError(f"scripted model {self.path}: scripted error for step {step!r}: {r.error}")
        assert r.response is not None
        return r.response
