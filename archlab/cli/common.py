"""What every archlab command module shares: the consoles, the common options and
the one way a command fails (a red line on stderr, no traceback)."""
from __future__ import annotations

import typer
from rich.console import Console

console = Console(stderr=True)  # progress and errors
out = Console()                 # results

WORKSPACE = typer.Option(None, "--workspace", "-w", help="where campaigns live (default runs/)")
CONFIG = typer.Option(None, "--config", "-c", help="archlab.toml to read (default ./archlab.toml when present)")


def fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}")  # "[sandbox] isolation" is text, not markup
    raise typer.Exit(code)
