"""The hostile suite, on every backend: process (isolated by bubblewrap), docker, and ray
with each inner backend. Each candidate misbehaves in one way; each must get a classified
result with a clear reason, nothing may escape (no byte to the host's listener, no file
outside the job's folder, no planted secret found, no process left), and the backend must
run the next job as if nothing happened. A backend that cannot run here is skipped, saying why."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from test_sandbox_process import HEARTBEAT, beats_stopped

from archlab.sandbox.base import Job, Limits

HARNESS_CMD = ["{python}", "{input}/harness.py", "{input}", "{output}"]
BACKENDS = ["process", "docker", "ray-process", "ray-docker"]
TOKEN = uuid.uuid4().hex  # every planted secret contains it
LAB_KEY = f"sk-lab-env-{TOKEN}"        # in the lab's environment
LAB_ARG = f"--api-key=sk-lab-arg-{TOKEN}"  # on a lab process's command line
HOME_SECRET = f"home-secret-{TOKEN}"   # in a file in the user's home


@pytest.fixture(scope="module")
def lab_secrets():
    """Secrets where a candidate would look: a file in the real home, the environment and the
    command line of a process of the lab (a helper started with them, as the lab is started
    with its keys: /proc/<pid>/environ shows a process's environment as it was at exec)."""
    home_file = Path.home() / f".archlab-hostile-{uuid.uuid4().hex}"  # the name is no secret: the content is
    home_file.write_text(HOME_SECRET)
    os.environ["OPENAI_API_KEY"] = LAB_KEY  # ray's workers, started below, inherit it at exec
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", LAB_ARG],
                              env={**os.environ, "OPENAI_API_KEY": LAB_KEY})
    try:
        yield {"home_file": str(home_file), "helper_pid": helper.pid}
    finally:
        helper.kill()
        helper.wait()
        home_file.unlink()
        os.environ.pop("OPENAI_API_KEY", None)


@pytest.fixture(scope="module")
def ray_cluster(lab_secrets):
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, lab_secrets):
    name = request.param
    if name in ("process", "ray-process"):
        from archlab.sandbox.isolation import bwrap_problem

        if bwrap_problem():
            pytest.skip(f"the isolated process backend cannot run here: {bwrap_problem()}")
    image = None
    if name.endswith("docker"):
        image = request.getfixturevalue("runner_image")
    if name == "process":
        from archlab.sandbox.process import ProcessBackend

        return ProcessBackend(isolation="bwrap")
    if name == "docker":
        from archlab.sandbox.docker import DockerBackend

        return DockerBackend(image=image)
    request.getfixturevalue("ray_cluster")
    from archlab.sandbox.ray import RayBackend

    if name == "ray-process":
        return RayBackend(inner="process", isolation="bwrap")
    return RayBackend(inner="docker", image=image)


def job(tmp_path: Path, code: str, **limits) -> Job:
    return Job(name="hostile", workdir=tmp_path / "job", command=HARNESS_CMD,
               files={"harness.py": textwrap.dedent(code)},
               limits=Limits(**{"wall_time_s": 30.0, "memory_mb": 512, **limits}))


def no_process_in(workdir: Path) -> list[int]:
    """Host processes still running with their working directory in the job's folder."""
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(workdir) in os.readlink(entry / "cwd"):
                    left.append(int(entry.name))
            except OSError:
                continue
    return left


def assert_contained(tmp_path: Path, res) -> None:
    """A result with a reason, the job's folder as the backend lays it out, nothing left running."""
    assert res.status in ("ok", "timeout", "oom", "crash", "nan", "integrity")
    assert res.ok or res.reason, res
    workdir = tmp_path / "job"
    assert sorted(p.name for p in workdir.iterdir()) == ["input", "log", "output"]
    assert not no_process_in(workdir)


def test_the_hosts_loopback_is_unreachable(backend, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        res = backend.run(job(tmp_path, f"""
            import json, socket, sys
            outcome = {{}}
            for host in ("127.0.0.1", "localhost"):
                try:
                    s = socket.create_connection((host, {port}), timeout=3)
                    s.sendall(b"stolen")
                    outcome[host] = "connected"
                except OSError as e:
                    outcome[host] = type(e).__name__
            json.dump({{"status": "ok", "outcome": outcome}}, open(sys.argv[2] + "/result.json", "w"))
        """))
        assert res.status == "ok", res.log_tail
        assert "connected" not in res.result["outcome"].values(), res.result
        with pytest.raises(BlockingIOError):
            listener.accept()  # not one connection reached the host
    finally:
        listener.close()
    assert_contained(tmp_path, res)


def test_nothing_is_written_outside_the_job_folder(backend, tmp_path):
    tag = uuid.uuid4().hex
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    targets = [str(outside / "evil"), str(tmp_path / "evil"), str(Path.home() / f".archlab-evil-{tag}"),
               f"/tmp/archlab-evil-{tag}", f"/var/tmp/archlab-evil-{tag}", f"/evil-{tag}"]
    res = backend.run(job(tmp_path, f"""
        import json, sys
        outcome = {{}}
        for path in {targets!r} + [sys.argv[2] + "/../evil", sys.argv[2] + "/../../evil"]:
            try:
                open(path, "w").write("x")
                outcome[path] = "written"
            except OSError as e:
                outcome[path] = e.strerror
        open(sys.argv[2] + "/ok", "w").write("x")
        json.dump({{"status": "ok", "outcome": outcome}}, open(sys.argv[2] + "/result.json", "w"))
    """))
    assert res.status == "ok", res.log_tail
    for path in targets:
        assert not Path(path).exists(), f"the job wrote {path} on the host"
    assert list(outside.iterdir()) == [] and not (tmp_path / "evil").exists()
    assert (tmp_path / "job" / "output" / "ok").exists()
    assert_contained(tmp_path, res)


def test_planted_secrets_stay_hidden(backend, tmp_path, lab_secrets):
    res = backend.run(job(tmp_path, f"""
        import json, os, sys
        found = {{"env": dict(os.environ), "ppid": os.getppid(), "files": {{}}}}
        paths = [{lab_secrets["home_file"]!r}, "/proc/%d/cmdline" % os.getppid(), "/proc/%d/environ" % os.getppid(),
                 "/proc/{lab_secrets["helper_pid"]}/environ", "/proc/{lab_secrets["helper_pid"]}/cmdline"]
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                paths += ["/proc/%s/environ" % pid, "/proc/%s/cmdline" % pid]
        for path in paths:
            try:
                found["files"][path] = open(path, "rb").read().decode("utf-8", "replace")
            except OSError as e:
                found["files"][path] = e.strerror
        print(json.dumps(found))
        json.dump({{"status": "ok", "found": found}}, open(sys.argv[2] + "/result.json", "w"))
    """))
    assert res.status == "ok", res.log_tail
    seen = json.dumps(res.result) + res.log_path.read_text()
    assert TOKEN not in seen, "a planted secret reached the candidate"
    lab = Path("/proc/self/cmdline").read_bytes().decode()
    assert lab not in res.result["found"]["files"].values(), "the candidate saw the lab's process"
    assert_contained(tmp_path, res)


def test_a_fork_bomb_fails_its_forks(backend, tmp_path):
    if backend.name == "process" or getattr(backend, "inner", "") == "process":  # ray's local workers: this machine
        from archlab.sandbox.pids import cap_kind

        if cap_kind() == "none":
            pytest.skip("no pids cgroup and root (exempt from RLIMIT_NPROC): a fork bomb would take the machine")
    res = backend.run(job(tmp_path, """
        import json, os, sys, time
        stop, end = sys.argv[2] + "/fork-failed", time.time() + 10
        if os.fork() == 0:  # the bomber: every descendant forks as fast as it can
            while time.time() < end and not os.path.exists(stop):
                try:
                    os.fork()
                except OSError:
                    open(stop, "a").write("x")  # a fork refused: the cap holds
            os._exit(0)
        peak = 0  # the watcher: how many processes its sandbox ever held at once
        while time.time() < end and not os.path.exists(stop):
            peak = max(peak, sum(p.isdigit() for p in os.listdir("/proc")))
            time.sleep(0.01)
        json.dump({"status": "ok", "refused": os.path.exists(stop), "peak": peak},
                  open(sys.argv[2] + "/result.json", "w"))
    """))
    assert res.status in ("ok", "crash", "timeout"), (res.status, res.reason)
    if res.ok:  # stopped by the process cap (a refused fork), or by the memory limit (docker's OOM killer)
        assert res.result["refused"] or res.result["peak"] >= 50, res.result
        assert res.result["peak"] <= 320, f"the bomb reached {res.result['peak']} processes"
    else:
        assert res.reason
    assert_contained(tmp_path, res)


def test_a_memory_bomb_is_oom(backend, tmp_path):
    res = backend.run(job(tmp_path, """
        hoard = []
        while True:
            hoard.append(bytearray(16 * 1024 * 1024))
    """, memory_mb=256))
    assert res.status == "oom", (res.reason, res.log_tail)
    assert "256 MB" in res.reason
    assert_contained(tmp_path, res)


def test_a_loop_ignoring_sigterm_is_killed_at_the_limit(backend, tmp_path):
    res = backend.run(job(tmp_path, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("looping", flush=True)
        while True:
            time.sleep(0.01)
    """, wall_time_s=3.0))
    assert res.status == "timeout", (res.status, res.reason, res.log_tail)
    assert "3 s" in res.reason
    assert_contained(tmp_path, res)


def test_a_stdout_flood_is_capped(backend, tmp_path):
    res = backend.run(job(tmp_path, """
        import sys
        line = "x" * 1023
        for _ in range(20 * 1024):  # 20 MB
            print(line)
        open(sys.argv[2] + "/result.json", "w").write('{"status": "ok"}')
    """, output_bytes=1_000_000))
    assert res.status == "ok" and res.truncated, (res.status, res.reason)
    assert res.log_path.stat().st_size < 1_100_000
    assert_contained(tmp_path, res)


@pytest.mark.parametrize("target", ["harness.py", "table.bin"])
def test_tampering_with_the_harness_or_the_data_is_integrity(backend, tmp_path, target):
    data = tmp_path / "data" / "table.bin"
    data.parent.mkdir()
    data.write_bytes(b"the real table")
    spec = job(tmp_path, f"""
        import os, sys
        path = os.path.join(sys.argv[1], {target!r})
        try:
            os.chmod(path, 0o666)
        except OSError:
            pass
        open(path, "wb").write(b"pwned")
        open(sys.argv[2] + "/result.json", "w").write('{{"status": "ok"}}')
    """)
    spec.data = {"table.bin": data}
    res = backend.run(spec)
    assert res.status == "integrity", (res.status, res.reason, res.log_tail)
    assert target in res.reason
    assert data.read_bytes() == b"the real table"
    assert_contained(tmp_path, res)


def test_a_result_linked_to_a_host_file_is_not_read(backend, tmp_path, lab_secrets):
    """A link in output/ would make the lab read a host file (say, a key) back as the job's result."""
    res = backend.run(job(tmp_path, f"""
        import os, sys
        os.symlink({lab_secrets["home_file"]!r}, sys.argv[2] + "/result.json")
        os.symlink("/etc/hostname", sys.argv[2] + "/curve.json")
    """))
    assert res.status == "integrity" and "is a link" in res.reason, (res.status, res.reason)
    assert res.result is None and TOKEN not in json.dumps(res.to_dict(), default=str)
    assert_contained(tmp_path, res)


def test_no_process_outlives_its_job(backend, tmp_path):
    res = backend.run(job(tmp_path, f"""
        import os, subprocess, sys
        beat = sys.argv[2] + "/beat"
        # A daemon in its own session, its parent gone: it would keep writing for an hour.
        subprocess.Popen([sys.executable, "-c", {HEARTBEAT!r}, beat], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import time
        while not os.path.exists(beat):
            time.sleep(0.02)
        open(sys.argv[2] + "/result.json", "w").write('{{"status": "ok"}}')
    """))
    assert res.status == "ok", (res.reason, res.log_tail)
    assert beats_stopped(tmp_path / "job" / "output" / "beat"), "a process of the job kept running after it"
    assert_contained(tmp_path, res)


def test_the_backend_runs_the_next_job_as_usual(backend, tmp_path):
    res = backend.run(job(tmp_path, """
        import json, sys
        json.dump({"status": "ok", "metric": 0.5}, open(sys.argv[2] + "/result.json", "w"))
    """))
    assert res.status == "ok" and res.result["metric"] == 0.5, (res.reason, res.log_tail)
