"""The sandbox interface every backend implements (process, docker, ray).

A job is a plain program (a task harness) plus its files. The backend lays the
files out read-only in `<workdir>/input`, gives the program a writable
`<workdir>/output`, runs it under limits, streams its JSON-lines log and
classifies the outcome. Candidate code never runs in the campaign's process.
"""
from __future__ import annotations

import json
import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "timeout", "oom", "crash", "nan", "integrity"]
STATUSES: tuple[str, ...] = ("ok", "timeout", "oom", "crash", "nan", "integrity")

# Placeholders a job's command may use; each backend substitutes its own paths.
PYTHON, INPUT, OUTPUT = "{python}", "{input}", "{output}"


@dataclass
class Limits:
    wall_time_s: float = 600.0
    memory_mb: int = 4096
    cpus: float = 1.0
    gpus: list[int] = field(default_factory=list)
    output_bytes: int = 2_000_000  # cap on the captured log


@dataclass
class Job:
    """What to run. `files` are written into input/; `data` are external paths
    exposed read-only as input/<name>; `command` uses the placeholders above."""

    name: str
    workdir: Path
    command: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    data: dict[str, Path] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)  # extra variables, already vetted


@dataclass
class JobResult:
    status: Status
    reason: str = ""
    exit_code: int | None = None
    result: dict[str, Any] | None = None  # output/result.json, when written
    log_path: Path | None = None
    log_tail: str = ""
    wall_s: float = 0.0
    truncated: bool = False
    gpus: int = 0  # how many GPUs the job held (for GPU-hours)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def load(cls, path: Path) -> JobResult:
        """A result saved with to_dict() (a finished job's record)."""
        data = json.loads(Path(path).read_text())
        data["log_path"] = Path(data["log_path"]) if data.get("log_path") else None
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "reason": self.reason, "exit_code": self.exit_code,
            "result": self.result, "log_path": str(self.log_path) if self.log_path else None,
            "log_tail": self.log_tail, "wall_s": self.wall_s, "truncated": self.truncated,
            "gpus": self.gpus,
        }


EventSink = Callable[[dict[str, Any]], None]


class Backend(ABC):
    """Runs one job to completion; `on_event` gets each JSON line the job prints."""

    name: str = "abstract"

    @abstractmethod
    def run(self, job: Job, on_event: EventSink | None = None) -> JobResult: ...

    def close(self) -> None:  # noqa: B027 - an optional hook: most backends hold nothing
        """Release what the backend holds beyond a single job (an engine connection, a cluster it
        started). Callers call it once, when they are done with the backend; the default holds
        nothing. Safe to call twice."""


def parse_event(line: str) -> dict[str, Any] | None:
    """A harness event is one JSON object per line with an "event" key."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "event" in obj else None


def touched_input(text: str, input_dir: str) -> str | None:
    """The input path a log shows a failed write to (Python's OSError, or a shell's message), or None:
    a job that tried to change its read-only input is an integrity failure even if it carried on."""
    where = re.escape(input_dir.rstrip("/"))
    m = re.search(rf"(?:Read-only file system|Permission denied): '({where}(?:/[^']*)?)'"
                  rf"|({where}(?:/\S*)?): (?:Read-only file system|Permission denied)", text)
    return (m.group(1) or m.group(2)) if m else None


RESULT_MAX = 16 << 20  # result.json larger than this is not read (the lab's memory is not the job's to fill)


def read_result(path: Path) -> tuple[dict[str, Any] | None, str]:
    """output/result.json as an object, or (None, why not). Never follows a link (a job could point
    it at a host file for the lab to read back into the ledger) and never reads more than RESULT_MAX."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, ""
    except OSError as e:
        return None, f"result.json cannot be read safely ({e.strerror})"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None, "result.json is not a regular file"
        if st.st_size > RESULT_MAX:
            return None, f"result.json is {st.st_size} bytes, over the {RESULT_MAX}-byte cap"
        raw = f.read(st.st_size)  # checked above (read(n) would allocate n bytes up front)
    try:
        loaded = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"result.json is not valid JSON: {e}"
    return (loaded, "") if isinstance(loaded, dict) else (None, "result.json is not a JSON object")


def linked_output(out: Path) -> str | None:
    """The first link in a job's output/, named: a job writes plain files, and a link would let
    whoever reads its output (the lab, a shipped tarball) read a host file instead."""
    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            path = Path(root, name)
            if path.is_symlink():
                return (f"output/{path.relative_to(out).as_posix()} is a link ({os.readlink(path)}): "
                        "a job writes plain files")
    return None
