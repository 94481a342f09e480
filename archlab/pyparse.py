"""ast.parse for threads: parallel experiments parse candidate code at once.

CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide
state; when the garbage collector runs a finalizer in the middle of a parse,
another thread's parse can interleave and one of them fails with
"SystemError: AST constructor recursion depth mismatch" (CPython gh-106905).
That was the flaky `--parallel` replay/fork test: a gate step crashed and its
experiment was recorded as failed. Every parse of the lab goes through here.
"""
from __future__ import annotations

import ast
import threading

_lock = threading.Lock()


def parse(source: str, filename: str = "<candidate>") -> ast.Module:
    """ast.parse, one thread at a time (SyntaxError as usual)."""
    with _lock:
        return ast.parse(source, filename)
