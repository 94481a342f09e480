"""`archlab memory`: search the workspace's vector memory, see what it holds, add
notes and papers. Cheap to import: chromadb and the embedder load inside commands.
Bad input or settings fail with archlab.cli.common.fail (exit 2)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from archlab.cli.common import CONFIG, WORKSPACE, console, fail, guard, load_settings, out

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="The workspace's vector memory: past experiments, the analyst's lessons, your notes.")
KINDS = ("experiments", "insights", "notes", "code")


def _open(workspace: Path | None, config: Path | None) -> tuple[Any, Path]:
    """The workspace's vector memory and the workspace; fails when its embedder cannot load."""
    from archlab.memory.vector import VectorMemory

    cfg = load_settings(config, workspace=workspace)
    from archlab.memory.embeddings import get_embedder

    guard(lambda: get_embedder(cfg.memory.embeddings))
    return VectorMemory.for_config(cfg, cfg.workspace), Path(cfg.workspace)


def _index(mem: Any, workspace: Path, task: str | None) -> None:
    n = mem.sync_workspace(workspace, task)
    if n:
        console.print(f"indexed {n} new experiment(s) from {workspace}")


@app.command()
def search(
    query: str = typer.Argument(..., help="what to look for, in words (or a file of code with --code)"),
    kind: str = typer.Option("all", help="experiments | insights | notes | code | all"),
    task: str | None = typer.Option(None, help="only this task's memories"),
    k: int = typer.Option(5, "-k", min=1, max=100, help="results per kind"),
    code: bool = typer.Option(False, "--code", help="QUERY is a Python file: find the most similar code"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    workspace: Path | None = WORKSPACE, config: Path | None = CONFIG,
) -> None:
    """Nearest memories to a query, most similar first."""
    from archlab.memory.embeddings import code_vector

    if kind not in (*KINDS, "all"):
        fail(f"--kind must be one of {', '.join(KINDS)} or all")
    mem, ws = _open(workspace, config)
    _index(mem, ws, task)
    if code:
        path = Path(query)
        if not path.is_file():
            fail(f"--code needs a file; {query} is not one")
        kinds, vectors = ["code"], {"code": code_vector(path.read_text())}
    else:
        kinds = list(KINDS[:3]) if kind == "all" else [kind]
        text = mem.embed([query])[0]
        vectors = {kd: (code_vector(query) if kd == "code" else text) for kd in kinds}
    results = []
    for kd in kinds:
        notes = kd == "notes" and task
        for it in mem.query(kd, vectors[kd], k, {"task": {"$in": ["", task]}} if notes else None, task=task):
            m = it.meta
            ref = (f"{m.get('title')} part {m.get('chunk', 0) + 1}" if kd == "notes"
                   else f"{m.get('campaign')}#{m.get('experiment')}")
            results.append({"kind": kd, "similarity": it.similarity, "ref": ref, "name": m.get("name"),
                            "task": m.get("task"), "status": m.get("status"), "score": m.get("score"),
                            "text": it.text})
    if as_json:
        typer.echo(json.dumps(results, indent=1))
        return
    if not results:
        typer.echo("nothing in memory yet: run a campaign, or add notes with `archlab memory add FILE`")
        return
    from rich.table import Table

    table = Table(title=f"memory: {query[:60]}")
    for col in ("kind", "sim", "what", "outcome", "text"):
        table.add_column(col, overflow="fold")
    for r in results:
        outcome = f"{r['status']} {r['score']:.4g}" if r["score"] is not None else (r["status"] or "")
        what = f"{r['ref']} {r['name'] or ''}".strip()
        table.add_row(r["kind"], f"{r['similarity']:.3f}", what, outcome, " ".join(r["text"].split())[:160])
    out.print(table)


@app.command()
def stats(workspace: Path | None = WORKSPACE, config: Path | None = CONFIG,
          as_json: bool = typer.Option(False, "--json")) -> None:
    """What the memory holds (it first indexes the workspace's finished experiments)."""
    mem, ws = _open(workspace, config)
    _index(mem, ws, None)
    data = mem.stats()
    if as_json:
        typer.echo(json.dumps(data, indent=1))
        return
    typer.echo(f"memory at {data['where']} (embeddings: {data['embeddings']})")
    for kd in KINDS:
        typer.echo(f"  {kd:<12} {data[kd]:>7,}")
    for task, n in sorted(data["tasks"].items()):
        typer.echo(f"  task {task}: {n:,} experiments")


@app.command()
def add(files: list[Path] = typer.Argument(..., help="text or markdown files (papers as text, notes)"),
        task: str | None = typer.Option(None, help="show these notes only to campaigns on this task"),
        workspace: Path | None = WORKSPACE, config: Path | None = CONFIG) -> None:
    """Add notes or papers (as text) to the memory; the researcher sees the relevant parts."""
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    mem, _ = _open(workspace, config)
    try:
        added = mem.add_notes(files, task=task or "")
    except ValueError as exc:  # a file that is not text
        fail(str(exc))
    for path, n in added:
        typer.echo(f"added {path}: {n} chunk(s)")
