"""`archlab chat`: the analyst agent, a small LangGraph graph

    START ─▶ agent ─▶ tools ─▶ agent ─▶ … ─▶ END      (agent ends the turn when it calls no tool)

The agent node calls the model through litellm with the tools of
archlab/analysis/chat_tools.py; the tool node runs the calls it asked for. The
conversation is checkpointed (SQLite) per campaign, or per workspace when the
chat spans all campaigns, so it goes on across invocations. Every model call
is a line in llm.jsonl, in the LLMClient's record format, at step
`chat:TURN:ROUND`. With no model configured, the retrieval mode answers from
the same tools and says plainly that it is not an LLM answer."""
from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from archlab.analysis.chat_model import ToolModel
from archlab.analysis.chat_tools import Lab, call_tool, tool_schemas

RETRIEVAL_BANNER = "[retrieval mode: no model configured — this is not an LLM answer]"
MAX_TOOL_RESULT = 12000


@dataclass
class Answer:
    text: str
    mode: str                                  # "llm" | "retrieval"
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # name, arguments, result


class ChatState(TypedDict, total=False):
    messages: Annotated[list[dict[str, Any]], operator.add]  # OpenAI-format messages, no system
    turn: int      # index of the current user question in this conversation
    rounds: int    # model calls made in this turn
    answer_now: bool  # the model repeated a call it already had the result of: no more tools this turn


# -- the graph --------------------------------------------------------------------------------

def _well_formed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop tool calls left without results (a kill between the two nodes): APIs refuse them."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    out = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            if not all(tc["id"] in answered for tc in m["tool_calls"]):
                if m.get("content"):
                    out.append({"role": "assistant", "content": m["content"]})
                continue
        out.append(m)
    return out


def build_chat_graph(analyst: ChatAnalyst) -> Any:
    from langgraph.graph import END, START, StateGraph

    def agent(state: ChatState) -> dict[str, Any]:
        rounds = state.get("rounds", 0)
        # last round, or a model going round in circles: answer in words
        tools = tool_schemas() if rounds < analyst.max_rounds and not state.get("answer_now") else None
        messages = [{"role": "system", "content": analyst.system_prompt()}, *_well_formed(state["messages"])]
        reply = analyst.model.complete(messages, tools, step=f"chat:{state.get('turn', 0)}:{rounds}")
        return {"messages": [reply], "rounds": rounds + 1}

    def tools(state: ChatState) -> dict[str, Any]:
        start = max(i for i, m in enumerate(state["messages"]) if m.get("role") == "user")
        earlier = {_call_key(tc) for m in state["messages"][start:-1] for tc in m.get("tool_calls") or []}
        out, repeated = [], False
        for tc in state["messages"][-1].get("tool_calls") or []:
            if _call_key(tc) in earlier:
                repeated = True
                result: dict[str, Any] = {"error": "you already made this call in this turn and its result is above: "
                                                   "answer the question now from the results you have"}
            else:
                result = call_tool(analyst.lab, tc["function"]["name"], tc["function"]["arguments"])
            text = json.dumps(result, default=str, ensure_ascii=False)
            out.append({"role": "tool", "tool_call_id": tc["id"], "name": tc["function"]["name"],
                        "content": text[:MAX_TOOL_RESULT]})
        return {"messages": out, "answer_now": repeated}

    def after_agent(state: ChatState) -> str:
        last = state["messages"][-1]
        return "tools" if last.get("tool_calls") and state.get("rounds", 0) <= analyst.max_rounds else END

    g = StateGraph(ChatState)
    g.add_node("agent", agent)
    g.add_node("tools", tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", after_agent, ["tools", END])
    g.add_edge("tools", "agent")
    return g


class ChatAnalyst:
    """A conversation with the analyst over `lab`; with model None, the retrieval mode."""

    def __init__(self, lab: Lab, model: str | None = None, *, session: str = "default", temperature: float = 0.2,
                 max_rounds: int = 8, api_base: str | None = None, timeout_s: float | None = None,
                 settings: Any = None) -> None:
        """`settings`: the [llm] section (structured mode, tools, retries...); `model`,
        `api_base` and `timeout_s` override it."""
        self.lab, self.session, self.max_rounds = lab, session, max_rounds
        self.model = None
        self._graph: Any = None
        self._conn: Any = None
        if model:
            from archlab.config import LLMConfig
            from archlab.llm import LLMClient

            base = settings if settings is not None else LLMConfig()
            llm = base.model_copy(update={"model": model, "temperature": temperature,
                                          "api_base": api_base or base.api_base,
                                          "timeout_s": timeout_s or base.timeout_s})
            lab.home.mkdir(parents=True, exist_ok=True)
            self.model = ToolModel(LLMClient.from_config(llm, lab.home / "llm.jsonl"))

    @property
    def config(self) -> dict[str, Any]:
        return {"configurable": {"thread_id": f"chat:{self.session}"}, "recursion_limit": 4 * self.max_rounds + 10}

    @property
    def graph(self) -> Any:
        if self._graph is None:
            import sqlite3

            from langgraph.checkpoint.sqlite import SqliteSaver

            self._conn = sqlite3.connect(self.lab.home / "chat.sqlite", check_same_thread=False)
            self._graph = build_chat_graph(self).compile(checkpointer=SqliteSaver(self._conn))
        return self._graph

    def system_prompt(self) -> str:
        from archlab.prompts import render

        campaigns = []
        for v in self.lab.views.values():
            best = v.best()
            campaigns.append({"id": v.id, "task": v.task.name, "metric": v.metric, "higher_is_better": v.higher,
                              "report_metric": v.task.report_metric, "counts": v.ledger.counts(),
                              "best": {"id": best.id, "name": best.name, "value": v.value(best)} if best else None,
                              "metrics": v.metrics_available()})
        return render("chat_system.j2", campaigns=campaigns, single=len(campaigns) == 1)

    def history(self) -> list[dict[str, Any]]:
        if self.model is None:
            return []
        return list(self.graph.get_state(self.config).values.get("messages", []))

    def ask(self, question: str) -> Answer:
        answer = None
        for event in self.ask_stream(question):
            if event["type"] == "answer":
                answer = event["answer"]
        assert answer is not None
        return answer

    def ask_stream(self, question: str) -> Iterator[dict[str, Any]]:
        """The turn as it happens: {"type": "tool_call", name, arguments} when the model asks for a
        tool, {"type": "tool_result", name, result} when it has run, then {"type": "answer", answer}."""
        self.lab.refresh()
        if self.model is None:
            answer = retrieval_answer(self.lab, question)
            for call in answer.tool_calls:
                yield {"type": "tool_call", "name": call["name"], "arguments": call["arguments"]}
                yield {"type": "tool_result", "name": call["name"], "result": call["result"]}
            yield {"type": "answer", "answer": answer}
            return
        self.model.client.reset()  # an outage during the last question need not outlast it
        turn = sum(1 for m in self.history() if m.get("role") == "user")
        start = {"messages": [{"role": "user", "content": question}], "turn": turn, "rounds": 0, "answer_now": False}
        for update in self.graph.stream(start, self.config, stream_mode="updates"):
            for node, change in (update or {}).items():
                for m in (change or {}).get("messages", []):
                    if node == "agent":
                        for tc in m.get("tool_calls") or []:
                            yield {"type": "tool_call", "name": tc["function"]["name"],
                                   "arguments": _loads(tc["function"]["arguments"])}
                    elif node == "tools":
                        yield {"type": "tool_result", "name": m.get("name"), "result": _loads(m.get("content"))}
        messages = self.history()
        start_at = max(i for i, m in enumerate(messages) if m.get("role") == "user")
        results = {m["tool_call_id"]: m["content"] for m in messages[start_at:] if m.get("role") == "tool"}
        calls = []
        for m in messages[start_at:]:
            for tc in m.get("tool_calls") or []:
                args = tc["function"]["arguments"]
                calls.append({"name": tc["function"]["name"], "arguments": _loads(args),
                              "result": _loads(results.get(tc["id"], "null"))})
        # a tool call the model wrote as text is run by ToolModel, never shown as the answer
        last = messages[-1]
        text = last.get("content") or ""
        if last.get("tool_calls") or not text.strip():
            text = text or f"(no answer after {self.max_rounds} tool rounds)"
        yield {"type": "answer", "answer": Answer(text, "llm", calls)}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


# -- opening one, as the CLI and the web page do ------------------------------------------------

def open_analyst(cfg: Any, campaign: str | None, session: str = "default") -> tuple[Lab, ChatAnalyst]:
    """The Lab over the campaign (or the whole workspace) and the analyst that talks about it."""
    lab = Lab(cfg.workspace, campaign, memory=workspace_memory(cfg))
    llm = cfg.llm.model_dump()
    if not cfg.llm.default_model:  # a single campaign's own model, unless it was a script written for the campaign
        own = (next(iter(lab.views.values())).config.get("llm") or {}) if lab.single else {}
        model = own.get("model") or next(iter(own.get("models") or []), None)  # an ensemble's: its first
        if model and not str(model).startswith("scripted/"):
            llm.update(model=model, api_base=own.get("api_base") or llm["api_base"])
    llm["model"] = llm["model"] or cfg.llm.default_model
    analyst = ChatAnalyst(lab, llm["model"], session=session, api_base=llm["api_base"], timeout_s=llm["timeout_s"],
                          settings=cfg.llm)
    return lab, analyst


def workspace_memory(cfg: Any) -> Any:
    """The workspace's vector memory (opened on the first search), or None when disabled."""
    mem = getattr(cfg, "memory", None)
    if mem is None or not mem.enabled:
        return None
    try:
        from archlab.memory.vector import VectorMemory
    except ImportError:
        return None
    return VectorMemory.for_config(cfg, cfg.workspace)


def _call_key(tc: dict[str, Any]) -> tuple[str, str]:
    """A call as its tool sees it (defaults filled in), so `limit=8` spelled out is the same call."""
    from archlab.analysis.chat_tools import TOOLS

    name, args = tc["function"]["name"], _loads(tc["function"]["arguments"])
    try:
        args = TOOLS[name].args.model_validate(args).model_dump()
    except Exception:  # noqa: BLE001 - an unknown tool or bad arguments: compare as sent
        pass
    return name, json.dumps(args, sort_keys=True, default=str)


def _loads(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return text


# -- the retrieval mode -------------------------------------------------------------------------

def retrieval_answer(lab: Lab, question: str) -> Answer:
    """What the ledger says about a question, without a model: the best experiment of each
    campaign and why (its record and comparisons), the top of the leaderboard, the experiments
    the question names, and what a text search finds."""
    calls: list[dict[str, Any]] = []

    def tool(name: str, **args: Any) -> dict[str, Any]:
        result = call_tool(lab, name, args)
        calls.append({"name": name, "arguments": args, "result": result})
        return result

    named = [c for c in lab.views if c in question]
    scope = [lab.views[c] for c in named] or list(lab.views.values())
    lines = [RETRIEVAL_BANNER, f"Question: {question}", ""]
    for view in scope:
        lines.append(f"== {view.summary_line()}")
        ranked = view.ranked()
        if ranked:
            best = ranked[0]
            lines.append(f"Best: #{best.id} {best.name} ({best.origin}), {view.metric} = {view.value(best):.4g}"
                         + _also(view, best) + ".")
            lines.append("Why, from the record:")
            lines += [f"  - {w}" for w in _why(view, best, ranked)]
        board = tool("leaderboard", campaign=view.id, limit=5)["boards"][0]
        if board.get("rows"):
            lines.append(f"Top {len(board['rows'])} by {board['metric']}:")
            lines += [f"  {r['rank']}. #{r['id']} {r['name']} ({r['origin']}) {board['metric']}="
                      f"{r[board['metric']]:.4g}" for r in board["rows"]]
        ids = [int(i) for i in re.findall(r"#(\d+)", question)]
        for i in ids[:4]:
            shown = tool("show_experiment", campaign=view.id, id=i, include_code=False)
            if "error" not in shown:
                fields = {k: shown.get(k) for k in ("name", "status", "metrics", "analysis")}
                lines.append(f"#{i}: {json.dumps(fields, default=str)}")
        if re.search(r"\bmodels?\b|\bllms?\b", question.lower()) and view.model_yields() is not None:
            lines += _model_lines(tool("model_yield", campaign=view.id)["campaigns"][0])
        if len(ids) >= 2:
            cmp = tool("compare", campaign=view.id, a=ids[0], b=ids[1])
            if "error" not in cmp:
                lines.append(f"#{ids[0]} vs #{ids[1]}: difference {cmp['difference_a_minus_b']:+.4g} "
                             f"{cmp['metric']}, better: {cmp['better']}; "
                             + (cmp.get("note") or f"Welch t-test p = {cmp['test']['p']:.3g}"))
        lines.append("")
    found = tool("search_memory", query=question, limit=5)
    if found.get("experiments"):
        lines.append(f"Matching experiments ({found['source']}):")
        lines += [f"  {r['campaign']} #{r['id']} {r['name']} ({r['status']})" for r in found["experiments"]]
    if found.get("insights"):
        lines.append("Insights:")
        lines += [f"  {r['campaign']} #{r['experiment']}: {r['text'][:200]}" for r in found["insights"]]
    if found.get("notes"):
        lines.append("From your notes:")
        lines += [f"  {r['title']} (part {r['chunk']}): {r['text'][:200]}" for r in found["notes"]]
    lines.append("For an answer in words, configure a model (--model provider/name, ARCHLAB_LLM_MODEL, "
                 "or [llm] model in archlab.toml).")
    return Answer("\n".join(lines).rstrip() + "\n", "retrieval", calls)


def _model_lines(found: dict[str, Any]) -> list[str]:
    """An ensemble's models, one line each, from the model_yield tool."""
    lines = ["Models (the ensemble's bandit; improvement: beat the best known when the model was picked):"]
    for y in found["models"]:
        per = f"{y['improvements_per_usd']:.3g} per USD" if y["improvements_per_usd"] is not None else "no cost"
        lines.append(f"  {y['model']}: {y['experiments']} experiments, {y['valid']} valid, "
                     f"{y['improvements']} improvements ({per}), cost ${y['cost']:.4f}"
                     + (" (local, by time)" if y["local"] else ""))
    if found.get("best_yield"):
        lines.append(f"  Best yield: {found['best_yield']}.")
    return lines


def _also(view: Any, e: Any) -> str:
    rm = view.task.report_metric
    v = view.value(e, rm) if rm != view.metric else None
    return f", {rm} = {v:.4g}" if v is not None else ""


def _why(view: Any, best: Any, ranked: list[Any]) -> list[str]:
    out = []
    p = best.proposal or {}
    if p.get("motivation"):
        out.append(f"motivation: {p['motivation'][:300]}")
    if p.get("design") and p.get("design") != best.name:
        out.append(f"design: {p['design'][:300]}")
    if (best.metrics or {}).get("arch"):
        out.append(f"architecture: {best.metrics['arch']}")
    m = view.metric
    if len(ranked) > 1:
        second = ranked[1]
        out.append(f"ahead of the runner-up #{second.id} {second.name} by "
                   f"{view.value(best) - view.value(second):+.4g} {m}")
    base = view.best(origin=("baseline",))
    if base is not None and base.id != best.id:
        out.append(f"vs the best baseline #{base.id} {base.name}: {view.value(best) - view.value(base):+.4g} {m}")
    if best.parent is not None and view.get(best.parent) is not None and view.value(view.get(best.parent)) is not None:
        parent = view.get(best.parent)
        out.append(f"vs its parent #{parent.id} {parent.name}: {view.value(best) - view.value(parent):+.4g} {m}")
    if best.analysis:
        out.append(f"analysis: {best.analysis[:400]}")
    out.append("single run: no seeds, so no significance test" if not view.interval(best) else
               f"over seeds: {view.interval(best)}")
    return out


__all__ = ["ChatAnalyst", "open_analyst", "workspace_memory", "Answer", "RETRIEVAL_BANNER", "ToolModel",
           "build_chat_graph", "retrieval_answer"]
