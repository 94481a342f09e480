"""The `chat` and `report` commands, for archlab/cli/commands.py to register:

    app.command()(chat_cli.chat)
    app.command()(chat_cli.report)

Cheap to import: litellm, langgraph, matplotlib and chromadb load inside the commands."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from archlab.cli.common import CONFIG, WORKSPACE, console
from archlab.cli.common import fail as _fail
from archlab.cli.common import out as stdout

EXIT_WORDS = ("exit", "quit", ":q", "bye")


def _settings(config: Optional[Path], workspace: Optional[Path], model: Optional[str]) -> Any:
    from archlab.config import load_config
    from archlab.errors import ArchlabError

    overrides: dict[str, Any] = {}
    if workspace is not None:
        overrides["workspace"] = str(workspace)
    if model:
        overrides["llm"] = {"model": model}
    try:
        return load_config(config, overrides=overrides)
    except ArchlabError as exc:
        _fail(str(exc))


def chat(
    campaign: Optional[str] = typer.Argument(None, help="campaign id or folder (default: every campaign of the workspace)"),
    q: Optional[str] = typer.Option(None, "-q", "--question", help="ask one question, print the answer and exit"),
    workspace: Optional[Path] = WORKSPACE,
    model: Optional[str] = typer.Option(None, help="litellm model string; none configured = retrieval mode"),
    session: str = typer.Option("default", help="conversation name: each has its own history"),
    config: Optional[Path] = CONFIG,
) -> None:
    """Talk with the analyst about a campaign (or all of them): leaderboards, diffs, lineage, tests, plots."""
    from archlab.errors import ArchlabError

    cfg = _settings(config, workspace, model)
    try:
        from archlab.analysis.chat import ChatAnalyst
        from archlab.analysis.chat_tools import Lab

        lab = Lab(cfg.workspace, campaign, memory=_memory(cfg))
        llm = cfg.llm.model_dump()
        if not cfg.llm.model:  # a single campaign's own model, unless it was a script written for the campaign
            own = (next(iter(lab.views.values())).config.get("llm") or {}) if lab.single else {}
            if own.get("model") and not str(own["model"]).startswith("scripted/"):
                llm.update(model=own["model"], api_base=own.get("api_base") or llm["api_base"])
        analyst = ChatAnalyst(lab, llm["model"], session=session, api_base=llm["api_base"], timeout_s=llm["timeout_s"],
                          settings=cfg.llm)
    except ArchlabError as exc:
        _fail(str(exc))
    if analyst.model is None:
        console.print("no model configured: answering in retrieval mode (set one with --model provider/name, "
                      "ARCHLAB_LLM_MODEL, or [llm] model in archlab.toml)", markup=False)
    try:
        if q is not None:
            if not _answer(analyst, q):
                raise typer.Exit(1)
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
            if question:
                _answer(analyst, question)
    finally:
        analyst.close()
        if lab.memory is not None:
            lab.memory.close()


def _memory(cfg: Any) -> Any:
    """The workspace's vector memory (opened on the first search), or None when disabled."""
    mem = getattr(cfg, "memory", None)
    if mem is None or not mem.enabled:
        return None
    try:
        from archlab.memory.vector import VectorMemory
    except ImportError:
        return None
    return VectorMemory.for_config(cfg, cfg.workspace)


def _answer(analyst: Any, question: str) -> bool:
    """Print the answer; on a model error say so and return False (an interactive session
    goes on: a rate limit or an outage must not end the conversation)."""
    from archlab.errors import ArchlabError

    try:
        answer = analyst.ask(question)
    except ArchlabError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}\n(the question was not answered; ask again "
                      "once the model is back)")
        return False
    for call in answer.tool_calls if answer.mode == "llm" else []:
        console.print(f"[dim]→ {escape(call['name'])}({escape(_arguments(call['arguments']))})[/]")
    sys.stdout.write(answer.text.rstrip("\n") + "\n")  # as is: no wrapping, no markup
    sys.stdout.flush()
    return True


def _arguments(args: Any) -> str:
    """A tool call's arguments for the screen, whatever the model sent (an object, a list, text)."""
    if isinstance(args, dict):
        return ", ".join(f"{k}={v!r}" for k, v in args.items())
    return repr(args)


def report(
    campaign: str = typer.Argument(..., help="campaign id or folder"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for the report (default runs/ID/report)"),
    workspace: Optional[Path] = WORKSPACE,
    config: Optional[Path] = CONFIG,
) -> None:
    """Write a Markdown and HTML report with plots: leaderboard, progress, spend, gate savings, failures."""
    from archlab.errors import ArchlabError
    from archlab.campaign_folder import CampaignFolder
    from archlab.analysis.report import build_report

    cfg = _settings(config, workspace, None)
    try:
        made = build_report(CampaignFolder.open(cfg.workspace, campaign), out)
    except ArchlabError as exc:
        _fail(str(exc))
    stdout.print(f"report: {made.markdown}\n        {made.html}\nplots:  "
              + ("\n        ".join(str(p) for p in made.images) or "(none)"))
