"""A job's work folder on the host: starting it clean, vetting job file names, removing trees
and filling in a command's placeholders. Used by the process, docker and ray backends."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from archlab.sandbox.base import Job


def safe_relpath(name: str) -> Path:
    """`name` as a path relative to input/; ValueError if it is absolute, empty or climbs out with '..'."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"job file name {name!r} must be a relative path inside input/")
    return rel


def remove_tree(path: Path) -> None:
    """Remove a previous run's tree, including read-only dirs; never follows symlinks."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path)


def fresh_workdir(job: Job) -> tuple[Path, Path, Path]:
    """The job's input/, output/ and log paths, with what an earlier run left removed (a rerun
    after resume starts clean)."""
    workdir = Path(job.workdir).resolve()
    inp, out, log_path = workdir / "input", workdir / "output", workdir / "log"
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in (inp, out, log_path):
        remove_tree(stale)
    return inp, out, log_path


def substitute(arg: str, subst: dict[str, str]) -> str:
    """One command argument with each placeholder (base.PYTHON, INPUT, OUTPUT) replaced by its path."""
    for key, value in subst.items():
        arg = arg.replace(key, value)
    return arg
