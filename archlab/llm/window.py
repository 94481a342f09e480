"""Prompts that fit the model's input window: counted with litellm's token counter
and trimmed by priority (the researcher's exemplars first, then neighbours, then
notes...), code cut only at line ends, with a marker saying how much is left out."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

MARGIN = 64  # tokens of slack for the chat template around the messages


def count_tokens(model: str, messages: list[dict[str, Any]]) -> int:
    from archlab.llm.models import import_litellm, provider

    counted = model if provider(model) != "scripted" else "openai/gpt-4o"
    try:
        return int(import_litellm().token_counter(model=counted, messages=messages))
    except Exception:  # noqa: BLE001 - a counter that cannot load: about 3.5 characters a token
        return sum(len(str(m.get("content") or "")) for m in messages) * 2 // 7 + 4 * len(messages)


def trim_lines(text: str, keep_tokens: int, count: Callable[[str], int]) -> str:
    """`text` cut at a line end to about keep_tokens, with a comment saying what is left out."""
    if count(text) <= keep_tokens:
        return text
    lines = text.splitlines()
    lo, hi = 0, len(lines)
    while lo < hi:  # the most whole lines that fit
        mid = (lo + hi + 1) // 2
        if count("\n".join(lines[:mid])) <= keep_tokens:
            lo = mid
        else:
            hi = mid - 1
    return "\n".join(lines[:lo] + [f"# ... {len(lines) - lo} more lines not shown (the prompt window is full)"])


def fit_sections(render: Callable[[dict[str, Any]], list[dict[str, Any]]], context: dict[str, Any],
                 trim_order: Sequence[str], budget: int, model: str,
                 code_keys: Sequence[str] = ()) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Messages rendered from `context`, trimmed until they fit `budget` tokens: the last
    item of the first non-empty list in `trim_order` goes first; then the code under
    `code_keys` is cut at line ends. Returns the messages and how many items each key lost."""
    ctx = {k: (list(v) if isinstance(v, list) else v) for k, v in context.items()}
    dropped: dict[str, int] = {}
    messages = render(ctx)
    if count_tokens(model, messages) <= budget:
        return messages, dropped
    for key in trim_order:
        while isinstance(ctx.get(key), list) and ctx[key]:
            ctx[key].pop()
            dropped[key] = dropped.get(key, 0) + 1
            messages = render(ctx)
            if count_tokens(model, messages) <= budget:
                return messages, dropped
    for key in code_keys:
        code = ctx.get(key)
        if not code:
            continue
        over = count_tokens(model, messages) - budget
        own = count_tokens(model, [{"role": "user", "content": code}])
        ctx[key] = trim_lines(code, max(0, own - over - MARGIN),
                              lambda t: count_tokens(model, [{"role": "user", "content": t}]))
        dropped[key] = code.count("\n") - ctx[key].count("\n") + 1
        messages = render(ctx)
        if count_tokens(model, messages) <= budget:
            return messages, dropped
    return messages, dropped
