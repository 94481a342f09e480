"""The commands: `archlab` is the typer app of archlab/cli/commands.py."""
from archlab.cli.commands import app, main

__all__ = ["app", "main"]
