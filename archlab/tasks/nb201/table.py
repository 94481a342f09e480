"""A NAS-Bench-201 results table: read it (CSV, CSV.gz or JSON), check it, and
index it once into a read-only SQLite file so each harness run does a single
indexed lookup instead of parsing 15,625 rows."""
from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from archlab.tasks.base import TaskOptionError
from archlab.tasks.nb201.arch import OPS, genome_to_arch

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet16")
JSON_KEYS = ("val_acc_200", "test_acc_200")
INDEX_VERSION = b"nb201-index-v1"  # bump when the SQLite layout changes: old caches stop matching
SUFFIXES = (".csv", ".csv.gz", ".json", ".json.gz")

Row = tuple[str, float, float]  # arch, val, test


def table_format(path: Path) -> str:
    """"csv" or "json", from the file name."""
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix.split(".")[1]
    raise TaskOptionError(f"nb201 table {path}: unknown format; use one of {', '.join(SUFFIXES)}")


def _open(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def check_table(path: Path, dataset: str) -> None:
    """Cheap checks for validate(): the file exists, has a known format and, for a
    CSV, the dataset's columns (only the header is read)."""
    if not path.is_file():
        raise TaskOptionError(f"nb201 table not found: {path} "
                              "(set [task] table = ... in archlab.toml or pass --table PATH)")
    if table_format(path) == "csv":
        with _open(path) as f:
            header = next(csv.reader(f), [])
        missing = [c for c in ("arch", f"{dataset}_val", f"{dataset}_test") if c not in header]
        if missing:
            raise TaskOptionError(f"nb201 table {path} lacks column(s) {', '.join(missing)} "
                                  f"needed for dataset {dataset!r}; "
                                  f"its columns are: {', '.join(header) or '(none)'}")


def _valid_archs() -> frozenset[str]:
    return frozenset(genome_to_arch({"edges": list(e)}) for e in itertools.product(OPS, repeat=6))


def _number(value: object, where: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TaskOptionError(f"{where}: {value!r} is not a number") from None


def read_rows(path: Path, dataset: str) -> Iterator[Row]:
    """(arch, val, test) for every row; the dataset is ignored for JSON tables."""
    valid = _valid_archs()

    def checked(arch: str, where: str) -> str:
        if arch not in valid:
            raise TaskOptionError(f"{where}: {arch!r} is not an NB201 arch string "
                                  "(|op~0|+|op~0|op~1|+|op~0|op~1|op~2|)")
        return arch

    if table_format(path) == "csv":
        check_table(path, dataset)
        val_col, test_col = f"{dataset}_val", f"{dataset}_test"
        with _open(path) as f:
            for line, rec in enumerate(csv.DictReader(f), start=2):
                where = f"{path} line {line}"
                yield (checked(rec["arch"], where), _number(rec[val_col], f"{where} {val_col}"),
                       _number(rec[test_col], f"{where} {test_col}"))
        return
    with _open(path) as f:
        try:
            data = json.load(f)
        except ValueError as exc:
            raise TaskOptionError(f"nb201 table {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TaskOptionError(f"nb201 table {path} must be a JSON object {{arch: {{{JSON_KEYS[0]}, {JSON_KEYS[1]}}}}}")
    for arch, rec in data.items():
        where = f"{path} entry {arch!r}"
        if not isinstance(rec, dict) or any(k not in rec for k in JSON_KEYS):
            raise TaskOptionError(f"{where} must be an object with keys {', '.join(JSON_KEYS)}")
        yield checked(arch, f"{path}"), _number(rec[JSON_KEYS[0]], where), _number(rec[JSON_KEYS[1]], where)


def index_name(path: Path, dataset: str) -> str:
    """nb201-<dataset>-<hash12>.sqlite: content-addressed, so an edited table gets a new index."""
    label = "json" if table_format(path) == "json" else dataset
    h = hashlib.sha256(INDEX_VERSION + b"\0" + label.encode() + b"\0")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"nb201-{label}-{h.hexdigest()[:12]}.sqlite"


def index_table(path: Path, dataset: str, out_dir: Path) -> Path:
    """Build (or reuse) the SQLite index of `path` under `out_dir`; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / index_name(path, dataset)
    if target.exists():
        return target
    tmp = out_dir / f".{target.name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.execute("CREATE TABLE nb201 (arch TEXT PRIMARY KEY, val REAL, test REAL) WITHOUT ROWID")
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        rows: dict[str, tuple[float, float]] = {}
        for arch, val, test in read_rows(path, dataset):
            if arch in rows:
                raise TaskOptionError(f"nb201 table {path} lists {arch} twice")
            rows[arch] = (val, test)
        if not rows:
            raise TaskOptionError(f"nb201 table {path} has no rows")
        con.executemany("INSERT INTO nb201 VALUES (?, ?, ?)", ((a, v, t) for a, (v, t) in rows.items()))
        meta = {"source": str(path), "dataset": dataset if table_format(path) == "csv" else "json",
                "rows": str(len(rows))}
        con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        con.commit()
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    tmp.chmod(0o444)
    os.replace(tmp, target)  # atomic: a concurrent or killed prepare never leaves half an index
    return target


def read_index(db: Path) -> tuple[dict[str, str], list[Row]]:
    """(meta, rows) of an index, opened read-only (for reports and tests)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT key, value FROM meta")), list(con.execute("SELECT arch, val, test FROM nb201"))
    finally:
        con.close()


__all__ = ["DATASETS", "check_table", "index_name", "index_table", "read_index", "read_rows", "table_format"]
