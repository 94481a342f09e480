"""SEARCH/REPLACE edits: the coder may answer against the parent's code with blocks

    <<<<<<< SEARCH
    lines copied from the parent
    =======
    the lines that replace them
    >>>>>>> REPLACE

Each block must match the code exactly once (trailing spaces aside). A block that
does not match, matches several places, or changes nothing is an error naming the
block: it goes back to the model, never a silent no-op."""
from __future__ import annotations

import re
from dataclasses import dataclass

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")


@dataclass(frozen=True)
class Edit:
    search: str
    replace: str


def has_edits(text: str) -> bool:
    return any(_SEARCH.match(line) for line in text.splitlines())


def parse_edits(text: str) -> tuple[list[Edit], list[str]]:
    """The blocks in order, and the errors of malformed ones."""
    edits: list[Edit] = []
    errors: list[str] = []
    state, search, replace = "out", [], []
    for line in text.splitlines():
        if state == "out":
            if _SEARCH.match(line):
                state, search, replace = "search", [], []
        elif state == "search":
            if _DIVIDER.match(line):
                state = "replace"
            elif _SEARCH.match(line) or _REPLACE.match(line):
                errors.append(f"edit block {len(edits) + 1} has no '=======' line between SEARCH and REPLACE")
                state = "search" if _SEARCH.match(line) else "out"
                search, replace = [], []
            else:
                search.append(line)
        elif state == "replace":
            if _REPLACE.match(line):
                edits.append(Edit("\n".join(search), "\n".join(replace)))
                state = "out"
            else:
                replace.append(line)
    if state != "out":
        errors.append(f"edit block {len(edits) + 1} is not closed: it needs a '=======' line and a "
                      "'>>>>>>> REPLACE' line (the answer may have been cut off)")
    return edits, errors


def _find(code: str, search: str) -> list[tuple[int, int]]:
    """Spans of `search` in `code`: exact, else line by line ignoring trailing spaces."""
    exact, start = [], code.find(search)
    while start != -1:
        exact.append((start, start + len(search)))
        start = code.find(search, start + 1)
    if exact:
        return exact
    lines = code.splitlines(keepends=True)
    want = [s.rstrip() for s in search.splitlines()]
    spans, offsets = [], [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    for i in range(len(lines) - len(want) + 1):
        if [line.rstrip() for line in lines[i:i + len(want)]] == want:
            end = offsets[i + len(want)] - (1 if lines[i + len(want) - 1].endswith("\n") else 0)
            spans.append((offsets[i], end))
    return spans


def apply_edits(code: str, edits: list[Edit]) -> tuple[str, list[str]]:
    """The code with every block applied in order, or the errors naming each bad block."""
    errors: list[str] = []
    for n, edit in enumerate(edits, 1):
        first = next((line.strip() for line in edit.search.splitlines() if line.strip()), "")
        if not edit.search.strip():
            errors.append(f"edit block {n} has an empty SEARCH part: to add code, search for the lines "
                          "it goes after and repeat them in REPLACE")
            continue
        if edit.search == edit.replace:
            errors.append(f"edit block {n} changes nothing: its SEARCH and REPLACE parts are the same")
            continue
        spans = _find(code, edit.search)
        if not spans:
            errors.append(f"edit block {n}: its SEARCH lines (starting {first!r}) are not in the code; "
                          "copy them exactly, indentation included")
            continue
        if len(spans) > 1:
            errors.append(f"edit block {n}: its SEARCH lines (starting {first!r}) match {len(spans)} places; "
                          "include more surrounding lines so they match once")
            continue
        s, e = spans[0]
        code = code[:s] + edit.replace + code[e:]
    if not errors and not edits:
        errors.append("no complete edit block found")
    return code, errors
