"""The `serve` command, for archlab/cli/commands.py to register: the web page and JSON API
over a workspace (archlab/web). Cheap to import: FastAPI and uvicorn load inside."""
from __future__ import annotations

import threading
from pathlib import Path

import typer

from archlab.cli.common import CONFIG, WORKSPACE, console, fail, guard, load_settings


def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind; anything but loopback requires a token"),
    port: int = typer.Option(8000, min=0, max=65535, help="port to listen on (0: any free one)"),
    token_file: Path | None = typer.Option(None, "--token-file", help="read the access token from this file "
                                           "(default off loopback: a new one, printed once)"),
    workspace: Path | None = WORKSPACE,
    config: Path | None = CONFIG,
) -> None:
    """Serve the lab's web page: campaigns live, lineage, code and diffs, memory search, the analyst chat."""
    from archlab.web import security

    cfg = load_settings(config, workspace=workspace)
    ws = Path(cfg.workspace)
    token_hash, allowed = None, None
    if token_file is not None:
        token_hash = security.digest(guard(lambda: security.read_token_file(token_file)))
    elif not security.is_loopback(host):
        token = security.new_token()
        token_hash = security.digest(token)
        # printed once, never stored: only its hash stays in this process
        console.print(f"access token (shown once; open the page with ?token=... or send "
                      f"Authorization: Bearer ...): {token}", markup=False, highlight=False, soft_wrap=True)
    if security.is_loopback(host) and token_hash is None:
        allowed = security.LOOPBACK  # DNS rebinding: a loopback server answers to loopback names only
    if not ws.is_dir():
        fail(f"no workspace at {ws}/: run a campaign first (`archlab run`), or pass -w")
    import uvicorn

    from archlab.web.app import create_app

    app = create_app(ws, cfg, token_hash=token_hash, allowed_hosts=allowed)
    threading.Thread(target=_warm_up, daemon=True).start()
    shown = f"[{host}]" if ":" in host else host
    console.print(f"archlab serving {ws} at http://{shown}:{port}/ (API docs at /api/docs); Ctrl-C stops it",
                  markup=False, highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _warm_up() -> None:
    """Load what the first chat question needs (litellm, langgraph: seconds) while nobody waits."""
    import langgraph.checkpoint.sqlite  # noqa: F401

    import archlab.analysis.chat  # noqa: F401
    import archlab.llm  # noqa: F401
