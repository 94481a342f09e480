"""The chat's side of the model: one assistant turn through LLMClient.complete.

A model with native tool calling gets the tools as tools; a tool call it writes as
text instead (`<tool_call>{...}</tool_call>`, a bare {"name", "arguments"} blob) is
recognised and run, never shown as the answer. A model without native tool calling
gets a JSON-action protocol: every reply is {"action", "arguments", "answer"} under
the model's constrained decoding (json_schema / json_object), so even a small local
model calls the tools reliably."""
from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from archlab.errors import LLMError
from archlab.llm import LLMClient
from archlab.llm.answers import object_spans, read_object
from archlab.llm.models import native_tools
from archlab.llm.schemas import for_prompt

ANSWER = "answer"
_TOOL_CALL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL | re.IGNORECASE)


def action_schema(tools: list[dict[str, Any]], allow_answer: bool = True) -> type[BaseModel]:
    """{"action": a tool or "answer", "arguments": {...}, "answer": "..."}. Read flat; but the
    schema the model is decoded under is one branch per tool, each with that tool's own
    arguments, so a small model cannot stuff a result into `arguments` or invent a key."""
    names = [t["name"] for t in tools]
    branches = [{"type": "object", "properties": {
                    "action": {"type": "string", "enum": [t["name"]]},
                    "arguments": {**t["parameters"], "additionalProperties": False}},
                 "required": ["action", "arguments"], "additionalProperties": False} for t in tools]
    if allow_answer:
        branches.append({"type": "object", "properties": {"action": {"type": "string", "enum": [ANSWER]},
                                                          "answer": {"type": "string"}},
                         "required": ["action", "answer"], "additionalProperties": False})

    def one_branch_per_tool(schema: dict[str, Any]) -> None:
        schema.clear()
        schema.update({"anyOf": branches})

    action = Literal[tuple(names + [ANSWER] * allow_answer)]  # type: ignore[valid-type]
    return create_model("ChatAction", __doc__="One step of the analyst: call a tool, or answer.",
                        __config__=ConfigDict(json_schema_extra=one_branch_per_tool),
                        action=(action, ...), arguments=(dict[str, Any], Field(default_factory=dict)),
                        answer=(str, ""))


def _as_call(obj: Any, known: set[str]) -> tuple[str, Any] | None:
    """(name, arguments) when `obj` reads as a tool call written out as JSON."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name") or obj.get("tool")
    args = obj.get("arguments", obj.get("parameters", obj.get("args")))
    if not isinstance(name, str) or (args is None and name not in known):
        return None
    return name, {} if args is None else args


def text_tool_calls(text: str, known: set[str], step: str) -> list[dict[str, Any]]:
    """Tool calls a model wrote as text (Qwen/Hermes <tool_call> tags, or a JSON blob that
    is a call), as OpenAI-style calls; [] when the text is an answer."""
    bodies = [m.group(1) for m in _TOOL_CALL_TAG.finditer(text)]
    if not bodies:
        stripped = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
        if not stripped.startswith("{"):
            return []
        bodies = [stripped]
    calls = []
    for body in bodies:
        spans, _ = object_spans(body)
        for cand in spans[:1]:
            try:
                found = _as_call(json.loads(cand, strict=False), known)
            except ValueError:
                found = None
            if found:
                calls.append(found)
    return [{"id": f"call_{step.replace(':', '_')}_{i}", "type": "function",
             "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for i, (name, args) in enumerate(calls)]


def _json_protocol_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation for a model without native tools: its own calls as JSON actions,
    tool results as user messages."""
    out = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            for tc in m["tool_calls"]:
                try:
                    args = json.loads(tc["function"]["arguments"] or "{}")
                except ValueError:
                    args = tc["function"]["arguments"]
                out.append({"role": "assistant", "content": json.dumps(
                    {"action": tc["function"]["name"], "arguments": args, "answer": ""})})
        elif m.get("role") == "tool":
            out.append({"role": "user", "content": f"Result of {m.get('name')}: {m.get('content')}"})
        else:
            out.append({k: m[k] for k in ("role", "content")})
    return out


def fit_history(messages: list[dict[str, Any]], budget: int, model: str) -> list[dict[str, Any]]:
    """The conversation within `budget` tokens: the oldest tool results are cut to a note
    first, then the oldest turns dropped; the system prompt and the last question stay."""
    from archlab.llm.window import count_tokens

    out = [dict(m) for m in messages]
    for i, m in enumerate(out):
        if count_tokens(model, out) <= budget:
            return out
        if m.get("role") == "tool" or str(m.get("content", "")).startswith("Result of "):
            out[i] = {**m, "content": str(m["content"])[:200] + " ... (cut to fit the model's window)"}
    last_user = max((i for i, m in enumerate(out) if m.get("role") == "user"), default=len(out) - 1)
    while count_tokens(model, out) > budget and len(out) > 2 and last_user > 1:
        del out[1]  # the oldest message after the system prompt
        last_user -= 1
    return _well_formed_tail(out)


def _well_formed_tail(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """No tool result whose call was dropped (APIs refuse them)."""
    called = {tc["id"] for m in messages for tc in m.get("tool_calls") or []}
    return [m for m in messages if m.get("role") != "tool" or m.get("tool_call_id") in called]


class ToolModel:
    """One assistant message per call: {"role": "assistant", "content", "tool_calls"?}."""

    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.native = native_tools(client.model, client.tools_mode)

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, step: str) -> dict[str, Any]:
        """`tools` None: the model must answer in words now (the last round, or it went in circles)."""
        from archlab.analysis.chat_tools import TOOLS

        if not self.native:
            return self._json_action(messages, tools or [], step)
        known = {t["function"]["name"] for t in tools or []} or set(TOOLS)
        messages = fit_history(messages, self.client.budget(step), self.client.model)
        done = self.client.complete(messages, step=step, experiment=None, attempt=0, tools=tools)
        calls = [{"id": tc["id"] or f"call_{step.replace(':', '_')}_{i}", "type": "function",
                  "function": {"name": tc["name"], "arguments": tc["arguments"]
                               if isinstance(tc["arguments"], str) else json.dumps(tc["arguments"])}}
                 for i, tc in enumerate(done.tool_calls)]
        content = done.text
        written = [] if calls else text_tool_calls(content, known, step)
        if written and tools:
            calls, content = written, ""  # a call written as text is run, never shown as the answer
        elif written:
            content = (f"(no answer: asked to answer now, the model wrote another call to "
                       f"{written[0]['function']['name']} instead)")
        out: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            out["tool_calls"] = calls
        return out

    def _json_action(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], step: str) -> dict[str, Any]:
        # Every fact of an answer comes from a tool result: a turn's first step is a lookup.
        # With no tools left (the last round), the only action is to answer.
        from archlab.analysis.chat_tools import tool_schemas
        from archlab.prompts import render

        last_question = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
        looked_up = any(m.get("role") == "tool" for m in messages[last_question:])
        schema = action_schema([t["function"] for t in tools], allow_answer=looked_up or not tools)
        guide = {"role": "system", "content": render("chat_actions.j2", answer_now=not tools,
                                                     tools=[t["function"] for t in tools or tool_schemas()])}
        convo = [guide, *_json_protocol_messages(messages)]
        convo = fit_history(convo, self.client.budget(step), self.client.model)
        retry: list[dict[str, Any]] = []
        errors: list[str] = []
        for attempt in range(self.client.max_attempts):
            found: dict[str, Any] = {}

            def validate(c: Any, found: dict[str, Any] = found) -> list[str]:
                obj, problems = read_object(c.text, schema)
                found["action"] = obj
                return problems

            done = self.client.complete(convo + retry, step=step, experiment=None, attempt=attempt, schema=schema,
                                        validate=validate)
            action = found.get("action")
            if not done.errors and action is not None:
                if action.action == ANSWER:
                    return {"role": "assistant", "content": action.answer.strip() or "(the model gave an empty answer)"}
                call = {"id": f"call_{step.replace(':', '_')}_{attempt}", "type": "function",
                        "function": {"name": action.action, "arguments": json.dumps(action.arguments)}}
                return {"role": "assistant", "content": "", "tool_calls": [call]}
            errors = done.errors
            retry = [{"role": "assistant", "content": done.raw},
                     {"role": "user", "content": render("feedback.j2", errors=errors, cut_off=done.cut_off,
                                                        what="action", schema=for_prompt(schema))}]
        raise LLMError(f"{step}: {self.client.model} gave no valid action in {self.client.max_attempts} attempts: "
                       + "; ".join(errors))
