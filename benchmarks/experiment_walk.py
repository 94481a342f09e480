"""The walk of one offline experiment through the code: `archlab run` on nb201 with one
experiment (no baselines), traced from the command to the leaderboard it prints. The
walk is the package's functions in the order they are first entered (each once: the
order a reader follows the data through the code); printed are its length, the files it
visits, the switches between files along it, the entries into agents/context.py and
the crossings between agents/ and memory/.

    .venv/bin/python benchmarks/experiment_walk.py --table ../shared/data/nb201/nb201_genius_combined.csv.gz
    .venv/bin/python benchmarks/experiment_walk.py --table T --files   # and the walk itself

The sandboxed job runs in another process and is not traced (its harness is one file)."""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import archlab

ROOT = Path(archlab.__file__).resolve().parent


def _short(path: str) -> str | None:
    """archlab/..., agents/..., memory/...: the file as the layout names it, or None outside the package."""
    p = Path(path).resolve()
    try:
        rel = str(p.relative_to(ROOT))
        top = rel.split("/")[0]
        return rel if top in ("agents", "memory", "sandbox", "prompts") else f"archlab/{rel}"
    except ValueError:
        pass
    for folder in ("agents", "memory", "sandbox", "prompts"):  # mapped into the package by pyproject.toml
        mod = sys.modules.get(f"archlab.{folder}")
        base = Path(mod.__file__).resolve().parent if mod and mod.__file__ else None
        if base is not None and base in p.parents:
            return f"{folder}/{p.relative_to(base)}"
    return None


def walk(table: Path) -> list[str]:
    from archlab.cli import app

    calls: list[str] = []
    seen: set[object] = set()
    cache: dict[str, str | None] = {}

    def profile(frame, event, _arg):  # noqa: ANN001 - sys.setprofile's signature
        if event != "call" or frame.f_code in seen:
            return
        seen.add(frame.f_code)
        name = frame.f_code.co_filename
        if name not in cache:
            cache[name] = _short(name)
        if cache[name] is not None and not frame.f_code.co_name.startswith("<"):
            # a module body is an import, a lambda or comprehension part of its function: not steps of the walk
            calls.append(cache[name])

    with tempfile.TemporaryDirectory() as tmp:
        args = ["run", "--budget", "1", "--workspace", tmp, "--quiet"]  # the task: from archlab.toml below
        options = Path(tmp) / "archlab.toml"
        options.write_text(f'[task]\nname = "nb201"\ntable = "{table}"\n[search]\nbaselines = false\n'
                           '[memory]\nembeddings = "hash"\n')
        sys.setprofile(profile)
        threading.setprofile(profile)  # the experiments' graph runs in the runner's threads
        try:
            app([*args, "--config", str(options)], standalone_mode=False)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=Path(__file__).resolve().parents[2]
                        / "shared/data/nb201/nb201_genius_combined.csv.gz")
    parser.add_argument("--files", action="store_true", help="print the walk, file by file")
    a = parser.parse_args()
    if not a.table.exists():
        sys.exit(f"no NB201 table at {a.table}: pass --table (see ../shared/data/README)")
    calls = walk(a.table.resolve())
    files = [f for i, f in enumerate(calls) if i == 0 or calls[i - 1] != f]
    top = [f.split("/")[0] if not f.startswith("archlab/") else "/".join(f.split("/")[:2]) for f in files]
    crossings = sum(1 for x, y in zip(top, top[1:], strict=False) if {x, y} == {"agents", "memory"})
    print(f"functions entered: {len(calls)}")
    print(f"distinct files: {len(set(calls))}")
    print(f"file switches: {len(files) - 1}")
    print(f"entries into agents/context.py: {files.count('agents/context.py')}")
    print(f"crossings between agents/ and memory/: {crossings}")
    if a.files:
        for f in files:
            print("  ", f)


if __name__ == "__main__":
    main()
