"""What every archlab command module shares: the consoles, the common options, the
one way to load settings (`load_settings`) and the one way a command fails (`fail`:
a red `error:` line on stderr, no traceback; `guard` turns an ArchlabError into it).

Cheap to import: typer and rich only; archlab.config loads inside `load_settings`."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from archlab.config import Config

console = Console(stderr=True)  # progress and errors
out = Console()                 # results

WORKSPACE = typer.Option(None, "--workspace", "-w", help="where campaigns live (default runs/)")
CONFIG = typer.Option(None, "--config", "-c", help="archlab.toml to read (default ./archlab.toml when present)")

T = TypeVar("T")

# flag -> its [section] in archlab.toml, and the flags whose key there has another name
_SECTION = {"task": "task", "preset": "task", "table": "task", "dataset": "task",
            "model": "llm", "models": "llm", "api_base": "llm",
            "budget": "budget", "hours": "budget", "gpu_hours": "budget", "tokens": "budget", "usd": "budget",
            "parallel": "search", "strategy": "search", "seed": "search", "sandbox": "sandbox", "control": "search",
            "verify_top": "verify", "seeds": "verify", "verify_preset": "verify", "verify_data": "verify",
            "verify_hours": "verify"}
_KEY = {"task": "name", "budget": "experiments", "sandbox": "backend", "verify_top": "top",
        "verify_preset": "preset", "verify_data": "data", "verify_hours": "hours"}


def error(message: str) -> None:
    """The red `error:` line on stderr, for a failure the command lives through (an
    interactive chat goes on after a model error); `fail` when the command ends."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}")  # "[sandbox] isolation" is text, not markup


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command: the `error:` line, then exit `code` (2: bad input or settings)."""
    error(message)
    raise typer.Exit(code)


def guard(fn: Callable[[], T], code: int = 2) -> T:
    """fn(), with an ArchlabError (bad settings, no such campaign, ...) turned into `fail`."""
    from archlab.errors import ArchlabError

    try:
        return fn()
    except ArchlabError as exc:
        fail(str(exc), code)


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """CLI flags -> the nested override dict config.load_config expects; None = not given."""
    nested: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        if flag == "workspace":
            nested["workspace"] = value
            continue
        if flag == "models" and isinstance(value, str):  # stored as the list it means
            value = [m.strip() for m in value.split(",") if m.strip()]
        nested.setdefault(_SECTION[flag], {})[_KEY.get(flag, flag)] = str(value) if isinstance(value, Path) else value
    return nested


def load_settings(config_path: Path | None, **flags: Any) -> Config:
    """archlab.toml (or `config_path`) < environment < these flags; bad settings `fail`."""
    from archlab.config import load_config

    return guard(lambda: load_config(config_path, overrides=flag_overrides(**flags)))
