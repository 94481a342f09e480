"""GPU discovery and slots: parallel jobs get distinct GPUs, pack only when allowed, wait their turn."""
from __future__ import annotations

import threading
import time

import pytest

from archlab.sandbox import gpus as gpus_mod
from archlab.sandbox.gpus import GpuSlots, detect_gpus


def test_detect_prefers_config_then_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert detect_gpus([1, 0, 1]) == [1, 0]
    assert detect_gpus() == [2, 3]
    for hidden in ("", "-1", " "):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert detect_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,3")  # CUDA ignores ids after an invalid one
    assert detect_gpus() == [1]


def test_detect_maps_uuids_and_falls_back_to_nvidia_smi(monkeypatch):
    smi = [(0, "GPU-aaaa-1111"), (1, "GPU-bbbb-2222")]
    monkeypatch.setattr(gpus_mod, "_nvidia_smi", lambda: smi)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,0")
    assert detect_gpus() == [1, 0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-zzzz")
    with pytest.raises(ValueError, match="GPU-zzzz"):
        detect_gpus()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert detect_gpus() == [0, 1]


def test_detect_on_this_machine_agrees_with_nvidia_smi(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == [i for i, _ in gpus_mod._nvidia_smi()]  # [] without a GPU


def test_jobs_spread_over_gpus_before_packing():
    slots = GpuSlots([0, 1], jobs_per_gpu=2)
    assert slots.capacity == 4
    with slots.acquire(1) as a, slots.acquire(1) as b:
        assert sorted(a + b) == [0, 1]
        with slots.acquire(1) as c, slots.acquire(1) as d:
            assert sorted(c + d) == [0, 1]
            assert slots.load() == {0: 2, 1: 2}
    assert slots.load() == {0: 0, 1: 0}
    with slots.acquire(2) as both:
        assert sorted(both) == [0, 1]  # distinct GPUs for one job
    with slots.acquire(0) as none:
        assert none == []


def test_more_jobs_than_slots_wait_until_one_is_free():
    slots = GpuSlots([5], jobs_per_gpu=1)
    got: list[tuple[float, list[int]]] = []
    start = time.monotonic()

    def job():
        with slots.acquire(1) as ids:
            got.append((time.monotonic() - start, ids))
            time.sleep(0.2)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert [ids for _, ids in got] == [[5], [5], [5]]
    times = sorted(t for t, _ in got)
    assert times[1] - times[0] >= 0.19 and times[2] - times[1] >= 0.19  # one at a time
    with pytest.raises(TimeoutError):
        with slots.acquire(1), slots.acquire(1, timeout=0.1):
            pass


def test_a_big_job_is_not_starved_by_small_ones():
    slots = GpuSlots([0, 1], jobs_per_gpu=1)
    order: list[str] = []
    hold = slots.acquire(1)
    hold.__enter__()

    def run(name, n, delay):
        time.sleep(delay)
        with slots.acquire(n):
            order.append(name)
            time.sleep(0.05)

    big = threading.Thread(target=run, args=("big", 2, 0.0))
    small = threading.Thread(target=run, args=("small", 1, 0.1))  # would fit on GPU 1 now, but big came first
    big.start()
    small.start()
    time.sleep(0.3)
    assert order == []
    hold.__exit__(None, None, None)
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]


def test_bad_requests():
    with pytest.raises(ValueError, match="jobs_per_gpu"):
        GpuSlots([0], jobs_per_gpu=0)
    slots = GpuSlots([0, 1])
    with pytest.raises(ValueError, match="offers 2"):
        with slots.acquire(3):
            pass
