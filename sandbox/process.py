"""The process backend: a job runs as a local subprocess under OS limits.

What it guarantees: the job runs inside bubblewrap (see isolation.py: no
network, no view of the lab's processes or of any file but its own folder, the
Python environment and its data) unless [sandbox] isolation = "none"; its own
session (the wall-time limit kills the whole process group with SIGKILL, so a
child that ignores SIGTERM dies, and so do its children; inside bubblewrap the
PID namespace dies with its first process, so nothing outlives the job); a cap
on its processes (pids.py: a fork bomb fails its forks); a memory rlimit; no
core dumps; no new privileges; PR_SET_PDEATHSIG so the job dies with the
campaign process (a resumed campaign must not find an orphan still training);
an environment scrubbed to an allow-list (no API keys or tokens); input/
written read-only and hashed before and after the run, and a log showing a
failed write to it is an integrity failure.

Unisolated ("none") it cannot guarantee what docker and bubblewrap can: a
process that calls setsid() leaves the group (the pids cgroup, where there is
one, still finds it); PDEATHSIG reaches only the direct child and fires when
the *thread* that called run() exits, so call run() from a thread that
outlives the job; file modes do not stop root; no network isolation.

Memory is capped with RLIMIT_DATA (private writable mappings: heap, anonymous
mmap, thread stacks), not RLIMIT_AS. Measured (torch 2.11+cu130, H200):
a CUDA build of torch maps ~18 GB of address space (VmPeak 18.9 GB, VmData
1.8 GB) for a small bf16 model, so RLIMIT_AS at 4096 or even 16384 MB breaks
CUDA init, and on such a machine even a CPU-only job fails under RLIMIT_AS
4096; RLIMIT_DATA 2048 and 4096 both train fine, and a bytearray bomb still
dies with MemoryError. With the CPU wheel (torch 2.13) a small model peaks at
~0.85 GB VmPeak. RLIMIT_DATA does not count shared mappings (/dev/shm): a hard
limit on resident memory needs a cgroup (docker backend).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from archlab.errors import ConfigError
from archlab.sandbox import isolation as iso
from archlab.sandbox.base import (
    INPUT,
    OUTPUT,
    PYTHON,
    Backend,
    EventSink,
    Job,
    JobResult,
    Limits,
    linked_output,
    touched_input,
)
from archlab.sandbox.outcome import TAIL_CHARS, Stream, classify
from archlab.sandbox.pids import PidsCap, cgroup_base, sweep
from archlab.sandbox.workdir import fresh_workdir, safe_relpath, substitute

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
# Loaded here, not in the forked child: dlopen there could deadlock on a lock
# another thread held at fork time (several jobs run from threads at once).
_LIBC = ctypes.CDLL(None, use_errno=True)
CHUNK = 64 * 1024
DRAIN_AFTER_EXIT_S = 2.0    # read what is left in the pipe once the job has exited


def _env_for(job: Job, output: Path, isolated: bool) -> dict[str, str]:
    """Allow-list only: nothing else from the parent (no *_API_KEY, no tokens)."""
    parent = os.environ
    lim = job.limits
    threads = str(max(1, int(lim.cpus)))
    env = {
        "PATH": parent.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(output),
        "LANG": parent.get("LANG", "C.UTF-8"),
        "LC_ALL": parent.get("LC_ALL", "C.UTF-8"),
        "PYTHONHASHSEED": parent.get("PYTHONHASHSEED", "0"),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        # Inside bubblewrap only the assigned GPUs' device nodes exist: CUDA numbers them from 0.
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) if isolated else str(g) for i, g in enumerate(lim.gpus)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
    }
    if isolated:
        env["TMPDIR"] = "/tmp"  # its private tmpfs
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the order of the /dev/nvidiaN nodes
    if "TZ" in parent:
        env["TZ"] = parent["TZ"]
    env.update(job.env)
    return env


def _preexec(limits: Limits, parent_pid: int, cap: PidsCap) -> Callable[[], None]:
    """Runs in the child between fork and exec (after setsid)."""
    mem = limits.memory_mb * 1024 * 1024

    def setup() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(137)
        _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid binary gives the job more rights
        cap.enter()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if mem > 0:
            resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))  # see module doc

    return setup


def _lay_out_input(job: Job, inp: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write files read-only, link data; return ({file: sha256}, {data link: target})."""
    inp.mkdir(parents=True)
    hashes: dict[str, str] = {}
    links: dict[str, str] = {}
    for name, content in job.files.items():
        rel = safe_relpath(name)
        data = content.encode() if isinstance(content, str) else bytes(content)
        path = inp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o444)
        hashes[rel.as_posix()] = hashlib.sha256(data).hexdigest()
    for name, target in job.data.items():
        rel = safe_relpath(name)
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        links[rel.as_posix()] = str(Path(target).resolve())
        (inp / rel).symlink_to(links[rel.as_posix()])
    for root, dirs, _ in os.walk(inp, topdown=False):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                os.chmod(p, 0o555)
    inp.chmod(0o555)
    return hashes, links


def _tampered(inp: Path, hashes: dict[str, str], links: dict[str, str]) -> str | None:
    """Name the first input that changed, vanished or appeared; None if intact."""
    for rel, digest in hashes.items():
        path = inp / rel
        if path.is_symlink() or not path.is_file():
            return f"input/{rel} was replaced or removed"
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return f"input/{rel} was modified"
    for rel, target in links.items():
        path = inp / rel
        if not path.is_symlink() or os.readlink(path) != target:
            return f"input/{rel} (data link) was replaced or removed"
    expected = set(hashes) | set(links)
    expected |= {p.as_posix() for rel in expected for p in Path(rel).parents if p != Path(".")}
    for root, dirs, files in os.walk(inp):
        for name in dirs + files:
            rel = Path(os.path.join(root, name)).relative_to(inp).as_posix()
            if rel not in expected:
                return f"input/{rel} was added"
    return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, python: str | None = None, isolation: str = "auto", pids_limit: int = 256):
        """isolation: "bwrap" (required), "none", or "auto" (bwrap where it works). The campaign
        decides auto before it builds the backend (isolation.resolve), refusing model code unisolated."""
        # The folder resolved, the name not: a venv's python is a link, and the venv is where it is invoked.
        exe = Path(python or sys.executable)
        self.python = str(exe.parent.resolve() / exe.name)
        if isolation not in iso.ISOLATIONS:
            raise ConfigError(f"unknown isolation {isolation!r}; choose one of: {', '.join(iso.ISOLATIONS)}")
        problem = iso.bwrap_problem() if isolation != "none" else None
        if isolation == "bwrap" and problem:
            raise ConfigError(f"the process sandbox cannot isolate jobs on this machine: {problem}; "
                              f"{iso.HOW_TO_ISOLATE}")
        self.isolated = isolation != "none" and problem is None
        if isolation == "auto" and problem:
            log.warning("the process sandbox runs jobs unisolated: %s; %s", problem, iso.HOW_TO_ISOLATE)
        self.pids_limit = pids_limit
        self._cgroups = cgroup_base()
        if self._cgroups is not None:
            sweep(self._cgroups)  # what a killed campaign left

    @property
    def isolation(self) -> str:
        return "process+bwrap" if self.isolated else "none"

    def close(self) -> None:
        """Nothing outlives a job here: run() removes each job's pids cgroup (killing what is left
        in it) before it returns, and __init__ sweeps what dead campaigns left."""

    def run(self, job: Job, on_event: EventSink | None = None) -> JobResult:
        inp, out, log_path = fresh_workdir(job)
        hashes, links = _lay_out_input(job, inp)
        out.mkdir()
        subst = {PYTHON: self.python, INPUT: str(inp), OUTPUT: str(out)}
        command = [substitute(arg, subst) for arg in job.command]
        lim = job.limits
        if self.isolated:
            command = iso.argv(self.python, inp, out, links.values(), lim.gpus, lim.memory_mb // 4) + command
        cap = PidsCap(self.pids_limit, self._cgroups)
        try:
            return self._run(job, on_event, command, inp, out, log_path, hashes, links, cap)
        finally:
            cap.close()  # every process the job made, wherever it went

    def _run(self, job: Job, on_event: EventSink | None, command: list[str], inp: Path, out: Path, log_path: Path,
             hashes: dict[str, str], links: dict[str, str], cap: PidsCap) -> JobResult:
        lim = job.limits
        with open(log_path, "wb") as log_file:
            stream = Stream(log_file, lim.output_bytes, on_event, job.name)
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    command, cwd=out, env=_env_for(job, out, self.isolated), stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_preexec(lim, os.getpid(), cap), close_fds=True,
                )
            except (OSError, subprocess.SubprocessError) as e:  # the latter: our set-up in the child failed
                log_file.write(f"[archlab] cannot start {command!r}: {e}\n".encode())
                return JobResult("crash", f"cannot start job: {e}", log_path=log_path,
                                 log_tail=f"cannot start job: {e}")
            timed_out = False
            try:
                timed_out = self._pump(proc, stream, start + lim.wall_time_s)
            finally:
                _kill_group(proc.pid)  # stragglers, or everything if we are interrupted
                proc.wait()
            wall_s = time.monotonic() - start
            stream.close()

        tail = stream.tail.decode("utf-8", errors="replace")
        code = proc.returncode
        if self.isolated and code is not None and code > 128:
            code = 128 - code  # bwrap reports a child killed by signal n as exit 128+n
        status, reason, result = classify(code, timed_out, tail, out / "result.json", lim)
        if (what := _tampered(inp, hashes, links) or linked_output(out)) is not None:
            status, reason = "integrity", what  # a tampered run proves nothing
        elif status != "timeout" and (path := touched_input(f"{reason}\n{tail}", str(inp))):
            status, reason = "integrity", f"the job tried to write to its read-only input ({path})" + (
                f": {reason}" if reason else "")
        return JobResult(
            status=status, reason=reason, exit_code=code, result=result,
            log_path=log_path, log_tail=tail[-TAIL_CHARS:], wall_s=round(wall_s, 3),
            truncated=stream.truncated,
        )

    @staticmethod
    def _pump(proc: subprocess.Popen, stream: Stream, deadline: float) -> bool:
        """Read until EOF; kill the group at the deadline. True if it timed out."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        exited_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                if now >= deadline and exited_at is None:
                    _kill_group(proc.pid)
                    return True
                if exited_at is not None and now - exited_at > DRAIN_AFTER_EXIT_S:
                    return False  # something outside the group holds the pipe
                if sel.select(timeout=min(max(deadline - now, 0.0), 0.2)):
                    try:
                        chunk = os.read(fd, CHUNK)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        return False
                    stream.feed(chunk)
                elif exited_at is None and proc.poll() is not None:
                    exited_at = time.monotonic()
                    _kill_group(proc.pid)  # grandchildren holding the pipe open
        finally:
            sel.close()
            proc.stdout.close()

