"""The ray sandbox on a real local cluster: jobs as Ray tasks run by the process (or
docker) backend on a worker, events live, files shipped back, dead workers retried."""
from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from archlab.errors import ConfigError
from archlab.sandbox import get_backend
from archlab.sandbox.base import Job, Limits

pytest.importorskip("ray")
HARNESS_CMD = ["{python}", "{input}/harness.py", "{input}", "{output}"]


@pytest.fixture(scope="module")
def ray_backend():
    """One local cluster for the module (starting one takes a few seconds)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        from archlab.sandbox.ray import RayBackend

        yield RayBackend()
    finally:
        ray.shutdown()


def make_job(tmp_path: Path, code: str, name: str = "job", **limits) -> Job:
    return Job(name="t", workdir=tmp_path / name, command=HARNESS_CMD,
               files={"harness.py": textwrap.dedent(code), "spec.json": '{"seed": 1}'},
               limits=Limits(**{"wall_time_s": 30.0, "memory_mb": 512, **limits}))


def test_job_runs_on_a_worker_and_events_arrive_live(ray_backend, tmp_path):
    job = make_job(tmp_path, """
        import json, os, sys, time
        print(json.dumps({"event": "progress", "step": 0, "t": time.time()}), flush=True)
        time.sleep(1.5)
        print(json.dumps({"event": "metric", "loss": 0.5}), flush=True)
        json.dump({"status": "ok", "pid": os.getppid()}, open(sys.argv[2] + "/result.json", "w"))
    """)
    seen: list[tuple[float, dict]] = []
    res = ray_backend.run(job, on_event=lambda e: seen.append((time.time(), e)))
    done = time.time()
    assert res.status == "ok", (res.reason, res.log_tail)
    kinds = [e["event"] for _, e in seen]
    assert kinds == ["dispatch", "progress", "metric"]
    dispatch = seen[0][1]
    assert dispatch["attempt"] == 1 and dispatch["pid"] != os.getpid() and dispatch["gpus"] == []
    assert done - seen[1][0] > 1.0, "progress arrived only at the end, not live"
    from archlab.sandbox.isolation import bwrap_problem

    # The harness is a child of the Ray worker; inside bubblewrap the worker is invisible and its
    # parent is the sandbox's own init.
    assert res.result["pid"] == (1 if bwrap_problem() is None else dispatch["pid"])
    assert res.log_path == (tmp_path / "job" / "log").resolve() and "progress" in res.log_path.read_text()


def test_files_travel_when_workers_do_not_share_the_filesystem(tmp_path):
    from archlab.sandbox.ray import RayBackend

    table = tmp_path / "table.json"
    table.write_text('{"acc": 0.75}')
    job = make_job(tmp_path, """
        import json, os, sys
        inp, out = sys.argv[1], sys.argv[2]
        os.makedirs(out + "/curves")
        open(out + "/curves/loss.csv", "w").write("step,loss\\n0,1.0\\n")
        json.dump({"status": "ok", "acc": json.load(open(inp + "/table.json"))["acc"], "input": inp},
                  open(out + "/result.json", "w"))
    """)
    job.data = {"table.json": table}
    res = RayBackend(shared_fs=False).run(job)
    assert res.status == "ok", (res.reason, res.log_tail)
    assert res.result["acc"] == 0.75
    assert not res.result["input"].startswith(str(tmp_path))  # it ran in the worker's own dir
    workdir = tmp_path / "job"
    assert (workdir / "output" / "curves" / "loss.csv").read_text().startswith("step,loss")
    assert res.log_path == workdir.resolve() / "log" and res.log_path.exists()


def test_shipped_output_cannot_plant_links_outside(tmp_path):
    from archlab.sandbox.ray import RayBackend

    res = RayBackend(shared_fs=False).run(make_job(tmp_path, """
        import os, sys
        os.symlink("/etc/passwd", sys.argv[2] + "/passwd")
        open(sys.argv[2] + "/result.json", "w").write('{"status": "ok"}')
    """))
    assert res.status == "integrity" and "cannot be unpacked safely" in res.reason
    assert not (tmp_path / "job" / "output" / "passwd").is_symlink()


def _killer(times: int):
    """An event sink that SIGKILLs the Ray worker of the first `times` attempts."""
    seen: list[dict] = []

    def sink(event):
        seen.append(event)
        if event["event"] == "dispatch" and event["attempt"] <= times:
            os.kill(event["pid"], signal.SIGKILL)
    return sink, seen


@pytest.mark.slow
def test_a_dead_worker_is_retried_once(ray_backend, tmp_path):
    job = make_job(tmp_path, """
        import json, sys, time
        time.sleep(2)
        json.dump({"status": "ok"}, open(sys.argv[2] + "/result.json", "w"))
    """)
    sink, seen = _killer(1)
    res = ray_backend.run(job, on_event=sink)
    assert res.status == "ok", (res.reason, res.log_tail)
    assert [(e["event"], e["attempt"]) for e in seen if e["event"] in ("dispatch", "retry")] == [
        ("dispatch", 1), ("retry", 1), ("dispatch", 2)]
    sink, seen = _killer(2)
    res = ray_backend.run(job, on_event=sink)
    assert res.status == "crash"
    assert "ray worker died" in res.reason and "gave up after 2 attempts" in res.reason


def test_nb201_jobs_run_under_ray(ray_backend, tmp_path, nb201_table):
    from conftest import synthetic_accuracy

    from archlab.tasks.nb201 import NB201Task

    task = NB201Task({"table": str(nb201_table)})
    task.prepare(tmp_path / "campaign")
    seed = task.seeds()[1]
    check = ray_backend.run(task.check_job(seed.code, tmp_path / "check", 1))
    assert check.status == "ok", (check.reason, check.log_tail)
    train = ray_backend.run(task.train_job(seed.code, tmp_path / "train", 1))
    assert train.status == "ok", (train.reason, train.log_tail)
    assert train.result["metrics"]["val_acc"] == synthetic_accuracy(check.result["arch"])[0]
    bad = ray_backend.run(task.check_job("def cell(x0, ops):\n    return x0\n", tmp_path / "bad", 1))
    assert bad.status == "integrity" and "returns x0 unchanged" in bad.reason


def test_nb201_jobs_run_under_ray_with_docker_inside(ray_backend, tmp_path, nb201_table):
    from conftest import docker_client

    docker_client()  # skips, saying why, without an engine
    from archlab.sandbox.image import find_image, image_tag
    if find_image(docker_client(), image_tag()) is None:
        pytest.skip("the runner image is not built (test_sandbox_docker.py builds it)")
    from archlab.sandbox.ray import RayBackend
    from archlab.tasks.nb201 import NB201Task

    backend = RayBackend(inner="docker")
    task = NB201Task({"table": str(nb201_table)})
    task.prepare(tmp_path / "campaign")
    seed = task.seeds()[0]
    assert backend.run(task.check_job(seed.code, tmp_path / "check", 1)).status == "ok"
    events = []
    train = backend.run(task.train_job(seed.code, tmp_path / "train", 1), on_event=events.append)
    assert train.status == "ok", (train.reason, train.log_tail)
    assert [e["event"] for e in events] == ["dispatch", "progress", "progress", "metric"]
    hostile = "import os\nos.system('echo pwned > /job/input/harness.py')\n" + seed.code
    res = backend.run(task.check_job(hostile, tmp_path / "hostile", 1))
    assert res.status == "integrity" and "/job/input/harness.py" in res.reason, (res.reason, res.log_tail)
    assert ((tmp_path / "hostile" / "input" / "harness.py").read_text()
            == task.check_job("", tmp_path, 1).files["harness.py"])


def test_get_backend_ray(ray_backend):
    from archlab.sandbox.ray import RayBackend

    assert isinstance(get_backend("ray"), RayBackend)
    with pytest.raises(ConfigError, match="process, docker"):
        get_backend("ray", inner="kubernetes")
