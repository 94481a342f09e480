"""The `chat` command, for archlab/cli/commands.py to register:

    app.command()(chat_cli.chat)

Cheap to import: litellm, langgraph and chromadb load inside the command."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from archlab.cli.common import CONFIG, WORKSPACE, console, error, fail, guard, load_settings

EXIT_WORDS = ("exit", "quit", ":q", "bye")


def chat(
    campaign: str | None = typer.Argument(None, help="campaign id or folder "
                                                     "(default: every campaign of the workspace)"),
    q: str | None = typer.Option(None, "-q", "--question", help="ask one question, print the answer and exit"),
    workspace: Path | None = WORKSPACE,
    model: str | None = typer.Option(None, help="litellm model string; none configured = retrieval mode"),
    session: str = typer.Option("default", help="conversation name: each has its own history"),
    config: Path | None = CONFIG,
) -> None:
    """Talk with the analyst about a campaign (or all of them): leaderboards, diffs, lineage, tests, plots."""
    from archlab.analysis.chat import open_analyst

    cfg = load_settings(config, workspace=workspace, model=model or None)  # --model "": the configured one
    lab, analyst = guard(lambda: open_analyst(cfg, campaign, session))
    if analyst.model is None:
        console.print("no model configured: answering in retrieval mode (set one with --model provider/name, "
                      "ARCHLAB_LLM_MODEL, or [llm] model in archlab.toml)", markup=False)
    try:
        if q is not None:
            problem = _answer(analyst, q)
            if problem is not None:
                fail(problem, code=1)
            return
        console.print(f"talking about {', '.join(lab.views)}; "
                      f"history in {lab.home / 'chat.sqlite'}; type exit to leave")
        while True:
            try:
                question = console.input("[bold cyan]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if question.lower() in EXIT_WORDS:
                break
            problem = _answer(analyst, question) if question else None
            if problem is not None:
                error(problem)
    finally:
        analyst.close()
        if lab.memory is not None:
            lab.memory.close()


def _answer(analyst: Any, question: str) -> str | None:
    """Print the answer and return None; on a model error print nothing and return the
    error to show (an interactive session goes on: a rate limit or an outage must not
    end the conversation; a one-shot question exits 1)."""
    from archlab.errors import ArchlabError

    try:
        answer = analyst.ask(question)
    except ArchlabError as exc:
        return f"{exc}\n(the question was not answered; ask again once the model is back)"
    for call in answer.tool_calls if answer.mode == "llm" else []:
        console.print(f"[dim]→ {escape(call['name'])}({escape(_arguments(call['arguments']))})[/]")
    sys.stdout.write(answer.text.rstrip("\n") + "\n")  # as is: no wrapping, no markup
    sys.stdout.flush()
    return None


def _arguments(args: Any) -> str:
    """A tool call's arguments for the screen, whatever the model sent (an object, a list, text)."""
    if isinstance(args, dict):
        return ", ".join(f"{k}={v!r}" for k, v in args.items())
    return repr(args)

