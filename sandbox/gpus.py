"""GPU slots: which GPUs this machine has, and which ones each running job gets.

`detect_gpus()` reads a config list, else CUDA_VISIBLE_DEVICES, else
nvidia-smi. `GpuSlots` hands out device ids to jobs running in parallel:
each GPU takes up to `jobs_per_gpu` jobs; a job needing n GPUs gets n distinct
ones, the least loaded first (so K jobs on K GPUs get one each, and more jobs
than GPUs pack only when jobs_per_gpu > 1). Waiters are served first come,
first served, so a job wanting several GPUs is not starved by small ones.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


def _nvidia_smi() -> list[tuple[int, str]]:
    """[(index, uuid)] from nvidia-smi; [] when it is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        index, _, uuid = line.partition(",")
        if index.strip().isdigit():
            gpus.append((int(index), uuid.strip()))
    return gpus


def detect_gpus(configured: list[int] | None = None) -> list[int]:
    """The GPU ids jobs may use: `configured` if given, else CUDA_VISIBLE_DEVICES (ids, or
    GPU UUIDs mapped through nvidia-smi; empty or -1 means none), else every GPU nvidia-smi lists."""
    if configured:
        return list(dict.fromkeys(int(g) for g in configured))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids: list[int] = []
        by_uuid: dict[str, int] | None = None
        for item in (v.strip() for v in visible.split(",")):
            if not item:
                continue
            if item.lstrip("-").isdigit():
                if int(item) < 0:
                    break  # CUDA stops at the first invalid id
                ids.append(int(item))
                continue
            if by_uuid is None:
                by_uuid = {uuid: index for index, uuid in _nvidia_smi()}
            match = [i for uuid, i in by_uuid.items() if uuid.startswith(item)]
            if len(match) != 1:
                raise ValueError(f"CUDA_VISIBLE_DEVICES entry {item!r} matches no single GPU in nvidia-smi")
            ids.append(match[0])
        return list(dict.fromkeys(ids))
    return [index for index, _ in _nvidia_smi()]


class GpuSlots:
    """Thread-safe GPU assignment for parallel jobs."""

    def __init__(self, gpus: list[int], jobs_per_gpu: int = 1):
        if jobs_per_gpu < 1:
            raise ValueError("jobs_per_gpu must be at least 1")
        self.gpus = list(dict.fromkeys(gpus))
        self.jobs_per_gpu = jobs_per_gpu
        self._load = {g: 0 for g in self.gpus}
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @property
    def capacity(self) -> int:
        """How many one-GPU jobs can run at once."""
        return len(self.gpus) * self.jobs_per_gpu

    def load(self) -> dict[int, int]:
        """Jobs now running on each GPU."""
        with self._cond:
            return dict(self._load)

    def _pick(self, n: int) -> list[int] | None:
        free = [g for g in self.gpus if self._load[g] < self.jobs_per_gpu]
        if len(free) < n:
            return None
        return sorted(free, key=lambda g: (self._load[g], self.gpus.index(g)))[:n]

    @contextmanager
    def acquire(self, n_gpus: int = 1, timeout: float | None = None) -> Iterator[list[int]]:
        """Block until `n_gpus` distinct GPUs have a free slot; yield their ids; free them on exit.
        n_gpus=0 yields [] at once. TimeoutError after `timeout` seconds, if given."""
        if n_gpus < 0 or n_gpus > len(self.gpus):
            raise ValueError(f"a job asks for {n_gpus} GPUs; this machine offers {len(self.gpus)} ({self.gpus})")
        if n_gpus == 0:
            yield []
            return
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                ok = self._cond.wait_for(lambda: self._queue[0] is ticket and self._pick(n_gpus) is not None,
                                         timeout=timeout)
                if not ok:
                    raise TimeoutError(f"no {n_gpus} free GPU(s) within {timeout} s (load {self._load})")
                picked = self._pick(n_gpus)
                assert picked is not None
                for g in picked:
                    self._load[g] += 1
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next in line may fit now
        try:
            yield picked
        finally:
            with self._cond:
                for g in picked:
                    self._load[g] -= 1
                self._cond.notify_all()
