"""The docker backend: one throwaway container per job.

Each container has no network (loopback only), a read-only root filesystem,
the job's input/ bind-mounted read-only at /job/input (data files as their own
read-only binds inside it), one writable /job/output, a tmpfs /tmp, memory
(no swap), CPU and pids limits, every capability dropped, no-new-privileges,
a non-root user, no environment but the allow-list below, GPUs by device
request with explicit ids, and optionally another runtime (runsc). Its
stdout and stderr are one stream (merged by sh inside, so order is kept).

A watchdog kills the container (SIGKILL to its init; the pid namespace goes
with it) at the wall-time limit, whatever the process does with signals. If
the campaign itself dies, `timeout -s KILL` inside ends the job a little
later, and the next job started on this host removes containers whose owner
process is gone (sweep()). The container is always removed. OOM is read from
the engine (OOMKilled), not guessed from the exit code.

A job whose log shows a failed write to its read-only input (EROFS/EACCES on
/job/input, from Python or a shell) is an integrity failure even if it carried
on, like one whose input changed. The engine comes from DOCKER_HOST or the
default socket and must see this machine's paths (the binds are host paths).

Measured here (2 shared cores, cgroup v1): ~0.38 s per job on top of the job
itself, of which ~0.24 s is the engine starting the container (0.1 s of that
for the empty network namespace).
"""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import docker
import requests
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from archlab.errors import ConfigError
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
from archlab.sandbox.image import client, find_image, image_tag
from archlab.sandbox.outcome import TAIL_CHARS, Stream, classify, last_line
from archlab.sandbox.workdir import fresh_workdir, safe_relpath, substitute

log = logging.getLogger(__name__)

ROOT = "/job"
C_INPUT, C_OUTPUT = f"{ROOT}/input", f"{ROOT}/output"
NOBODY = "65534:65534"
LABEL = "archlab.sandbox"
BACKSTOP_S = 30               # the in-container timeout fires this long after the watchdog
EXIT_WAIT_S = 30              # how long to wait for the engine to report an exited container
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def _env(job: Job) -> dict[str, str]:
    """Allow-list only; nothing from the host's environment reaches the job."""
    threads = str(max(1, int(job.limits.cpus)))
    env = {
        "HOME": C_OUTPUT, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
        # The engine exposes only the requested GPUs, renumbered from 0.
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(job.limits.gpus))),
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1",
    }
    env.update(job.env)
    return env


def _lay_out(job: Job, inp: Path) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Write files (read-only) and a mount point per data path; return ({file: sha256},
    {data name: (host path, placeholder kind)})."""
    inp.mkdir(parents=True)
    hashes: dict[str, str] = {}
    for name, content in job.files.items():
        rel = safe_relpath(name)
        data = content.encode() if isinstance(content, str) else bytes(content)
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        (inp / rel).write_bytes(data)
        (inp / rel).chmod(0o444)
        hashes[rel.as_posix()] = hashlib.sha256(data).hexdigest()
    mounts: dict[str, tuple[str, str]] = {}
    for name, target in job.data.items():
        rel, src = safe_relpath(name), Path(target).resolve()
        if not src.exists():
            raise FileNotFoundError(f"job data {name!r}: {src} does not exist")
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            (inp / rel).mkdir()
        else:
            (inp / rel).touch(0o444)
        mounts[rel.as_posix()] = (str(src), "dir" if src.is_dir() else "file")
    for root, dirs, _ in os.walk(inp, topdown=False):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o555)
    inp.chmod(0o555)
    return hashes, mounts


def _tampered(inp: Path, hashes: dict[str, str], mounts: dict[str, tuple[str, str]]) -> str | None:
    """Defence in depth (input/ is mounted read-only): the first changed, missing or added entry."""
    for rel, digest in hashes.items():
        path = inp / rel
        if path.is_symlink() or not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return f"input/{rel} was modified or replaced"
    for rel, (_, kind) in mounts.items():
        path = inp / rel
        if path.is_symlink() or not (path.is_dir() if kind == "dir" else path.is_file() and not path.stat().st_size):
            return f"input/{rel} (data mount point) was modified or replaced"
    known = set(hashes) | set(mounts)
    known |= {p.as_posix() for rel in list(known) for p in Path(rel).parents if p != Path(".")}
    for root, dirs, files in os.walk(inp):
        if Path(root).relative_to(inp).as_posix() in mounts:
            dirs[:] = []  # a data directory's mount point, empty on the host
            continue
        for name in dirs + files:
            rel = Path(root, name).relative_to(inp).as_posix()
            if rel not in known:
                return f"input/{rel} was added"
    return None


def _ids(user: str) -> tuple[int, int] | None:
    parts = user.split(":")
    try:
        return int(parts[0]), int(parts[1] if len(parts) > 1 else parts[0])
    except ValueError:
        return None  # a name: the image decides the ids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Ended(NamedTuple):
    """How the container ended, as the engine and its output stream tell it."""

    code: int | None  # the engine's exit status (128+n for a signal)
    killed: bool      # by the wall-time watchdog
    oom: bool         # the engine's OOMKilled
    tail: str
    truncated: bool
    wall_s: float


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, image: str | None = None, runtime: str | None = None, user: str | None = None,
                 pids_limit: int = 256, shm_mb: int = 64, python: str = "python3"):
        self.client = client()
        self.image = image or image_tag()
        if find_image(self.client, self.image) is None:
            raise ConfigError(f"the runner image {self.image} is not built; run `archlab sandbox build` "
                              "(add --offline where no image registry is reachable)")
        self.runtime, self.pids_limit, self.shm_mb, self.python = runtime, pids_limit, shm_mb, python
        # Root on the host runs jobs as nobody; anyone else as themselves (their files stay theirs).
        self.user = user or (NOBODY if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}")
        self.host = socket.gethostname()
        self.sweep()

    def sweep(self) -> int:
        """Remove (killing if need be) containers whose campaign process on this host is gone,
        e.g. after kill -9 or a dead Ray worker; returns how many. One engine call when none."""
        gone = 0
        for c in self.client.api.containers(all=True, filters={"label": [LABEL, f"archlab.host={self.host}"]}):
            pid = int((c.get("Labels") or {}).get("archlab.owner", "0") or 0)
            if pid and not _alive(pid):
                try:
                    self.client.api.remove_container(c["Id"], force=True)
                    gone += 1
                except Exception as e:  # noqa: BLE001 - another backend may be removing it too
                    log.debug("sweep: %s: %s", c["Id"][:12], e)
        return gone

    def _output_dir(self, out: Path) -> None:
        out.mkdir()
        ids = _ids(self.user)
        if ids is None or ids == (os.getuid(), os.getgid()):
            return
        if os.geteuid() == 0:
            os.chown(out, *ids)
        else:
            out.chmod(0o1777)  # a foreign uid must write here; only this job's dir is opened

    def _create(self, job: Job, inp: Path, out: Path, mounts: dict[str, tuple[str, str]]) -> Any:
        lim = job.limits
        subst = {PYTHON: self.python, INPUT: C_INPUT, OUTPUT: C_OUTPUT}
        command = [substitute(arg, subst) for arg in job.command]
        backstop = str(int(lim.wall_time_s + BACKSTOP_S))
        binds = [Mount(C_INPUT, str(inp), type="bind", read_only=True),
                 Mount(C_OUTPUT, str(out), type="bind", read_only=False)]
        binds += [Mount(f"{C_INPUT}/{rel}", src, type="bind", read_only=True) for rel, (src, _) in mounts.items()]
        gpus = [DeviceRequest(device_ids=[str(g) for g in lim.gpus], capabilities=[["gpu"]])] if lim.gpus else []
        mem = f"{max(lim.memory_mb, 6)}m"
        return self.client.containers.create(
            self.image, ["/bin/sh", "-c", 'exec timeout -s KILL "$0" "$@" 2>&1', backstop, *command],
            entrypoint=[], environment=_env(job), working_dir=C_OUTPUT, user=self.user,
            network_mode="none", read_only=True, mounts=binds,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={max(16, lim.memory_mb // 4)}m"}, shm_size=f"{self.shm_mb}m",
            mem_limit=mem, memswap_limit=mem, nano_cpus=int(min(lim.cpus, os.cpu_count() or 1) * 1e9),
            pids_limit=self.pids_limit,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], ulimits=[Ulimit(name="core", soft=0, hard=0)],
            device_requests=gpus, runtime=self.runtime, init=True, stdin_open=False, tty=False,
            log_config=LogConfig(type="none"),  # we read the attach stream; no copy on the engine's disk
            labels={LABEL: "1", "archlab.job": job.name, "archlab.host": self.host, "archlab.owner": str(os.getpid())},
        )

    def close(self) -> None:
        """Close the engine connection (this backend's own client; containers are removed per job)."""
        self.client.close()

    def run(self, job: Job, on_event: EventSink | None = None) -> JobResult:
        inp, out, log_path = fresh_workdir(job)
        try:
            hashes, mounts = _lay_out(job, inp)
        except FileNotFoundError as e:  # a data path that is gone: the job cannot start
            log_path.write_text(f"[archlab] {e}\n")
            return JobResult("crash", str(e), log_path=log_path, log_tail=str(e))
        self._output_dir(out)
        lim = job.limits
        try:
            self.sweep()
            container = self._create(job, inp, out, mounts)
        except ENGINE_ERRORS as e:
            log_path.write_text(f"[archlab] cannot create the container: {e}\n")
            return JobResult("crash", f"cannot create the container: {e}", log_path=log_path, log_tail=str(e))
        ended = self._execute(container, job, log_path, on_event)
        if isinstance(ended, JobResult):
            return ended  # the engine failed while the job ran
        status, reason, result = self._classify(ended.code, ended.killed, ended.oom, ended.tail,
                                                out / "result.json", lim)
        if (what := _tampered(inp, hashes, mounts) or linked_output(out)) is not None:
            status, reason = "integrity", what
        elif status != "timeout" and (path := touched_input(f"{reason}\n{ended.tail}", C_INPUT)):
            status, reason = "integrity", f"the job tried to write to its read-only input ({path})" + (
                f": {reason}" if reason else "")
        return JobResult(status=status, reason=reason, exit_code=ended.code, result=result, log_path=log_path,
                         log_tail=ended.tail[-TAIL_CHARS:], wall_s=round(ended.wall_s, 3), truncated=ended.truncated)

    def _execute(self, container: Any, job: Job, log_path: Path, on_event: EventSink | None) -> _Ended | JobResult:
        """Start the container, stream its output into the log, wait for its exit (a watchdog kills it
        at the wall-time limit) and always remove it; a crash JobResult if the engine fails meanwhile."""
        lim = job.limits
        killed = threading.Event()

        def watchdog() -> None:
            killed.set()
            try:
                container.kill()
            except docker.errors.APIError:
                pass  # it exited meanwhile

        timer = threading.Timer(lim.wall_time_s, watchdog)
        timer.daemon = True
        start = time.monotonic()
        try:
            with open(log_path, "wb") as log_file:
                stream = Stream(log_file, lim.output_bytes, on_event, job.name)
                frames = container.attach(stdout=True, stderr=True, stream=True, logs=False)
                container.start()
                start = time.monotonic()
                timer.start()
                for chunk in frames:
                    stream.feed(chunk)
                stream.close()
                try:
                    code = container.wait(timeout=max(lim.wall_time_s - (time.monotonic() - start), 0) + EXIT_WAIT_S)
                except Exception:  # noqa: BLE001 - the stream ended but the engine did not report an exit
                    watchdog()
                    code = container.wait(timeout=EXIT_WAIT_S)
                wall_s = time.monotonic() - start
                timer.cancel()
                container.reload()
                state = container.attrs.get("State", {})
        except ENGINE_ERRORS as e:
            return JobResult("crash", f"docker engine error: {e}", log_path=log_path, log_tail=str(e),
                             wall_s=round(time.monotonic() - start, 3))
        finally:
            timer.cancel()
            try:
                container.remove(force=True)
            except ENGINE_ERRORS as e:
                log.warning("could not remove container %s: %s", container.short_id, e)
        return _Ended(code=code.get("StatusCode"), killed=killed.is_set(), oom=bool(state.get("OOMKilled")),
                      tail=stream.tail.decode("utf-8", errors="replace"), truncated=stream.truncated, wall_s=wall_s)

    @staticmethod
    def _classify(code: int | None, timed_out: bool, oom: bool, tail: str, result_path: Path,
                  lim: Limits) -> tuple[str, str, dict[str, Any] | None]:
        """The engine knows OOM for sure; a signal death shows as exit 128+n."""
        if timed_out:
            return classify(code, True, tail, result_path, lim)
        if oom:
            result = classify(code, False, tail, result_path, lim)[2]
            line = last_line(tail)
            return "oom", f"out of memory: the container hit its {lim.memory_mb} MB limit" + (
                f" ({line})" if line else ""), result
        sig = code - 128 if code is not None and code > 128 and code - 128 in signal.valid_signals() else 0
        if sig == signal.SIGKILL:  # not OOM, not us: pids limit, the backstop, or `docker kill`
            status, reason, result = classify(1, False, tail, result_path, lim)
            return ("crash", "killed by SIGKILL", result) if status in ("ok", "crash") else (status, reason, result)
        return classify(-sig if sig else code, False, tail, result_path, lim)
