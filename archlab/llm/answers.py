"""Reading a model's answer: reasoning stripped first, then a JSON object (the last
one that validates, not the first dict), or code (a fenced block, a JSON `code`
string, or SEARCH/REPLACE edits; see edits.py). Lenient where models are sloppy
(literal newlines in strings, trailing commas, `"#3"` for 3, `Name` for `name`),
never silently wrong: an object that is not closed is an error, not a repair, and
every error names the field or the line to fix."""
from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_REASONING = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CLOSED_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-]*)[ \t]*\n(.*?)```", re.DOTALL)


def strip_reasoning(text: str) -> tuple[str, str]:
    """(answer, reasoning): <think>/<thinking>/<reasoning> blocks removed. A reasoning
    block never closed takes the rest of the answer; a lone closing tag (the opening
    one was in the chat template) takes everything before it."""
    text = text or ""
    parts = [m.group(0) for m in _REASONING.finditer(text)]
    text = _REASONING.sub("", text)
    opened = _OPEN.search(text)
    if opened:
        parts.append(text[opened.start():])
        text = text[:opened.start()]
    closes = list(_CLOSE.finditer(text))
    if closes:
        parts.append(text[:closes[-1].end()])
        text = text[closes[-1].end():]
    return text.strip(), "\n".join(parts).strip()


# -- JSON objects ---------------------------------------------------------------------------

def _balanced(text: str, start: int) -> int | None:
    """The index just past the object opened at text[start] ('{'), string-aware; None if never closed."""
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
                return i + 1
    return None


def object_spans(text: str, limit: int = 200) -> tuple[list[str], bool]:
    """The top-level {...} substrings in order, then the nested ones; and whether an
    object was opened and never closed (a cut-off answer)."""
    top: list[str] = []
    nested: list[str] = []
    unclosed = False
    i = text.find("{")
    while i != -1 and len(top) + len(nested) < limit:
        end = _balanced(text, i)
        if end is None:
            unclosed = True
            break
        top.append(text[i:end])
        j = text.find("{", i + 1)
        while j != -1 and j < end - 1 and len(nested) < limit:  # objects inside this one
            inner = _balanced(text, j)
            if inner is not None:
                nested.append(text[j:inner])
            j = text.find("{", j + 1)
        i = text.find("{", end)
    return top + nested, unclosed


def loads_object(candidate: str) -> Any:
    """A closed JSON object, leniently: control characters in strings allowed; trailing
    commas, single quotes and comments repaired (json-repair) only for a closed object."""
    try:
        return json.loads(candidate, strict=False)
    except json.JSONDecodeError as exc:
        stripped = candidate.strip()
        if not (stripped.startswith("{") and stripped.endswith("}")):
            raise
        import json_repair

        value = json_repair.loads(stripped)
        if not isinstance(value, dict) or not value:
            raise exc from None
        return value


def _field_type(schema: type[BaseModel], name: str) -> set[type]:
    ann = schema.model_fields[name].annotation
    args = typing.get_args(ann) or (ann,)
    return {a for a in args if isinstance(a, type)}


def normalise(obj: dict[str, Any], schema: type[BaseModel]) -> dict[str, Any]:
    """Keys matched to the schema's fields case- and separator-insensitively; for integer
    fields "#3" or "3" becomes 3 and "null"/"none"/"" becomes None."""
    fields = {re.sub(r"[\s\-_]", "", f).lower(): f for f in schema.model_fields}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = fields.get(re.sub(r"[\s\-_]", "", str(key)).lower(), key)
        if name in schema.model_fields and int in _field_type(schema, name) and isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"#?\s*-?\d+", text):
                value = int(text.lstrip("#").strip())
            elif text.lower() in ("", "null", "none") and type(None) in _field_type(schema, name):
                value = None
        out.setdefault(name, value)
    return out


def validation_errors(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = "" if err["type"] == "missing" else f" (got {json.dumps(err.get('input'), default=str)[:80]})"
        out.append(f"field '{loc}': {err['msg']}{got}")
    return out


def read_object(text: str, schema: type[M],
                check: Callable[[M], list[str]] | None = None) -> tuple[M | None, list[str]]:
    """The last JSON object in `text` that validates into `schema` (and passes `check`),
    or the errors of the best try, phrased for the model."""
    if not text.strip():
        return None, ["the answer was empty"]
    spans, unclosed = object_spans(text)
    candidates = [text.strip()] + [m.group(2) for m in _CLOSED_FENCE.finditer(text)] + spans
    parsed: list[tuple[int, dict[str, Any]]] = []
    first_error: str | None = None
    for _order, cand in enumerate(candidates):
        try:
            value = loads_object(cand)
        except (json.JSONDecodeError, ValueError) as exc:
            if first_error is None and cand.lstrip().startswith("{"):
                first_error = f"the JSON object in the answer is invalid: {exc}"
            continue
        if isinstance(value, dict):
            parsed.append((text.rfind(cand), value))
    if not parsed:
        if unclosed:
            return None, ["the JSON object in the answer is never closed (the answer looks cut off): "
                          "answer again, shorter, with the whole object"]
        if first_error:
            return None, [first_error]
        return None, ["the answer contains no JSON object" if "{" not in text
                      else "the answer contains no valid JSON object"]
    errors: list[str] = []
    for _, value in sorted(parsed, key=lambda p: p[0], reverse=True):  # the last object first
        try:
            obj = schema.model_validate(normalise(value, schema))
        except ValidationError as exc:
            errors = errors or validation_errors(exc)
            continue
        problems = list(check(obj)) if check else []
        if not problems:
            return obj, []
        errors = errors or problems
    return None, errors


# -- code -----------------------------------------------------------------------------------

def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each ``` block, in order; an unclosed last block counts (cut off)."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


_OPEN_FENCE = re.compile(r"\A\s*```[ \t]*[A-Za-z0-9_+\-]*[ \t]*\n")
_CLOSE_FENCE = re.compile(r"\n?```\s*\Z")


def strip_fence(code: str) -> str:
    """Code with a surrounding ```python fence removed, either end alone too (models put
    fences inside JSON strings, and a cut-off answer loses the closing one)."""
    body = _CLOSE_FENCE.sub("", _OPEN_FENCE.sub("", code, count=1), count=1)
    return body.rstrip() + "\n"


def _parses(code: str) -> bool:
    from archlab.pyparse import parse

    try:
        parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def code_in(text: str) -> tuple[str | None, str]:
    """The module an answer carries and where it was found: the last ```python block,
    else a JSON object's "code" string, else an unlabelled block or the bare answer when
    it parses as Python. (None, why) when there is none."""
    blocks = fenced_blocks(text)
    python = [body for lang, body in blocks if lang in ("python", "py", "python3")]
    if python:
        return strip_fence(python[-1]), "a ```python block"
    spans, _ = object_spans(text)
    for cand in reversed([text.strip(), *spans]):
        try:
            value = loads_object(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            code = next((v for k, v in value.items() if str(k).lower() == "code" and isinstance(v, str)), None)
            if code is not None:
                return strip_fence(code), "the JSON \"code\" string"
    plain = [body for lang, body in blocks if lang == ""]
    if plain and _parses(plain[-1]):
        return strip_fence(plain[-1]), "a ``` block"
    if text.strip() and _parses(text):
        return text.strip() + "\n", "the answer itself"
    return None, "no code found: put the whole module in one ```python block"
