"""`archlab sandbox ...`: build and check the docker runner image (also run on its
own: `python -m archlab.cli.sandbox build --offline`). Cheap to import: docker is
imported inside the commands. A failed build fails with archlab.cli.common.fail, exit 1."""
from __future__ import annotations

from pathlib import Path

import typer

from archlab.cli.common import guard

app = typer.Typer(help="The docker sandbox's runner image: build it, check it.", no_args_is_help=True)


@app.command()
def build(
    offline: bool = typer.Option(False, "--offline", help="No image registry: base the image on a Debian rootfs "
                                 "made with debootstrap (needs root and an apt mirror)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the current tag exists."),
    base: str | None = typer.Option(None, help="Base image to build FROM (has python3.11, sh, coreutils)."),
    wheels: Path | None = typer.Option(None, help="Install from this folder of wheels only (no package index)."),
) -> None:
    """Build the runner image (Python, torch) and print its tag."""
    from archlab.sandbox.image import build_image

    tag = guard(lambda: build_image(offline=offline, force=force, base=base, wheels=wheels,
                                    log=lambda line: typer.echo(line, err=True)), code=1)
    typer.echo(tag)


@app.command()
def status() -> None:
    """Is the current runner image built? Exit 1 if not."""
    from archlab.sandbox.image import image_status

    ok, line = image_status()
    typer.echo(line)
    if not ok:
        raise typer.Exit(1)


if __name__ == "__main__":  # `python -m archlab.cli.sandbox build --offline` (CI, before the CLI mounts it)
    app()
