"""The ray backend: each job is a Ray task, run on a worker by the process or
docker backend there.

The Job travels whole (its files inside it). On the driver's own node the
worker uses the job's workdir as it is (same path); on another node it works
under its own temp dir, gets the job's data files through the object store,
and ships back the log and output/ (up to SHIP_MAX bytes), which land in the
job's workdir here, so the result looks the same either way. Workers need
archlab (same version) and, for inner="docker", an engine with the runner image.

Events stream back live through a small relay actor the driver polls. The task
asks Ray for num_cpus and num_gpus; on the worker the job's GPU ids become the
ones Ray assigned. A worker (or node) that dies is retried once, then the job
is a "crash" whose reason names the death. Without an address a local cluster
is started (RAY_AUTH_MODE=disabled, no dashboard).
"""
from __future__ import annotations

import io
import logging
import os
import socket
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from archlab.errors import ConfigError
from archlab.sandbox.base import Backend, EventSink, Job, JobResult
from archlab.sandbox.workdir import fresh_workdir, remove_tree

log = logging.getLogger(__name__)

POLL_S = 0.25
RETURN_GRACE_S = 120.0     # past the wall-time limit, a running task that has not returned is cancelled
SHIP_MAX = 64 << 20        # output/ shipped back from another node, at most (tar bytes)
MAX_PENDING = 10_000       # events held per job in the relay between polls
INNERS = ("process", "docker")


class _Relay:
    """Holds each job's events until the driver takes them (one actor per backend)."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.dropped: dict[str, int] = {}

    def put(self, key: str, event: dict[str, Any]) -> None:
        pending = self.events.setdefault(key, [])
        if len(pending) < MAX_PENDING:
            pending.append(event)
        else:
            self.dropped[key] = self.dropped.get(key, 0) + 1

    def take(self, key: str) -> list[dict[str, Any]]:
        return self.events.pop(key, [])


_inner_backends: dict[tuple[str, tuple[tuple[str, Any], ...]], Backend] = {}


def _inner(name: str, options: dict[str, Any]) -> Backend:
    """One inner backend per worker process and options (docker's costs a few engine calls)."""
    from archlab.sandbox import get_backend

    key = (name, tuple(sorted(options.items())))
    if key not in _inner_backends:
        _inner_backends[key] = get_backend(name, **options)
    return _inner_backends[key]


def _ship(out: Path) -> bytes | None:
    """output/ as a tar.gz, or None when it is over SHIP_MAX (checked before packing)."""
    if sum(p.lstat().st_size for p in out.rglob("*")) > SHIP_MAX:
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(out, arcname=".")
    return buf.getvalue() if buf.tell() <= SHIP_MAX else None


def _work(job: Job, inner: str, options: dict[str, Any], relay: Any, key: str, attempt: int,
          driver_node: str, shared_fs: bool | None, data_refs: dict[str, Any]) -> dict[str, Any]:
    """Runs on the worker: the job by the inner backend; returns the result (and files if remote)."""
    ctx = ray.get_runtime_context()
    local = shared_fs if shared_fs is not None else ctx.get_node_id() == driver_node
    gpus = [int(g) for g in ray.get_gpu_ids()][: len(job.limits.gpus)]
    last = [relay.put.remote(key, {"event": "dispatch", "host": socket.gethostname(), "node": ctx.get_node_id(),
                                   "pid": os.getpid(), "attempt": attempt, "gpus": gpus})]
    job = replace(job, limits=replace(job.limits, gpus=gpus))
    scratch = None
    if not local:
        scratch = Path(tempfile.gettempdir()) / "archlab-ray" / key
        remove_tree(scratch)
        data = {}
        for name, path in job.data.items():
            if Path(path).exists():
                data[name] = path
            elif name in data_refs:
                data[name] = scratch / "data" / name
                data[name].parent.mkdir(parents=True, exist_ok=True)
                data[name].write_bytes(ray.get(data_refs[name]))
            else:
                raise FileNotFoundError(f"job data {name!r} ({path}) is not on node {socket.gethostname()}")
        job = replace(job, workdir=scratch / "job", data=data)

    def forward(event: dict[str, Any]) -> None:
        last[0] = relay.put.remote(key, event)

    try:
        result = _inner(inner, options).run(job, forward)
        ray.get(last[0])  # the actor runs our calls in order: every event is in before we return
        reply: dict[str, Any] = {"result": result}
        if scratch is not None:
            log_path = result.log_path
            reply["log"] = log_path.read_bytes() if log_path and log_path.is_file() else b""
            reply["output"] = _ship(Path(job.workdir) / "output")
        return reply
    finally:
        if scratch is not None:
            remove_tree(scratch)


def _land(job: Job, reply: dict[str, Any]) -> JobResult:
    """Write what a remote worker shipped into the job's own workdir."""
    result: JobResult = reply["result"]
    if "log" not in reply:
        return result
    _, out, log_path = fresh_workdir(job)
    log_path.write_bytes(reply["log"])
    out.mkdir()
    if reply["output"] is None:
        result.reason += f" [output/ exceeded {SHIP_MAX} bytes and stayed on the worker]"
    else:
        try:
            with tarfile.open(fileobj=io.BytesIO(reply["output"]), mode="r:gz") as tar:
                tar.extractall(out, filter="data")  # refuses links and paths leading outside
        except tarfile.TarError as e:
            result.status, result.reason = "integrity", f"output/ from the worker cannot be unpacked safely: {e}"
    result.log_path = log_path
    return result


class RayBackend(Backend):
    name = "ray"

    def __init__(self, address: str | None = None, inner: str = "process", num_cpus: int | None = None,
                 shared_fs: bool | None = None, retries: int = 1, **inner_options: Any):
        """address: a Ray cluster ("auto", "ray://host:10001", ...); None starts a local one with
        num_cpus. inner: the backend on the worker; inner_options go to it (image, runtime, user for
        docker). shared_fs: True if workers see the driver's paths, False to always ship files,
        None to decide by node."""
        if inner not in INNERS:
            raise ConfigError(f"ray's inner sandbox must be one of {', '.join(INNERS)}, not {inner!r}")
        self.address, self.inner, self.num_cpus = address, inner, num_cpus
        self.shared_fs, self.retries, self.inner_options = shared_fs, retries, inner_options
        self._lock = threading.Lock()
        self._started = False
        self._relay: Any = None
        self._task: Any = None
        self._data_refs: dict[tuple[str, int, int], Any] = {}
        self._connect()

    def _connect(self) -> None:
        with self._lock:
            if not ray.is_initialized():
                try:
                    if self.address:
                        ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
                    else:
                        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                        ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                                 logging_level=logging.WARNING, log_to_driver=False)
                except Exception as e:  # noqa: BLE001 - ray raises many kinds; the user needs one line
                    where = f"the ray cluster at {self.address}" if self.address else "a local ray cluster"
                    raise ConfigError(f"cannot start or reach {where}: {type(e).__name__}: {e}") from e
                self._started = True
            self._task = ray.remote(_work)
            self._node = ray.get_runtime_context().get_node_id()

    @property
    def relay(self) -> Any:
        """The event relay actor, started on first use."""
        with self._lock:
            if self._relay is None:
                self._relay = ray.remote(num_cpus=0)(_Relay).remote()
            return self._relay

    def close(self) -> None:
        """Shut the local cluster down if this backend started it."""
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def _data(self, job: Job) -> dict[str, Any]:
        """Object refs of the job's data files, put once per file version (for other nodes)."""
        if self.shared_fs:
            return {}
        refs = {}
        for name, path in job.data.items():
            p = Path(path).resolve()
            if p.is_file():
                st = p.stat()
                key = (str(p), st.st_mtime_ns, st.st_size)
                with self._lock:
                    if key not in self._data_refs:
                        self._data_refs[key] = ray.put(p.read_bytes())
                    refs[name] = self._data_refs[key]
        return refs

    def run(self, job: Job, on_event: EventSink | None = None) -> JobResult:
        total = ray.cluster_resources()
        cpus = min(job.limits.cpus, total.get("CPU", 1.0))
        n_gpus = len(job.limits.gpus)
        if n_gpus > total.get("GPU", 0):
            return JobResult("crash", f"the job needs {n_gpus} GPU(s); the ray cluster has {total.get('GPU', 0):g}")
        refs = self._data(job)
        why = ""
        for attempt in range(1, self.retries + 2):
            try:
                return self._attempt(job, on_event, attempt, cpus, n_gpus, refs)
            except ray.exceptions.RayTaskError as e:  # raised by our worker code, not the job
                return JobResult("crash", f"the ray task failed: {type(e.cause).__name__}: {e.cause}",
                                 log_tail=str(e)[-4000:])
            except ray.exceptions.RayError as e:
                first = (str(e).strip().splitlines() or [""])[0][:300]
                why = f"ray worker died ({type(e).__name__}): {first}"
                if isinstance(e, ray.exceptions.RayActorError):
                    with self._lock:
                        self._relay = None  # the relay itself died with its node: start a new one
                log.warning("job %s attempt %d: %s", job.name, attempt, why)
                _emit(on_event, {"event": "retry" if attempt <= self.retries else "failed",
                                 "attempt": attempt, "reason": why})
        return JobResult("crash", why + f"; gave up after {self.retries + 1} attempts")

    def _attempt(self, job: Job, on_event: EventSink | None, attempt: int, cpus: float, n_gpus: int,
                 refs: dict[str, Any]) -> JobResult:
        key = uuid.uuid4().hex
        ref = self._task.options(num_cpus=cpus, num_gpus=n_gpus, max_retries=0, name=f"archlab:{job.name}").remote(
            job, self.inner, self.inner_options, self.relay, key, attempt, self._node, self.shared_fs, refs)
        try:
            return self._follow(job, on_event, ref, key)
        finally:
            self.relay.take.remote(key)  # a dead attempt's leftovers

    def _follow(self, job: Job, on_event: EventSink | None, ref: Any, key: str) -> JobResult:
        started: float | None = None
        while True:
            done, _ = ray.wait([ref], timeout=POLL_S)
            for event in ray.get(self.relay.take.remote(key)):
                if started is None and event.get("event") == "dispatch":
                    started = time.monotonic()
                _emit(on_event, event)
            if done:
                break
            if started is not None and time.monotonic() - started > job.limits.wall_time_s + RETURN_GRACE_S:
                ray.cancel(ref, force=True)
                return JobResult("timeout", f"the ray task did not return within {RETURN_GRACE_S:g} s "
                                 f"of the {job.limits.wall_time_s:g} s wall time limit")
        return _land(job, ray.get(ref))


def _emit(on_event: EventSink | None, event: dict[str, Any]) -> None:
    if on_event is None:
        return
    try:
        on_event(event)
    except Exception:  # noqa: BLE001 - a broken sink must not kill the job
        log.exception("on_event failed")
