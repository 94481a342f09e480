"""archlab's command line: the typer app with run, resume, ls, show, tasks, check,
eval, replay and doctor; chat, report and the memory and sandbox sub-apps come from
their own modules and are registered at the bottom. Heavy libraries (litellm, torch,
langgraph) are imported inside the commands that use them, so `archlab --help` stays
fast. A command fails through archlab.cli.common (`fail`, `guard`)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from archlab.cli.common import CONFIG, WORKSPACE, console, fail, flag_overrides, guard, load_settings, out

VERIFY_TOP = typer.Option(None, help="after exploration, verify the top N candidates (diverse) beside every baseline")
SEEDS = typer.Option(None, help="seeds per verified candidate and baseline (default 3)")
VERIFY_PRESET = typer.Option(None, help="the verification preset (default: the task's, e.g. lm tiny -> tiny-long)")

app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None,
                  help="archlab: an autonomous lab for neural-architecture research.")


@app.command()
def run(
    task: str | None = typer.Option(None, help="task pack (see `archlab tasks`); default lm"),
    preset: str | None = typer.Option(None, help="task preset, e.g. tiny, small"),
    table: Path | None = typer.Option(None, help="nb201: the NAS-Bench-201 table (CSV or JSON)"),
    dataset: str | None = typer.Option(None, help="nb201: cifar10 | cifar100 | imagenet16"),
    budget: int | None = typer.Option(None, help="evaluated experiments (baselines not counted)"),
    hours: float | None = typer.Option(None, help="wall-clock budget"),
    gpu_hours: float | None = typer.Option(None, help="GPU-hour budget"),
    tokens: int | None = typer.Option(None, help="LLM token budget"),
    usd: float | None = typer.Option(None, help="LLM spend budget in USD"),
    parallel: int | None = typer.Option(None, help="experiments in flight at once"),
    strategy: str | None = typer.Option(None, help="auto | llm | random | evolution | surrogate"),
    model: str | None = typer.Option(None, help="any litellm model string, e.g. openai/gpt-4.1"),
    models: str | None = typer.Option(None, help="an ensemble, comma-separated: a bandit gives each experiment one"),
    api_base: str | None = typer.Option(None, help="an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1"),
    seed: int | None = typer.Option(None, help="campaign seed"),
    sandbox: str | None = typer.Option(None, help="process | docker | ray"),
    control: float | None = typer.Option(None, help="share of the budget for the random-control arm, e.g. 0.25"),
    verify_top: int | None = VERIFY_TOP, seeds: int | None = SEEDS, verify_preset: str | None = VERIFY_PRESET,
    verify_data: Path | None = typer.Option(None, help="lm: a second text scored at verification (val_bpb_extra)"),
    workspace: Path | None = WORKSPACE,
    config: Path | None = CONFIG,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no live progress"),
) -> None:
    """Launch a campaign (default: a short offline campaign on the lm task)."""
    cfg = load_settings(config, task=task, preset=preset, table=table, dataset=dataset, budget=budget, hours=hours,
                        gpu_hours=gpu_hours, tokens=tokens, usd=usd, parallel=parallel, strategy=strategy, model=model,
                        models=models, api_base=api_base, seed=seed, sandbox=sandbox, control=control,
                        verify_top=verify_top, seeds=seeds, verify_preset=verify_preset, verify_data=verify_data,
                        workspace=workspace)
    if cfg.strategy != "llm":
        console.print(f"no model configured: running the offline `{cfg.strategy}` strategy "
                      "(set one with --model provider/name, ARCHLAB_LLM_MODEL, or [llm] model in archlab.toml)",
                      markup=False, highlight=False, soft_wrap=True)
    from archlab.campaign import Campaign

    campaign = guard(lambda: Campaign.create(cfg))
    console.print(f"campaign [bold]{campaign.folder.id}[/] in {campaign.folder.root}")
    _drive(campaign, quiet)


def _header(campaign: Any) -> None:
    """Where candidate code runs, the model the campaign talks to and how (before the first experiment)."""
    console.print(f"sandbox: {campaign.isolation}", markup=False, highlight=False, soft_wrap=True)
    ensemble = campaign.ctx.ensemble
    if ensemble is not None:
        console.print(f"models (an ensemble: each experiment goes to one, picked by improvements per dollar; "
                      f"local models at ${campaign.config.llm.local_usd_per_hour:g}/h):",
                      markup=False, highlight=False, soft_wrap=True)
        for client in ensemble.clients.values():
            console.print(f"  {client.describe()}", markup=False, highlight=False, soft_wrap=True)
    elif campaign.ctx.llm is not None:
        console.print(f"model: {campaign.ctx.llm.describe()}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def resume(
    campaign_id: str = typer.Argument(..., help="campaign id (see `archlab ls`) or its folder"),
    budget: int | None = typer.Option(None, help="raise the experiment budget"),
    hours: float | None = typer.Option(None), tokens: int | None = typer.Option(None),
    usd: float | None = typer.Option(None), gpu_hours: float | None = typer.Option(None),
    model: str | None = typer.Option(None, help="continue with this model (e.g. after the provider refused one)"),
    models: str | None = typer.Option(None, help="continue with this ensemble (comma-separated)"),
    api_base: str | None = typer.Option(None, help="continue with this server"),
    verify_top: int | None = VERIFY_TOP, seeds: int | None = SEEDS, verify_preset: str | None = VERIFY_PRESET,
    verify_hours: float | None = typer.Option(None, help="raise the verification stage's wall-clock budget"),
    workspace: Path | None = WORKSPACE, config: Path | None = CONFIG,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Continue a stopped, paused or killed campaign: unfinished experiments first, nothing repeated;
    then its verification stage (add one to a finished campaign with --verify-top)."""
    from archlab.campaign import Campaign

    ws = load_settings(config, workspace=workspace).workspace
    overrides = flag_overrides(budget=budget, hours=hours, tokens=tokens, usd=usd, gpu_hours=gpu_hours, model=model,
                               models=models, api_base=api_base, verify_top=verify_top, seeds=seeds,
                               verify_preset=verify_preset, verify_hours=verify_hours)
    campaign = guard(lambda: Campaign.open(ws, campaign_id, overrides))
    _drive(campaign, quiet)


def _drive(campaign: Any, quiet: bool) -> None:
    from archlab.cli.progress import live_progress

    _header(campaign)
    try:
        with live_progress(console, enabled=not quiet and console.is_terminal) as update:
            summary = guard(lambda: campaign.run(on_progress=update))
    except KeyboardInterrupt:
        console.print(f"\ninterrupted; continue with: archlab resume {campaign.folder.id}")
        os._exit(130)  # sandbox jobs die with us (PDEATHSIG); checkpoints are already durable
    console.print(f"{'paused' if summary.paused else 'stopped'}: {summary.stop_reason}", markup=False,
                  highlight=False, soft_wrap=True)
    if summary.verification:
        console.print(summary.verification, markup=False, highlight=False, soft_wrap=True)
    _print_board(campaign.folder.id, campaign.ledger, campaign.ctx.task)
    console.print(f"details: archlab show {campaign.folder.id}")
    if summary.paused:  # 75 (EX_TEMPFAIL): try again later; 1: a setting must be fixed first
        raise typer.Exit(75 if summary.paused == "unreachable" else 1)


def _print_board(campaign_id: str, ledger: Any, task: Any) -> None:
    from archlab.analysis.leaderboard import leaderboard, render_leaderboard

    board = leaderboard(ledger, task, limit=15)
    counts = ledger.counts()
    out.print(render_leaderboard(board, task.metric, task.report_metric, f"{campaign_id}: leaderboard"))
    spend = ledger.spend()
    out.print(f"evaluated {counts.get('done', 0)}, failed {counts.get('failed', 0)}, "
              f"duplicates reused {counts.get('reused', 0)}, from the workspace cache {counts.get('cached', 0)}; "
              f"tokens {int(spend['tokens'])}, "
              f"USD {spend['usd']:.4f}, train {spend.get('train_s', 0):.1f} s, wall {spend['wall_s']:.1f} s")
    from archlab.cli.findings import print_findings

    print_findings(out, ledger, task)


def _print_models(record: list[Any], metric: str) -> None:
    """An ensemble's yield per model (see archlab/llm/ensemble.py for the definitions)."""
    from rich.table import Table

    table = Table(title="models (improvement: beat the best known when the model was picked)")
    for col in ("model", "experiments", "valid", "improvements", f"best {metric}", "cost USD", "per USD"):
        table.add_column(col)
    for y in record:
        table.add_row(y.model, str(y.experiments), str(y.valid), str(y.improvements),
                      f"{y.best:.4g}" if y.best is not None else "", f"{y.cost:.4f}" + (" (local)" if y.local else ""),
                      f"{y.yield_:.3g}" if y.yield_ is not None else "n/a")
    out.print(table)


@app.command("ls")
def list_(workspace: Path | None = WORKSPACE, config: Path | None = CONFIG) -> None:
    """List the campaigns of the workspace."""
    from rich.table import Table

    from archlab.analysis.leaderboard import leaderboard
    from archlab.campaign_folder import list_campaigns
    from archlab.memory.ledger import Ledger
    from archlab.tasks import get_task

    ws = load_settings(config, workspace=workspace).workspace
    table = Table(title=f"campaigns in {ws}")
    for col in ("id", "task", "done", "failed", "in flight", "best"):
        table.add_column(col, no_wrap=col == "id")
    for folder in list_campaigns(ws):
        ledger = Ledger(folder.ledger)
        counts = ledger.counts()
        name = folder.read_config().get("task", {}).get("name", "?")
        task = guard(lambda name=name: get_task(name))
        board = leaderboard(ledger, task, limit=1)
        table.add_row(folder.id, name, str(counts.get("done", 0)), str(counts.get("failed", 0)),
                      str(counts.get("pending", 0) + counts.get("running", 0)),
                      f"#{board[0]['id']} {task.metric}={board[0][task.metric]:.4f}" if board else "")
        ledger.close()
    out.print(table)


@app.command()
def show(
    campaign_id: str = typer.Argument(..., help="campaign id or folder"),
    experiment: int | None = typer.Argument(None, help="one experiment's id"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    workspace: Path | None = WORKSPACE, config: Path | None = CONFIG,
) -> None:
    """Leaderboard, counts and spend of a campaign, or one experiment in full."""
    from rich.markup import escape

    from archlab.analysis.leaderboard import campaign_json
    from archlab.campaign_folder import CampaignFolder
    from archlab.memory.ledger import Ledger
    from archlab.tasks import get_task

    ws = load_settings(config, workspace=workspace).workspace
    folder = guard(lambda: CampaignFolder.open(ws, campaign_id))
    cfg = folder.read_config()
    task = guard(lambda: get_task(cfg["task"]["name"]))
    ledger = Ledger(folder.ledger)
    if experiment is not None:
        row = ledger.get(experiment)
        if row is None:
            fail(f"campaign {folder.id} has no experiment {experiment}")
        data = {**row.to_dict(), "events": ledger.events(experiment)}
        code = Path(row.code_path).read_text() if row.code_path and Path(row.code_path).exists() else None
        if as_json:
            out.print_json(json.dumps({**data, "code": code}, default=str))
            return
        for key, value in data.items():
            if key != "events":
                out.print(f"[bold]{key}[/]: {escape(str(value))}")
        if code:
            from rich.syntax import Syntax

            out.print(Syntax(code, "python"))
        return
    data = campaign_json(folder.id, ledger, cfg, task)
    data["isolation"] = ledger.get_meta("isolation")
    from archlab.analysis.findings import arms, verified_findings

    verified, control = verified_findings(ledger, task), arms(ledger, task)
    data["verified"] = verified.to_dict() if verified else None
    data["control"] = control.__dict__ if control else None
    from archlab.llm.ensemble import campaign_yields

    record = campaign_yields(cfg, ledger, task, folder.llm_log)
    data["models"] = [y.to_dict() for y in record] if record is not None else None
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    _print_board(folder.id, ledger, task)
    if record is not None:
        _print_models(record, task.metric)
    if data["isolation"]:
        unisolated = cfg.get("sandbox", {}).get("isolation") == "none"
        note = " (unisolated: [sandbox] isolation = \"none\")" if unisolated else ""
        out.print(f"sandbox: {data['isolation']}{note}", markup=False, highlight=False)


@app.command()
def tasks() -> None:
    """The task packs archlab knows."""
    from archlab.tasks import TASKS

    for name, (_, summary) in TASKS.items():
        out.print(f"[bold]{name}[/]: {summary}")


@app.command()
def check(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a candidate module"),
    task: str | None = typer.Option(None, help="task pack"),
    table: Path | None = typer.Option(None), dataset: str | None = typer.Option(None),
    preset: str | None = typer.Option(None),
    workspace: Path | None = WORKSPACE, config: Path | None = CONFIG,
) -> None:
    """Gate and check one candidate (no training); exit 1 when it is rejected."""
    from archlab.single_candidate import check_file

    cfg = load_settings(config, task=task, table=table, dataset=dataset, preset=preset, workspace=workspace)
    verdict = guard(lambda: check_file(cfg, file))
    out.print(verdict.render(), soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(0 if verdict.accepted else 1)


@app.command("eval")
def eval_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a candidate module"),
    task: str | None = typer.Option(None, help="task pack"),
    table: Path | None = typer.Option(None), dataset: str | None = typer.Option(None),
    preset: str | None = typer.Option(None),
    workspace: Path | None = WORKSPACE, config: Path | None = CONFIG,
) -> None:
    """Check and train one user-written candidate and record it in the workspace."""
    from archlab.single_candidate import duplicate_reason, eval_file

    cfg = load_settings(config, task=task, table=table, dataset=dataset, preset=preset, workspace=workspace)
    row = guard(lambda: eval_file(cfg, file))
    why = duplicate_reason(cfg, row.id) if row.duplicate_of else None
    out.print(f"experiment #{row.id} ({row.origin}): {row.status}"
              + (f", duplicate of #{row.duplicate_of} (result reused, nothing trained)" if row.duplicate_of else "")
              + (f": {why}" if why else "")
              + (f", {row.failure_reason}" if row.failure_reason else "")
              + (f", score {row.score:.4f}" if row.score is not None else ""), soft_wrap=True, markup=False)
    raise typer.Exit(1 if row.status == "failed" else 0)


@app.command()
def replay(
    campaign_id: str = typer.Argument(..., help="campaign id or folder"),
    to: int | None = typer.Option(None, "--to", help="replay experiments up to this id"),
    retrain: bool = typer.Option(False, "--retrain", help="re-execute the sandbox jobs instead of using the record"),
    fork: bool = typer.Option(False, "--fork", help="after replaying (up to --to), continue live as a new campaign"),
    show_timeline: bool = typer.Option(False, "--timeline",
                                       help="print the run as a step-by-step story; execute nothing"),
    budget: int | None = typer.Option(None, help="with --fork: the experiment budget of the new campaign"),
    model: str | None = typer.Option(None, help="with --fork: continue with this model"),
    workspace: Path | None = WORKSPACE, config: Path | None = CONFIG,
) -> None:
    """Re-execute a logged campaign and check it reproduces; stop at the first divergence."""
    from archlab.replay import replay as run_replay
    from archlab.replay import timeline

    ws = load_settings(config, workspace=workspace).workspace
    if show_timeline:
        from archlab.campaign_folder import CampaignFolder

        folder = guard(lambda: CampaignFolder.open(ws, campaign_id))
        for line in timeline(folder):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        return
    report = guard(lambda: run_replay(ws, campaign_id, to=to, retrain=retrain, fork=fork,
                                      overrides=flag_overrides(budget=budget, model=model),
                                      on_experiment=lambda i: console.print(f"  #{i} reproduced")))
    out.print(f"replayed {len(report.experiments)} experiments of {report.original} into {report.replay}")
    if report.unfinished is not None:
        out.print(f"the original stopped before experiment #{report.unfinished} finished; replay ends there")
    if report.divergence is not None:
        out.print(str(report.divergence), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print("no divergence: every proposal, code hash and decision reproduced")
    if report.forked is not None:
        out.print(f"forked campaign {report.replay}: {report.forked.stop_reason}")


@app.command()
def doctor(config: Path | None = CONFIG) -> None:
    """What this machine has for archlab, and what is missing."""
    from rich.markup import escape

    from archlab.cli.doctor import checks

    cfg = load_settings(config)
    for ok, name, detail in checks(cfg):
        out.print(f"[{'green' if ok else 'yellow'}]{'ok ' if ok else '-- '}[/] {name}: {escape(detail)}")


from archlab.cli import chat as chat_cli  # noqa: E402  (cheap: typer and rich only)
from archlab.cli import memory as memory_cli  # noqa: E402  (cheap: typer and rich only)
from archlab.cli import report as report_cli  # noqa: E402  (cheap: typer and rich only)
from archlab.cli import serve as serve_cli  # noqa: E402
from archlab.cli.sandbox import app as sandbox_app  # noqa: E402

app.command()(chat_cli.chat)
app.command()(report_cli.report)
app.command()(serve_cli.serve)
app.add_typer(sandbox_app, name="sandbox", help="the docker runner image: build it, check it")
app.add_typer(memory_cli.app, name="memory")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
