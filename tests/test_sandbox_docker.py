"""The docker sandbox: each case a real container running a throwaway (often hostile)
harness, and nb201's own jobs (the hostile suite, test_hostile.py, runs on docker too).
Skipped, saying why, only where no docker engine is usable; the runner image is built
once if missing (conftest.runner_image, cached by its content-hash tag)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from archlab.errors import ConfigError
from archlab.sandbox import get_backend
from archlab.sandbox.base import Job, Limits

HARNESS_CMD = ["{python}", "{input}/harness.py", "{input}", "{output}"]
SECRETS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="module")
def backend(runner_image):
    from archlab.sandbox.docker import DockerBackend

    return DockerBackend(image=runner_image)


def make_job(tmp_path: Path, code: str, **limits) -> Job:
    return Job(name="t", workdir=tmp_path / "job", command=HARNESS_CMD,
               files={"harness.py": textwrap.dedent(code), "spec.json": '{"seed": 1}'},
               limits=Limits(**{"wall_time_s": 20.0, "memory_mb": 256, **limits}))


def leftovers(backend) -> list:
    return backend.client.containers.list(all=True, filters={"label": f"archlab.owner={os.getpid()}"})


def test_ok_job_is_confined_and_its_container_removed(backend, tmp_path):
    job = make_job(tmp_path, """
        import json, os, socket, sys
        inp, out = sys.argv[1], sys.argv[2]
        for step in range(3):
            print(json.dumps({"event": "progress", "step": step}))
        sys.stderr.write("plain text on stderr\\n")
        status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
        json.dump({"status": "ok", "seed": json.load(open(inp + "/spec.json"))["seed"], "uid": os.getuid(),
                   "cwd": os.getcwd(), "home": os.environ["HOME"], "caps": status["CapEff"].strip(),
                   "nnp": status["NoNewPrivs"].strip(), "ifaces": [n for _, n in socket.if_nameindex()],
                   "root_ro": "ro" in [l.split()[3] for l in open("/proc/mounts") if l.split()[1] == "/"][0]},
                  open(out + "/result.json", "w"))
    """)
    events = []
    res = backend.run(job, on_event=events.append)
    assert res.status == "ok", (res.reason, res.log_tail)
    assert [e["step"] for e in events] == [0, 1, 2]
    r = res.result
    assert r["uid"] != 0 and r["caps"] == "0000000000000000" and r["nnp"] == "1"
    assert r["ifaces"] == ["lo"] and r["root_ro"]
    assert (r["seed"], r["cwd"], r["home"]) == (1, "/job/output", "/job/output")
    assert "plain text on stderr" in res.log_path.read_text() and res.exit_code == 0
    assert leftovers(backend) == []
    assert backend.run(job).status == "ok"  # a rerun in the same workdir (resume) starts clean


def test_host_secrets_are_absent(backend, tmp_path, monkeypatch):
    for key in SECRETS:
        monkeypatch.setenv(key, "secret-value")
    job = make_job(tmp_path, """
        import json, os, sys
        json.dump({"status": "ok", "env": dict(os.environ)}, open(sys.argv[2] + "/result.json", "w"))
    """, cpus=2)
    job.env = {"ARCHLAB_SEED": "7"}
    res = backend.run(job)
    assert res.status == "ok", res.log_tail
    env = res.result["env"]
    assert not set(SECRETS) & set(env) and "secret-value" not in json.dumps(env)
    assert env["OMP_NUM_THREADS"] == "2" and env["ARCHLAB_SEED"] == "7" and env["CUDA_VISIBLE_DEVICES"] == ""


def test_writes_outside_output_fail(backend, tmp_path):
    res = backend.run(make_job(tmp_path, """
        import json, sys
        outcome = {}
        for path in ("/evil", "/etc/passwd", "/usr/lib/evil", "/job/evil", "/job/input/evil",
                     "/job/input/harness.py", "/var/tmp/evil", "/tmp/ok", "/job/output/ok"):
            try:
                open(path, "a").write("x")
                outcome[path] = "written"
            except OSError as e:
                outcome[path] = e.strerror
        json.dump({"status": "ok", "outcome": outcome}, open(sys.argv[2] + "/result.json", "w"))
    """))
    assert res.status == "ok", res.log_tail
    outcome = res.result["outcome"]
    assert outcome.pop("/tmp/ok") == outcome.pop("/job/output/ok") == "written"
    assert all(v in ("Read-only file system", "Permission denied") for v in outcome.values()), outcome
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["input", "log", "output"]
    assert sorted(p.name for p in (tmp_path / "job" / "input").iterdir()) == ["harness.py", "spec.json"]


def test_fork_bomb_is_stopped_by_the_pids_limit(runner_image, tmp_path):
    from archlab.sandbox.docker import DockerBackend

    # The kernel's own counters decide: a count of /proc races with exiting
    # processes (their pid is uncharged from the cgroup before /proc drops it).
    res = DockerBackend(image=runner_image, pids_limit=48).run(make_job(tmp_path, """
        import json, os, sys, time
        root, failed, end = os.getpid(), 0, time.time() + 2
        while time.time() < end:  # every process forks, as fast as it can
            try:
                os.fork()
            except OSError:
                failed += 1
        if os.getpid() == root:
            pids = next(d for d in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup") if os.path.exists(d + "/pids.max"))
            read = lambda name: open(f"{pids}/{name}").read().split() if os.path.exists(f"{pids}/{name}") else None
            peak = read("pids.peak")  # newer kernels only
            json.dump({"status": "ok", "failed": failed, "max": read("pids.max")[0],
                       "peak": int(peak[0]) if peak else None, "events": read("pids.events")},
                      open(sys.argv[2] + "/result.json", "w"))
        os._exit(0)
    """, wall_time_s=30))
    assert res.status == "ok", (res.reason, res.log_tail)
    r = res.result
    assert r["failed"] > 0, r  # forks were refused inside the sandbox
    assert r["max"] == "48" and (r["peak"] is None or r["peak"] <= 48), r  # the cgroup never held more
    assert r["events"][0] == "max" and int(r["events"][1]) > 0, r


def test_loop_ignoring_sigterm_is_killed_at_the_limit(backend, tmp_path):
    res = backend.run(make_job(tmp_path, """
        import os, signal, subprocess, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen([sys.executable, "-c", "import os, signal; os.setsid(); "
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: pass"])
        print("looping", flush=True)
        while True:
            pass
    """, wall_time_s=2.0))
    assert res.status == "timeout", (res.reason, res.log_tail)
    assert 1.9 < res.wall_s < 5.0 and "looping" in res.log_tail
    assert leftovers(backend) == []


def test_parallel_jobs_share_the_backend(backend, tmp_path):
    jobs = [make_job(tmp_path / str(i), f"""
        import json, sys, time
        time.sleep(0.5)
        json.dump({{"status": "ok", "i": {i}}}, open(sys.argv[2] + "/result.json", "w"))
    """) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(backend.run, jobs))
    assert [(r.status, r.result["i"]) for r in results] == [("ok", i) for i in range(4)]
    assert leftovers(backend) == []


def test_stdout_flood_is_capped(backend, tmp_path):
    res = backend.run(make_job(tmp_path, """
        import json, sys
        line = "x" * 1023
        for _ in range(20 * 1024):          # 20 MB
            print(line)
        print(json.dumps({"event": "metric", "after_flood": True}))
        open(sys.argv[2] + "/result.json", "w").write('{"status": "ok"}')
    """, output_bytes=1_000_000), on_event=(events := []).append)
    assert res.status == "ok" and res.truncated
    assert 1_000_000 <= res.log_path.stat().st_size < 1_000_200
    assert events == [{"event": "metric", "after_flood": True}]


@pytest.mark.parametrize("attack", [
    "open(inp + '/harness.py', 'a').write('# pwned')",
    "os.chmod(inp + '/harness.py', 0o666)",
    "open(inp + '/table.json', 'w').write('{\"acc\": 1.0}')",
    "open(inp + '/extra.py', 'w').write('x = 1')",
])
def test_tampering_with_harness_or_data_is_integrity(backend, tmp_path, attack):
    table = tmp_path / "table.json"
    table.write_text('{"acc": 0.5}')
    job = make_job(tmp_path, f"""
        import json, os, sys
        inp = sys.argv[1]
        acc = json.load(open(inp + "/table.json"))["acc"]
        {attack}
        json.dump({{"status": "ok", "acc": acc}}, open(sys.argv[2] + "/result.json", "w"))
    """)
    job.data = {"table.json": table}
    res = backend.run(job)
    assert res.status == "integrity", (res.reason, res.log_tail)
    assert "read-only input (/job/input/" in res.reason
    assert table.read_text() == '{"acc": 0.5}'
    assert (job.workdir / "input" / "harness.py").read_text() == job.files["harness.py"]


def test_nb201_jobs_run_and_a_hostile_cell_is_caught(backend, tmp_path, nb201_table):
    from conftest import synthetic_accuracy

    from archlab.tasks.nb201 import NB201Task

    task = NB201Task({"table": str(nb201_table)})
    task.prepare(tmp_path / "campaign")
    seed = task.seeds()[0]
    check = backend.run(task.check_job(seed.code, tmp_path / "check", 1))
    assert check.status == "ok", (check.reason, check.log_tail)
    events = []
    train = backend.run(task.train_job(seed.code, tmp_path / "train", 1), on_event=events.append)
    assert train.status == "ok", (train.reason, train.log_tail)
    arch = train.result["arch"]
    assert check.result["arch"] == arch
    assert train.result["metrics"]["val_acc"] == synthetic_accuracy(arch)[0]
    assert {"event": "metric", "val_acc": synthetic_accuracy(arch)[0],
            "test_acc": synthetic_accuracy(arch)[1]} in events
    hostile = "import os\nopen(os.path.join(os.path.dirname(__file__), 'table.sqlite'), 'wb').write(b'')\n" + seed.code
    res = backend.run(task.train_job(hostile, tmp_path / "hostile", 1))
    assert res.status == "integrity", (res.reason, res.log_tail)
    assert "/job/input/table.sqlite" in res.reason
    assert task.table_db.stat().st_size > 0


def test_gpus_are_requested_by_device_id(backend, tmp_path):
    from archlab.sandbox.docker import _lay_out

    job = make_job(tmp_path, "pass", gpus=[1, 3])
    inp = tmp_path / "in"
    _, mounts = _lay_out(job, inp)
    container = backend._create(job, inp, tmp_path, mounts)
    try:
        host = container.attrs["HostConfig"]
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    finally:
        container.remove(force=True)
    assert [r["DeviceIDs"] for r in host["DeviceRequests"]] == [["1", "3"]]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"  # the engine renumbers what it exposes
    assert host["Memory"] == 256 << 20 and host["PidsLimit"] == 256 and host["ReadonlyRootfs"]
    assert host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"]


def test_runtime_option_reaches_the_engine(runner_image, tmp_path):
    from archlab.sandbox.docker import DockerBackend

    res = DockerBackend(image=runner_image, runtime="no-such-runtime").run(make_job(tmp_path, "pass"))
    assert res.status == "crash" and "no-such-runtime" in res.reason


def test_orphans_of_a_dead_campaign_are_removed(backend):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = backend.client.containers.create(backend.image, ["sleep", "60"], labels={
        "archlab.sandbox": "1", "archlab.host": socket.gethostname(), "archlab.owner": str(dead.pid)})
    assert backend.sweep() >= 1
    import docker

    with pytest.raises(docker.errors.NotFound):
        orphan.reload()


def test_get_backend_and_missing_image(runner_image):
    from archlab.sandbox.docker import DockerBackend

    assert isinstance(get_backend("docker", image=runner_image), DockerBackend)
    with pytest.raises(ConfigError, match="archlab sandbox build"):
        get_backend("docker", image="archlab-runner:does-not-exist")


def test_image_tag_follows_the_recipe(tmp_path, monkeypatch):
    from archlab.sandbox import image

    tag = image.image_tag()
    assert tag.startswith("archlab-runner:") and len(tag.split(":")[1]) == 12
    changed = tmp_path / "Dockerfile"
    changed.write_text(image.DOCKERFILE.read_text() + "\nRUN true\n")
    monkeypatch.setattr(image, "DOCKERFILE", changed)
    assert image.image_tag() != tag


def test_status_without_an_engine_says_so(monkeypatch):
    from archlab.sandbox.image import image_status

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    ok, line = image_status()
    assert not ok and "no docker engine at unix:///nonexistent/docker.sock" in line


def test_cli_status_and_build_when_current(runner_image):
    from typer.testing import CliRunner

    from archlab.cli.sandbox import app

    status = CliRunner().invoke(app, ["status"])
    assert status.exit_code == 0 and runner_image in status.output
    build = CliRunner().invoke(app, ["build", "--offline"])
    assert build.exit_code == 0 and build.output.strip().splitlines()[-1] == runner_image
