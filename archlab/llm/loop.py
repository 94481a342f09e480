"""Asking until an answer can be used, on top of `LLMClient.complete`: a structured
object, a module, or words. Each retry carries only the last bad answer and what was
wrong with it; a cut-off answer is told as cut off; a prompt the provider finds too
long is trimmed once more."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from archlab.errors import LLMError
from archlab.llm import answers, edits, schemas

M = TypeVar("M", bound=BaseModel)
FitFn = Callable[[int], list[dict[str, Any]]]
CONSTRAINED = ("json_schema", "json_object", "tools")


class ContextOverflow(LLMError):
    """The provider said the prompt does not fit its window."""


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float


@dataclass
class Completion:
    """One answer: `text` is what the model said with its reasoning removed."""

    text: str
    raw: str
    reasoning: str
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: Usage
    mode: str
    errors: list[str] = field(default_factory=list)

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == "length"


class AnswerLoop:
    """The answer-reading half of LLMClient (it provides complete, budget, model, ...)."""

    model: str
    max_attempts: int
    _mode: str
    complete: Callable[..., Completion]
    budget: Callable[[str], int]
    completion_tokens: Callable[[str], int]

    def _attempts(self, messages: list[dict[str, Any]] | None, fit: FitFn | None, step: str, experiment: int | None,
                  read: Callable[[Completion], tuple[Any, list[str]]], what: str, schema: type[BaseModel] | None = None,
                  cut_hint: str = "") -> Any:
        """Ask until `read` accepts an answer: each retry carries only the last bad answer and
        what was wrong with it; a cut-off answer is told as cut off; a prompt the provider
        finds too long is trimmed once more."""
        from archlab.prompts import render

        budget = self.budget(step)
        base = fit(budget) if fit is not None else list(messages or [])
        retry: list[dict[str, Any]] = []
        errors: list[str] = []
        refit, call, tries = fit is not None, 0, 0
        while tries < self.max_attempts:
            result: dict[str, Any] = {}

            def validate(c: Completion, result: dict[str, Any] = result) -> list[str]:
                if c.cut_off:
                    return [f"the answer was cut off at the {self.completion_tokens(step)}-token limit before it "
                            f"was complete{cut_hint}"]
                value, problems = read(c)
                result["value"] = value
                return problems

            try:
                done = self.complete(base + retry, step=step, experiment=experiment, attempt=call,
                                     schema=schema, validate=validate)
            except ContextOverflow:
                call += 1
                if not refit:
                    raise
                refit, budget = False, budget * 6 // 10
                base = fit(budget)
                continue
            call += 1
            tries += 1
            if not done.errors:
                return result["value"]
            if done.cut_off and schema is None and what == "answer" and tries >= min(2, self.max_attempts):
                self._last_cut(done)  # prose cut off twice: keep it, marked, rather than pay for more
            errors = done.errors
            retry = ([{"role": "assistant", "content": done.raw}] if done.raw.strip() else []) + [
                {"role": "user", "content": render("feedback.j2", errors=errors, cut_off=done.cut_off,
                                                   what=what, schema=schemas.for_prompt(schema) if schema else None)}]
        listed = "\n".join(f"  - {e}" for e in errors)
        raise LLMError(f"{step} (experiment {experiment}): {self.model} gave no valid {what} in "
                       f"{self.max_attempts} attempts; last errors:\n{listed}")

    def structured(self, messages: list[dict[str, Any]] | None, schema: type[M], *, step: str,
                   experiment: int | None, check: Callable[[M], list[str]] | None = None,
                   fit: FitFn | None = None) -> M:
        """An answer validated into `schema` (and by `check`), with error feedback and retries."""
        return self._attempts(messages, fit, step, experiment, lambda c: answers.read_object(c.text, schema, check),
                              schema.__name__, schema, ": answer again, shorter")

    def text(self, messages: list[dict[str, Any]] | None, *, step: str, experiment: int | None,
             fit: FitFn | None = None) -> str:
        """A free-form answer, reasoning removed; an empty or cut-off one is asked again."""
        def read(c: Completion) -> tuple[str, list[str]]:
            return c.text, ([] if c.text.strip() else ["the answer was empty"])

        try:
            return self._attempts(messages, fit, step, experiment, read, "answer", None, ": answer again, shorter")
        except _CutOff as cut:  # words, unlike JSON or code, still mean something when cut: say so and keep them
            return cut.text

    def _last_cut(self, done: Completion) -> None:
        """A prose answer cut off again is kept up to its last sentence, marked as cut."""
        end = max(done.text.rfind(". "), done.text.rfind(".\n"), done.text.rfind("."))
        if end > 0:
            raise _CutOff(done.text[:end + 1].rstrip() + " [answer cut off at the token limit]")

    def code(self, messages: list[dict[str, Any]] | None, *, step: str, experiment: int | None,
             base_code: str | None, check: Callable[[str], list[str]] | None = None, fit: FitFn | None = None,
             schema: type[BaseModel] | None = None) -> str:
        """A candidate module: a ```python block, a JSON "code" string (the schema under
        constrained decoding), or SEARCH/REPLACE edits against `base_code`."""
        constrained = schema is not None and self._mode in CONSTRAINED

        def read(c: Completion) -> tuple[str | None, list[str]]:
            source, where = None, ""
            if c.mode in CONSTRAINED and schema is not None:
                obj, problems = answers.read_object(c.text, schema)
                if problems:
                    return None, problems
                source = answers.strip_fence(obj.code)
            text = source if source is not None else c.text
            if edits.has_edits(text):
                if base_code is None:
                    return None, ["the answer has SEARCH/REPLACE edit blocks but there is no code to edit: "
                                  "answer with the complete module in one ```python block"]
                blocks, problems = edits.parse_edits(text)
                new, more = edits.apply_edits(base_code, blocks)
                problems += more
                if not problems and new == base_code:
                    problems.append("the edits change nothing: the code is the same as before")
                if problems:
                    return None, problems
                source = new
            elif source is None:
                source, where = answers.code_in(c.text)
                if source is None:
                    return None, [where]
            problems = list(check(source)) if check else []
            return (None, problems) if problems else (source, [])

        hint = (": answer again with SEARCH/REPLACE edit blocks that change only what the proposal needs"
                if base_code else ": answer again, with a shorter module")
        return self._attempts(messages, fit, step, experiment, read, "module", schema if constrained else None, hint)


class _CutOff(Exception):
    """Internal: a prose answer cut off twice, kept as far as it went."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
