"""The ledger: one SQLite file (WAL) per campaign with every experiment and an
append-only event log. It is the source of truth for counts, budgets and resume."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,              -- campaign | baseline | eval
    status TEXT NOT NULL,              -- pending | running | done | failed | duplicate
    parent INTEGER,
    name TEXT,
    proposal TEXT,                     -- JSON: name, motivation, design, genome, code for baselines/eval
    code_path TEXT,
    text_hash TEXT,
    ast_hash TEXT,
    fingerprint TEXT,
    metrics TEXT,                      -- JSON
    score REAL,
    failure_reason TEXT,
    duplicate_of INTEGER,
    analysis TEXT,
    train_s REAL DEFAULT 0,
    gpus INTEGER DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS experiments_ast ON experiments(ast_hash);
CREATE INDEX IF NOT EXISTS experiments_text ON experiments(text_hash);
CREATE INDEX IF NOT EXISTS experiments_fp ON experiments(fingerprint);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    experiment INTEGER,
    kind TEXT NOT NULL,
    data TEXT,
    key TEXT UNIQUE                    -- set for events a re-run step must not repeat
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS verify_runs (       -- the verification stage: one training per subject and seed
    subject TEXT NOT NULL,             -- e<id> (a campaign experiment) | b:<name> (a baseline)
    seed_index INTEGER NOT NULL,       -- the same indices (and seeds) for every subject: runs pair by seed
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,              -- ok | timeout | oom | crash | nan | integrity
    metrics TEXT,                      -- JSON
    reason TEXT,
    wall_s REAL DEFAULT 0,
    gpus INTEGER DEFAULT 0,
    reused TEXT,                       -- JSON: the campaign and run whose training the result cache gave
    finished REAL NOT NULL,
    PRIMARY KEY (subject, seed_index)
);
CREATE TRIGGER IF NOT EXISTS events_append_only_u BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_d BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""

FINISHED = ("done", "failed", "duplicate")
IN_FLIGHT = ("pending", "running")
JSON_COLUMNS = ("proposal", "metrics")


@dataclass
class Experiment:
    id: int
    origin: str
    status: str
    parent: int | None
    name: str | None
    proposal: dict[str, Any] | None
    code_path: str | None
    text_hash: str | None
    ast_hash: str | None
    fingerprint: str | None
    metrics: dict[str, Any] | None
    score: float | None
    failure_reason: str | None
    duplicate_of: int | None
    analysis: str | None
    train_s: float
    gpus: int
    created: float
    started: float | None
    finished: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Ledger:
    """Thread-safe: one connection guarded by a lock (SQLite serialises writes anyway)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- experiments ------------------------------------------------------
    def allocate(self, origin: str, proposal: dict[str, Any] | None = None, name: str | None = None) -> int:
        """Reserve the next experiment id before its graph thread starts: a kill
        between the two leaves a pending row that resume picks up, never a ghost."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO experiments (origin, status, name, proposal, created) VALUES (?, 'pending', ?, ?, ?)",
                (origin, name, _dump(proposal), time.time()),
            )
            exp_id = int(cur.lastrowid)
            self.event(exp_id, "allocated", {"origin": origin})
            return exp_id

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes that must land together or not at all (a kill in between leaves none)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def update(self, exp_id: int, **fields: Any) -> None:
        if not fields:
            return
        for col in JSON_COLUMNS:
            if col in fields:
                fields[col] = _dump(fields[col])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE experiments SET {cols} WHERE id = ?", (*fields.values(), exp_id))

    def get(self, exp_id: int) -> Experiment | None:
        rows = self._select("WHERE id = ?", (exp_id,))
        return rows[0] if rows else None

    def experiments(self, status: Iterable[str] | None = None, origin: Iterable[str] | None = None,
                    order: str = "id") -> list[Experiment]:
        where, args = [], []
        if status is not None:
            status = list(status)
            where.append(f"status IN ({','.join('?' * len(status))})")
            args += status
        if origin is not None:
            origin = list(origin)
            where.append(f"origin IN ({','.join('?' * len(origin))})")
            args += origin
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return self._select(f"{clause} ORDER BY {order}", tuple(args))

    def find_hash(self, exclude: int, text_hash: str | None = None, ast_hash: str | None = None,
                  fingerprint: str | None = None) -> Experiment | None:
        """The earliest other experiment sharing a hash (finished or in flight)."""
        for col, value in (("text_hash", text_hash), ("ast_hash", ast_hash), ("fingerprint", fingerprint)):
            if value is None:
                continue
            rows = self._select(f"WHERE {col} = ? AND id != ? AND status != 'duplicate' ORDER BY id LIMIT 1",
                                (value, exclude))
            if rows:
                return rows[0]
        return None

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT origin, status, COUNT(*) FROM experiments "
                                    "GROUP BY origin, status").fetchall()
        out: dict[str, int] = {}
        for origin, status, n in rows:
            out[f"{origin}.{status}"] = n
            out[status] = out.get(status, 0) + n
        out["reused"] = self.count_events("gate.duplicate")                 # exact: a recorded result reused
        out["near_duplicates"] = self.count_events("gate.near_duplicate")  # refused (embedding, judge)
        out["cached"] = self.count_events("train.reused_from_cache")      # trained before in this workspace
        return out

    def _select(self, clause: str, args: tuple[Any, ...]) -> list[Experiment]:
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM experiments {clause}", args).fetchall()
        return [_experiment(r) for r in rows]

    # -- events -------------------------------------------------------------
    def event(self, experiment: int | None, kind: str, data: dict[str, Any] | None = None,
              key: str | None = None) -> bool:
        """Append an event. With `key`, a repeat (a step re-run after a kill) is ignored."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO events (ts, experiment, kind, data, key) VALUES (?, ?, ?, ?, ?)",
                (time.time(), experiment, kind, _dump(data), key),
            )
            return cur.rowcount == 1

    def events(self, experiment: int | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if experiment is not None:
            where.append("experiment = ?")
            args.append(experiment)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM events {clause} ORDER BY seq", args).fetchall()
        return [{**dict(r), "data": json.loads(r["data"]) if r["data"] else None} for r in rows]

    def last_event_seq(self) -> int:
        """The newest event's number: a cheap way to tell whether anything happened since."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def data_version(self) -> int:
        """SQLite's counter of commits by other connections: a reader's cheap "has anything changed"."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def count_events(self, kind: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events WHERE kind = ?", (kind,)).fetchone()[0])

    # -- verification runs ------------------------------------------------------
    def add_verify_run(self, subject: str, seed_index: int, seed: int, status: str, metrics: dict[str, Any] | None,
                       reason: str = "", wall_s: float = 0.0, gpus: int = 0,
                       reused: dict[str, Any] | None = None) -> bool:
        """Record one finished verification run; a second record of the same run is ignored."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO verify_runs (subject, seed_index, seed, status, metrics, reason, wall_s, gpus, "
                "reused, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (subject, seed_index, seed, status, _dump(metrics), reason, wall_s, gpus, _dump(reused), time.time()))
            return cur.rowcount == 1

    def verify_runs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM verify_runs ORDER BY subject, seed_index").fetchall()
        return [{**dict(r), "metrics": json.loads(r["metrics"]) if r["metrics"] else None,
                 "reused": json.loads(r["reused"]) if r["reused"] else None} for r in rows]

    # -- meta: spend and flags -------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def add_spend(self, **amounts: float) -> dict[str, float]:
        """Atomically add to the stored spend (tokens, usd, gpu_s, wall_s)."""
        with self._lock:
            spend = self.get_meta("spend", {}) or {}
            for k, v in amounts.items():
                spend[k] = spend.get(k, 0) + v
            self.set_meta("spend", spend)
            return spend

    def spend(self) -> dict[str, float]:
        base = {"tokens": 0, "usd": 0.0, "gpu_s": 0.0, "wall_s": 0.0, "llm_calls": 0}
        return {**base, **(self.get_meta("spend", {}) or {})}


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _experiment(row: sqlite3.Row) -> Experiment:
    data = dict(row)
    for col in JSON_COLUMNS:
        data[col] = json.loads(data[col]) if data[col] else None
    return Experiment(**data)
