"""The life of one experiment, as a LangGraph graph.

    START ─▶ research ─▶ code ─▶ gate ─▶ check ─▶ train ─▶ analyse ─▶ record ─▶ END
               ▲           ▲       │        │        │
               └─duplicate─┼───────┘        │        │        (fingerprint duplicate from check, too)
                           └──code error────┴────────┘        (repair, bounded)
    research ─▶ research: every idea of the answer repeats a past experiment ([search] proposals_per_step)
    any step that gives up (attempts exhausted, no budget of proposals) ─▶ record (failed)

Given code (baselines, `archlab eval`) enters at the gate. A duplicate of
given code ends the run as `duplicate`, reusing the recorded result.
One graph run per experiment, thread_id = experiment id; the SQLite
checkpointer makes each step durable.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

from archlab.agents import analyst, coder, gate, researcher, trainer
from archlab.agents.context import LabContext
from archlab.agents.state import ExperimentState


def _finished(state: ExperimentState) -> bool:
    return state.get("outcome") is not None


def after_start(state: ExperimentState) -> str:
    return "gate" if state.get("code") else "research"


def after_research(state: ExperimentState) -> str:
    if _finished(state):
        return "record"
    return "research" if state.get("rethink") else "code"  # every idea refused before any code


def after_code(state: ExperimentState) -> str:
    return "record" if _finished(state) else "gate"


def after_gate(state: ExperimentState) -> str:
    if _finished(state):
        return "record"
    if state.get("error"):
        return "code"
    if state.get("hashes") is None:  # refused as a duplicate: propose again
        return "research"
    return "check"


def after_check(state: ExperimentState) -> str:
    if _finished(state):
        return "record"
    if state.get("error"):
        return "code"
    if state.get("check") is None:  # behaviour fingerprint duplicate
        return "research"
    return "train"


def after_train(state: ExperimentState) -> str:
    if _finished(state):
        return "record"
    return "code" if state.get("error") else "analyse"


def _node(fn: Callable[[LabContext, ExperimentState], dict[str, Any]], ctx: LabContext,
          resets: tuple[str, ...] = ()) -> Callable[[ExperimentState], dict[str, Any]]:
    """Bind a step to the lab; `resets` clears what a new pass must recompute."""
    def run(state: ExperimentState) -> dict[str, Any]:
        return {**{k: None for k in resets}, **fn(ctx, state)}
    run.__name__ = fn.__name__
    return run


def build_graph(ctx: LabContext) -> StateGraph:
    g = StateGraph(ExperimentState)
    g.add_node("research", _node(researcher.research, ctx))
    g.add_node("code", _node(coder.code, ctx, resets=("hashes", "check")))
    g.add_node("gate", _node(gate.gate, ctx, resets=("hashes", "check")))
    g.add_node("check", _node(trainer.check, ctx, resets=("check",)))
    g.add_node("train", _node(trainer.train, ctx))
    g.add_node("analyse", _node(analyst.analyse, ctx))
    g.add_node("record", _node(analyst.record, ctx))

    g.add_conditional_edges(START, after_start, ["research", "gate"])
    g.add_conditional_edges("research", after_research, ["code", "research", "record"])
    g.add_conditional_edges("code", after_code, ["gate", "record"])
    g.add_conditional_edges("gate", after_gate, ["check", "research", "code", "record"])
    g.add_conditional_edges("check", after_check, ["train", "research", "code", "record"])
    g.add_conditional_edges("train", after_train, ["analyse", "code", "record"])
    g.add_edge("analyse", "record")
    g.add_edge("record", END)
    return g


def compile_graph(ctx: LabContext, checkpoints: Path) -> Any:
    """The graph with its durable SQLite checkpointer."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(checkpoints, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    return build_graph(ctx).compile(checkpointer=SqliteSaver(conn))
