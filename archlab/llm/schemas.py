"""JSON schemas as models see them: references inlined (no `$defs` for a small model to
copy a class name from, and simpler for a server's grammar), titles dropped in prompts."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def inline(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every local `$ref` replaced by its definition."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk({**defs[ref.rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def for_decoding(model: type[BaseModel]) -> dict[str, Any]:
    """The schema sent as `response_format` (or a forced tool's parameters)."""
    return inline(model.model_json_schema())


def for_prompt(model: type[BaseModel]) -> dict[str, Any]:
    """The schema shown in a prompt: inlined, without pydantic's titles (shorter, nothing to copy)."""
    def walk(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k == "properties" and not in_properties)
                    for k, v in node.items() if in_properties or not (k == "title" and isinstance(v, str))}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(for_decoding(model))
