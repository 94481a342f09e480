"""The workspace's result cache: a training already done under the same code, task
fidelity (preset values, data) and seed is not done again, by any campaign of the
workspace. One SQLite file, <workspace>/results.sqlite; only successful trainings
are kept (a failure may be the machine's, and is worth another try)."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    result TEXT NOT NULL,     -- the JobResult as to_dict() writes it
    source TEXT NOT NULL,     -- JSON: the campaign and experiment (or verification run) that trained it
    created REAL NOT NULL
);
"""


def result_key(fidelity: dict[str, Any], text_hash: str, seed: int) -> str:
    """What decides a training's outcome besides chance: the task's fidelity, the code, the seed."""
    blob = json.dumps({"fidelity": fidelity, "code": text_hash, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(the stored JobResult dict, where it came from), or None."""
        with self._lock:
            row = self._db.execute("SELECT result, source FROM results WHERE key = ?", (key,)).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else None

    def put(self, key: str, result: dict[str, Any], source: dict[str, Any]) -> None:
        """The first training under a key stays the reference (a later one does not overwrite it)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO results (key, result, source, created) VALUES (?, ?, ?, ?)",
                             (key, json.dumps(result), json.dumps(source), time.time()))

    def close(self) -> None:
        with self._lock:
            self._db.close()
