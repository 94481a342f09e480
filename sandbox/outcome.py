"""What a job printed and how it ended: Stream consumes its merged output (capped log, events,
rolling tail) and classify() names the outcome. Used by the process and docker backends."""
from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any, BinaryIO

from archlab.sandbox.base import EventSink, Limits, parse_event, read_result

log = logging.getLogger(__name__)

TAIL_CHARS = 4000           # JobResult.log_tail
TAIL_KEEP = 64 * 1024       # rolling tail of the stream, scanned for OOM markers
MAX_LINE = 1 << 20          # a longer line without newline is not an event: dropped
OOM_MARKERS = ("MemoryError", "Cannot allocate memory", "can't allocate memory",
               "std::bad_alloc", "out of memory", "Memory allocation still failed")
RESULT_STATUSES = {"ok": "ok", "nan": "nan", "integrity": "integrity", "oom": "oom"}  # a harness may catch its own OOM


class Stream:
    """Consumes the job's merged stdout/stderr: capped log file, events, rolling tail.
    Memory stays bounded whatever the job prints."""

    def __init__(self, log_file: BinaryIO, cap: int, on_event: EventSink | None, job_name: str):
        self.log, self.cap, self.on_event, self.job_name = log_file, cap, on_event, job_name
        self.written = 0
        self.truncated = False
        self.partial = b""
        self.tail = bytearray()
        self.event_errors = 0

    def feed(self, chunk: bytes) -> None:
        room = self.cap - self.written
        if room > 0:
            self.log.write(chunk[:room])
            self.written += min(room, len(chunk))
        if len(chunk) > room and not self.truncated:
            self.truncated = True
            self.log.write(f"\n[archlab] log truncated at {self.cap} bytes; "
                           "further output discarded\n".encode())
        self.log.flush()
        self.tail += chunk
        if len(self.tail) > TAIL_KEEP:
            del self.tail[:-TAIL_KEEP]
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_LINE:
            self.partial = b""
        for raw in lines:
            self._line(raw)

    def close(self) -> None:
        """The output ended: a last line without a newline may still be an event."""
        if self.partial:
            self._line(self.partial)
            self.partial = b""

    def _line(self, raw: bytes) -> None:
        if self.on_event is None or not raw.lstrip().startswith(b"{"):
            return
        event = parse_event(raw.decode("utf-8", errors="replace"))
        if event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # a broken sink must not kill the job
            self.event_errors += 1
            if self.event_errors == 1:
                log.exception("on_event failed for job %s (further failures not logged)",
                              self.job_name)


def last_line(tail: str) -> str:
    """The last meaningful log line, e.g. the exception line of a traceback."""
    for line in reversed(tail.splitlines()):
        line = line.strip()
        if line and not line.startswith("[archlab]") and parse_event(line) is None:
            return line[:500]
    return ""


def classify(code: int | None, timed_out: bool, tail: str, result_path: Path,
             lim: Limits) -> tuple[str, str, dict[str, Any] | None]:
    """(status, reason, result.json) of a finished job. `code` is the exit code, negative for
    a signal. Precedence: timeout > oom > result.json's status > nonzero exit > missing result.json."""
    result, bad_result = read_result(result_path)
    if timed_out:
        return "timeout", f"wall time limit of {lim.wall_time_s:g} s exceeded", result
    reported = result.get("status") if result else None
    marker = next((m for m in OOM_MARKERS if m in tail), None)
    # A job that ends well (exit 0, status ok) may have caught an OOM and backed off.
    clean = code == 0 and reported == "ok"
    if code == -signal.SIGKILL or (marker and not clean):
        why = marker or "killed by SIGKILL"
        return "oom", f"out of memory (limit {lim.memory_mb} MB): {last_line(tail) or why}", result
    if result is not None:
        if reported in RESULT_STATUSES:
            return RESULT_STATUSES[reported], str(result.get("reason", "")), result
        if reported is None:
            return "crash", "result.json has no 'status'", result
        return "crash", str(result.get("reason") or f"harness reported status {reported!r}"), result
    if bad_result:
        return "crash", bad_result, None
    if code != 0:
        line = last_line(tail)
        if code is not None and code < 0:
            sig = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return "crash", f"killed by {sig}" + (f": {line}" if line else ""), None
        return "crash", line or f"exit code {code}", None
    return "crash", "harness wrote no result.json", None
