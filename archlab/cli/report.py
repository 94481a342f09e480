"""The `report` command, for archlab/cli/commands.py to register:

    app.command()(report_cli.report)

Cheap to import: matplotlib and the campaign reader load inside the command."""
from __future__ import annotations

from pathlib import Path

import typer

from archlab.cli.common import CONFIG, WORKSPACE, guard, load_settings
from archlab.cli.common import out as stdout  # `out` is the command's --out option


def report(
    campaign: str = typer.Argument(..., help="campaign id or folder"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for the report (default runs/ID/report)"),
    workspace: Path | None = WORKSPACE,
    config: Path | None = CONFIG,
) -> None:
    """Write a Markdown and HTML report with plots: leaderboard, progress, spend, gate savings, failures."""
    from archlab.analysis.report import build_report
    from archlab.campaign_folder import CampaignFolder

    cfg = load_settings(config, workspace=workspace)
    made = guard(lambda: build_report(CampaignFolder.open(cfg.workspace, campaign), out))
    stdout.print(f"report: {made.markdown}\n        {made.html}\nplots:  "
                 + ("\n        ".join(str(p) for p in made.images) or "(none)"))
