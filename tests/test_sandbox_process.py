"""The process sandbox, each case a real subprocess running a throwaway harness."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from archlab.errors import ConfigError
from archlab.sandbox import BACKENDS, get_backend
from archlab.sandbox.base import Job, Limits
from archlab.sandbox.isolation import bwrap_problem
from archlab.sandbox.process import ProcessBackend

HARNESS_CMD = ["{python}", "{input}/harness.py", "{input}", "{output}"]


def make_job(tmp_path: Path, code: str, **limits) -> Job:
    return Job(name="t", workdir=tmp_path / "job", command=HARNESS_CMD,
               files={"harness.py": textwrap.dedent(code), "spec.json": '{"seed": 1}'},
               limits=Limits(**{"wall_time_s": 20.0, **limits}))


# A process that proves it is alive: it rewrites a counter into the file named by argv[1].
HEARTBEAT = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nn = 0\n"
             "while True:\n    n += 1\n    open(sys.argv[1], 'w').write(str(n))\n    time.sleep(0.05)\n")


def beats_running(path: Path, within: float = 20.0) -> bool:
    """True once the heartbeat has advanced twice (its writer runs), however loaded the machine."""
    end, first = time.monotonic() + within, None
    while time.monotonic() < end:
        try:
            n = int(path.read_text())
        except (OSError, ValueError):  # not there yet, or caught mid-write
            n = None
        if n is not None:
            first = n if first is None else first
            if n >= first + 2:
                return True
        time.sleep(0.05)
    return False


def beats_stopped(path: Path, quiet_s: float = 1.0, within: float = 5.0) -> bool:
    """True once the heartbeat file stays unchanged for quiet_s (its writer is dead)."""
    end = time.monotonic() + within
    last, since = None, time.monotonic()
    while time.monotonic() < end:
        now = path.read_text() if path.exists() else None
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return True
        time.sleep(0.05)
    return False


def test_ok_streams_events_and_reads_result(tmp_path):
    job = make_job(tmp_path, """
        import json, os, sys
        inp, out = sys.argv[1], sys.argv[2]
        spec = json.load(open(os.path.join(inp, "spec.json")))
        for step in range(3):
            print(json.dumps({"event": "progress", "step": step}))
        print("plain text, not an event")
        print("{not json either")
        json.dump({"status": "ok", "metric": 1.5, "seed": spec["seed"], "cwd": os.getcwd(),
                   "home": os.environ["HOME"]}, open(os.path.join(out, "result.json"), "w"))
    """)
    events = []
    res = ProcessBackend().run(job, on_event=events.append)
    assert res.status == "ok", res.log_tail
    assert res.ok and res.exit_code == 0 and res.wall_s > 0 and not res.truncated
    assert [e["step"] for e in events] == [0, 1, 2]
    out = str(job.workdir / "output")
    assert res.result == {"status": "ok", "metric": 1.5, "seed": 1, "cwd": out, "home": out}
    assert "plain text, not an event" in res.log_path.read_text()
    assert "plain text" in res.log_tail
    inp = job.workdir / "input"
    assert (inp / "harness.py").stat().st_mode & 0o777 == 0o444
    assert inp.stat().st_mode & 0o777 == 0o555
    # A rerun in the same workdir (resume) starts clean despite the read-only input.
    assert ProcessBackend().run(job).status == "ok"


def test_broken_event_sink_does_not_kill_the_job(tmp_path):
    job = make_job(tmp_path, """
        import json, sys
        for i in range(5):
            print(json.dumps({"event": "metric", "i": i}))
        open(sys.argv[2] + "/result.json", "w").write('{"status": "ok"}')
    """)
    seen = []

    def sink(event):
        seen.append(event["i"])
        raise RuntimeError("sink is broken")

    assert ProcessBackend().run(job, on_event=sink).status == "ok"
    assert seen == [0, 1, 2, 3, 4]


def test_crash_reason_is_the_exception_line(tmp_path):
    job = make_job(tmp_path, """
        def train():
            raise ValueError("shapes do not match: 3 vs 4")
        train()
    """)
    res = ProcessBackend().run(job)
    assert res.status == "crash" and res.exit_code == 1
    assert res.reason == "ValueError: shapes do not match: 3 vs 4"
    assert "Traceback" in res.log_tail


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_a_signal_death_is_named(tmp_path, isolation):
    if isolation == "bwrap" and bwrap_problem():
        pytest.skip(f"bubblewrap cannot run here: {bwrap_problem()}")
    res = ProcessBackend(isolation=isolation).run(make_job(tmp_path, """
        import os, signal
        os.kill(os.getpid(), signal.SIGSEGV)
    """))
    assert (res.status, res.exit_code, res.reason) == ("crash", -signal.SIGSEGV, "killed by SIGSEGV")
    res = ProcessBackend(isolation=isolation).run(make_job(tmp_path, """
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    assert (res.status, res.exit_code) == ("oom", -signal.SIGKILL), res.reason  # what the kernel's OOM killer sends


def test_exit_zero_without_result_is_a_crash(tmp_path):
    res = ProcessBackend().run(make_job(tmp_path, "print('done')"))
    assert (res.status, res.reason) == ("crash", "harness wrote no result.json")


def test_nan_status_from_result_json(tmp_path):
    res = ProcessBackend().run(make_job(tmp_path, """
        import sys
        open(sys.argv[2] + "/result.json", "w").write('{"status": "nan", "reason": "loss is nan at step 7"}')
    """))
    assert (res.status, res.reason) == ("nan", "loss is nan at step 7")


def test_error_status_from_result_json_is_a_crash(tmp_path):
    res = ProcessBackend().run(make_job(tmp_path, """
        import sys
        open(sys.argv[2] + "/result.json", "w").write('{"status": "error", "reason": "no forward()"}')
    """))
    assert (res.status, res.reason) == ("crash", "no forward()")


def test_timeout_kills_the_group_even_when_sigterm_is_ignored(tmp_path):
    job = make_job(tmp_path, f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", {HEARTBEAT!r}, sys.argv[2] + "/beat"])
        print("looping", flush=True)
        while True:
            time.sleep(0.01)
    """, wall_time_s=2.0)
    res = ProcessBackend().run(job)
    assert res.status == "timeout", res.log_tail
    assert 1.9 < res.wall_s < 4.0
    assert beats_stopped(job.workdir / "output" / "beat"), "grandchild survived the wall-time kill"


def test_memory_bomb_is_oom(tmp_path):
    res = ProcessBackend().run(make_job(tmp_path, """
        hoard = []
        while True:
            hoard.append(bytearray(16 * 1024 * 1024))
    """, memory_mb=256))
    assert res.status == "oom", (res.reason, res.log_tail)
    assert "MemoryError" in res.reason


def test_environment_is_scrubbed(tmp_path, monkeypatch):
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "secret-value")
    job = make_job(tmp_path, """
        import json, os, sys
        json.dump({"status": "ok", "env": dict(os.environ)}, open(sys.argv[2] + "/result.json", "w"))
    """, cpus=2)
    job.env = {"ARCHLAB_SEED": "7"}
    res = ProcessBackend().run(job)
    assert res.status == "ok", res.log_tail
    env = res.result["env"]
    assert not {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert "secret-value" not in json.dumps(env)
    assert env["HOME"] == str(job.workdir / "output")
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["ARCHLAB_SEED"] == "7"
    assert env["PYTHONNOUSERSITE"] == env["PYTHONUNBUFFERED"] == env["PYTHONDONTWRITEBYTECODE"] == "1"
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONHASHSEED", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTHONDONTWRITEBYTECODE",
               "PYTHONUNBUFFERED", "PYTHONNOUSERSITE", "ARCHLAB_SEED", "LC_CTYPE",
               "TMPDIR", "CUDA_DEVICE_ORDER", "PWD"}  # isolated: its private /tmp, GPU order; bwrap sets PWD
    assert set(env) <= allowed, set(env) - allowed  # LC_CTYPE: Python's own C-locale coercion


def test_stdout_flood_is_capped_and_parent_memory_bounded(tmp_path):
    job = make_job(tmp_path, """
        import json, sys
        line = "x" * 1023
        for _ in range(20 * 1024):          # 20 MB
            print(line)
        print(json.dumps({"event": "metric", "after_flood": True}))
        open(sys.argv[2] + "/result.json", "w").write('{"status": "ok"}')
    """, output_bytes=1_000_000)
    events = []
    tracemalloc.start()
    try:
        res = ProcessBackend().run(job, on_event=events.append)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.status == "ok" and res.truncated
    size = res.log_path.stat().st_size
    assert 1_000_000 <= size < 1_000_200
    assert "log truncated" in res.log_path.read_text()[-200:]
    assert events == [{"event": "metric", "after_flood": True}]  # kept reading past the cap
    assert peak < 4_000_000, f"parent held {peak} bytes while the job printed 20 MB"


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
@pytest.mark.parametrize("attack, named, blocked", [
    ("os.chmod(f, 0o644); open(f, 'a').write('# pwned')", "input/harness.py was modified", "harness.py"),
    ("os.chmod(inp, 0o755); open(os.path.join(inp, 'extra.py'), 'w').write('x = 1')",
     "input/extra.py was added", "input"),
])
def test_writing_to_input_is_integrity(tmp_path, attack, named, blocked, isolation):
    """Unisolated, file modes stop the write (root ignores them: the hash check catches it);
    isolated, the read-only mount stops it and the failed write names the path."""
    if isolation == "bwrap" and bwrap_problem():
        pytest.skip(f"bubblewrap cannot run here: {bwrap_problem()}")
    job = make_job(tmp_path, f"""
        import os, sys
        inp = sys.argv[1]
        f = os.path.join(inp, "harness.py")
        if os.geteuid() != 0:
            try:
                open(f, "a").write("# blocked")
                raise SystemExit("input was writable")
            except PermissionError:
                pass
        {attack}
        open(sys.argv[2] + "/result.json", "w").write('{{"status": "ok"}}')
    """)
    res = ProcessBackend(isolation=isolation).run(job)
    assert res.status == "integrity", (res.reason, res.log_tail)
    if isolation == "none":
        assert res.reason == named
    else:  # the first write refused (as root: the attack's; else: the pre-check's) names its path
        assert res.reason.startswith("the job tried to write to its read-only input (")
        written = res.reason.split("(", 1)[1].split(")")[0]
        assert written.endswith(blocked if os.geteuid() == 0 else "harness.py"), res.reason
    assert (job.workdir / "input" / "harness.py").read_text() == textwrap.dedent(job.files["harness.py"]) or \
        isolation == "none"


def test_data_is_linked_into_input(tmp_path):
    data = tmp_path / "table.json"
    data.write_text('{"acc": 0.9}')
    job = make_job(tmp_path, """
        import json, sys
        acc = json.load(open(sys.argv[1] + "/table.json"))["acc"]
        json.dump({"status": "ok", "acc": acc}, open(sys.argv[2] + "/result.json", "w"))
    """)
    job.data = {"table.json": data}
    res = ProcessBackend().run(job)
    assert res.status == "ok" and res.result["acc"] == 0.9
    assert data.stat().st_mode & 0o200, "the external data file itself must not be chmodded"


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_job_dies_with_the_campaign_process(tmp_path, isolation):
    """kill -9 of the process running the backend must not leave the job alive."""
    if isolation == "bwrap" and bwrap_problem():
        pytest.skip(f"bubblewrap cannot run here: {bwrap_problem()}")
    job_code = f"import runpy, sys\nsys.argv = ['beat', sys.argv[2] + '/beat']\nexec({HEARTBEAT!r})\n"
    launcher = textwrap.dedent(f"""
        from pathlib import Path
        from archlab.sandbox.base import Job, Limits
        from archlab.sandbox.process import ProcessBackend
        job = Job(name="sleep", workdir=Path({str(tmp_path / 'job')!r}),
                  command=["{{python}}", "{{input}}/harness.py", "{{input}}", "{{output}}"],
                  files={{"harness.py": {job_code!r}}}, limits=Limits(wall_time_s=60))
        ProcessBackend(isolation={isolation!r}).run(job)
    """)
    proc = subprocess.Popen([sys.executable, "-c", launcher])
    beat = tmp_path / "job" / "output" / "beat"
    try:
        assert beats_running(beat), "the job never ran"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert beats_stopped(beat), "job survived its campaign process"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_torch_fits_under_the_default_memory_limit(tmp_path):
    pytest.importorskip("torch")
    res = ProcessBackend().run(make_job(tmp_path, """
        import json, sys, torch
        m = torch.nn.Sequential(torch.nn.Embedding(256, 128), torch.nn.Linear(128, 512),
                                torch.nn.GELU(), torch.nn.Linear(512, 256))
        opt = torch.optim.AdamW(m.parameters())
        x = torch.randint(0, 256, (16, 128))
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(m(x).flatten(0, 1), x.flatten())
            loss.backward(); opt.step(); opt.zero_grad()
        vm = {l.split(":")[0]: int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("Vm")}
        json.dump({"status": "ok", "vm_mb": vm}, open(sys.argv[2] + "/result.json", "w"))
    """))  # default Limits: memory_mb=4096, enforced as RLIMIT_DATA
    assert res.status == "ok", res.log_tail
    assert res.result["vm_mb"]["VmData"] < 4096


def test_get_backend():
    assert BACKENDS == ("process", "docker", "ray")
    assert isinstance(get_backend("process"), ProcessBackend)
    assert get_backend("process").name == "process"
    for name in ("docker", "ray"):
        if importlib.util.find_spec(f"archlab.sandbox.{name}") is None:
            with pytest.raises(ConfigError, match="not available yet"):
                get_backend(name)
    with pytest.raises(ConfigError, match="process, docker, ray"):
        get_backend("kubernetes")


def test_an_isolated_job_gets_only_its_gpus(tmp_path):
    """Inside bubblewrap only the assigned GPUs' device nodes (and the control devices) exist,
    so CUDA numbers them from 0, in device-node order."""
    from archlab.sandbox import isolation

    args = isolation.argv(sys.executable, tmp_path / "in", tmp_path / "out", [], [2, 3], 64)
    nodes = [args[i + 1] for i, a in enumerate(args) if a == "--dev-bind-try"]
    assert nodes[:2] == ["/dev/nvidia2", "/dev/nvidia3"] and "/dev/nvidiactl" in nodes
    assert "/dev/nvidia0" not in nodes and "/dev/nvidia1" not in nodes
    if bwrap_problem():
        pytest.skip(f"bubblewrap cannot run here: {bwrap_problem()}")
    res = ProcessBackend(isolation="bwrap").run(make_job(tmp_path, """
        import json, os, sys
        json.dump({"status": "ok", "env": dict(os.environ), "dev": sorted(os.listdir("/dev"))},
                  open(sys.argv[2] + "/result.json", "w"))
    """, gpus=[2, 3]))
    assert res.status == "ok", res.log_tail
    assert res.result["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert res.result["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    present = {f"nvidia{g}" for g in (2, 3) if os.path.exists(f"/dev/nvidia{g}")}
    assert {d for d in res.result["dev"] if d.startswith("nvidia") and d[6:].isdigit()} == present
