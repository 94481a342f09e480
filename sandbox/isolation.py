"""Namespace isolation for the process backend: each job runs inside bubblewrap.

Why bubblewrap: it is Flatpak's sandbox, a small audited setuid-free program
that builds a namespace sandbox from unprivileged user namespaces, so it needs
neither root nor a daemon, and a job starts in a few milliseconds (docker: ~0.4 s).

What a job sees inside (argv() builds it):
- network: a new namespace with loopback only; the host's loopback is another
  namespace, so nothing on the host (or anywhere) is reachable;
- processes: a new PID namespace with its own /proc: the lab's processes and
  their environments and command lines are invisible; when the job's first
  process ends the kernel kills whatever it left behind;
- files: the system's directories and the Python environment read-only, input/
  and the data read-only at their real paths, output/ the only writable place,
  a private size-capped /tmp and /dev/shm; the root is read-only and nothing
  else exists (no home, no workspace beyond the job's folder);
- no capabilities, no new privileges, no nested user namespaces, its own
  session (no typing into the lab's terminal), dead with its parent;
- GPUs: only the assigned /dev/nvidiaN nodes and the control devices.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from archlab.errors import ConfigError

ISOLATIONS = ("auto", "bwrap", "none")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What the dynamic loader, python and torch read from /etc: no secrets among them.
ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
       "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts")
GPU_CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", "/dev/nvidia-caps")
HOW_TO_ISOLATE = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; it needs unprivileged user "
                  "namespaces), or use [sandbox] backend = \"docker\"")


PR_SET_NO_NEW_PRIVS = 38


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot isolate a job here, or None when it can: tried once, for real, with
    the very command line and no-new-privileges a job gets (an old bwrap without --disable-userns,
    or a setuid one, fails here rather than in every job)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    import ctypes
    import tempfile

    libc = ctypes.CDLL(None, use_errno=True)
    with tempfile.TemporaryDirectory(prefix="archlab-bwrap-probe-") as tmp:
        inp, out = Path(tmp, "input"), Path(tmp, "output")
        inp.mkdir()
        out.mkdir()
        try:
            probe = (argv(sys.executable, inp.resolve(), out.resolve(), [], [], 16)
                     + [sys.executable, "-I", "-S", "-c", ""])
            res = subprocess.run(probe, capture_output=True, text=True, timeout=30,
                                 preexec_fn=lambda: libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:  # incl. asking the interpreter
            return f"bubblewrap cannot start a job here: {e}"
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
        return f"bubblewrap cannot create namespaces here ({why}); user namespaces may be disabled"
    return None


def resolve(isolation: str, code_from_model: bool, warn: Callable[[str], None] | None = None) -> str:
    """What the process backend runs jobs with ("bwrap" or "none") for a campaign's setting.

    auto: bwrap where it works; where it does not, model-written (or user-given) code is refused
    and offline template code runs unisolated with a warning. bwrap: required. none: the user's opt-out."""
    if isolation not in ISOLATIONS:
        raise ConfigError(f"unknown [sandbox] isolation {isolation!r}; choose one of: {', '.join(ISOLATIONS)}")
    if isolation == "none":
        return "none"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if isolation == "bwrap" or code_from_model:
        raise ConfigError(f"the process sandbox cannot isolate candidate code here: {problem}. To isolate it, "
                          f"{HOW_TO_ISOLATE}; to run it unisolated anyway (it would see the network, your files "
                          "and the lab's processes), set [sandbox] isolation = \"none\"")
    if warn is not None:
        warn(f"warning: jobs run unisolated ({problem}); fine for the task's own template code, "
             f"not for model-written code: {HOW_TO_ISOLATE}")
    return "none"


def describe(backend: str, isolation: str, runtime: str | None = None, inner: str = "process") -> str:
    """The isolation in force, as doctor and the campaign header name it."""
    if backend == "docker":
        return f"docker+{runtime}" if runtime else "docker"
    if backend == "ray":
        return f"ray({describe(inner, isolation, runtime)})"
    return "process+bwrap" if isolation == "bwrap" else "none"


# What an interpreter tells about itself: its prefixes, and the exact folders of its library (used
# instead of a prefix that would show too much, e.g. a Python installed with --prefix=$HOME).
_ASK = ("import json, sys, sysconfig; p = sysconfig.get_paths(); print(json.dumps([[sys.prefix, sys.base_prefix, "
        "sys.exec_prefix, sys.base_exec_prefix], [p[k] for k in ('stdlib', 'platstdlib', 'purelib', 'platlib') "
        "if k in p] + [sysconfig.get_config_var('LIBDIR') or '']]))")


@functools.lru_cache(maxsize=8)
def _interpreter(python: str) -> tuple[list[str], list[str]]:
    out = subprocess.run([python, "-I", "-c", _ASK], capture_output=True, text=True, timeout=30, check=True)
    prefixes, libraries = json.loads(out.stdout)
    return prefixes, libraries


def python_roots(python: str, private: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The folders an interpreter needs: its prefixes (the venv and the installation under it) and
    its own folder. A prefix that holds the user's home or one of `private` (the job's folder) is
    replaced by its library folders, so the job never sees the rest."""
    prefixes, libraries = _interpreter(python)
    hidden = [str(Path.home().resolve()), *private]
    exe = Path(python)
    roots = [str(exe.resolve().parent), str(exe.parent.resolve())]  # the real interpreter, and the venv's bin/
    for prefix in prefixes:
        p = str(Path(prefix).resolve())
        if any(h == p or h.startswith(p.rstrip("/") + "/") for h in hidden) or p == "/":
            roots += [str(Path(lib).resolve()) for lib in libraries if lib and p != "/" and lib.startswith(prefix)]
            roots.append(str(Path(p, "pyvenv.cfg")))  # a venv's marker (bound only where it exists)
        else:
            roots.append(p)
    return _outermost(r for r in roots if Path(r).exists())


def _outermost(paths: Iterable[str]) -> tuple[str, ...]:
    """Drop paths inside another one (a bind of the parent already shows them)."""
    keep: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in keep):
            keep.append(p)
    return tuple(keep)


def _system_args() -> list[str]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in ETC:
        args += ["--ro-bind-try", f, f]
    return args


def argv(python: str, inp: Path, out: Path, data: Iterable[str], gpus: list[int], tmp_mb: int) -> list[str]:
    """The bwrap command line that runs a job's command (appended after it) isolated. tmp_mb caps
    /tmp and /dev/shm each (tmpfs pages are not counted by the memory rlimit)."""
    exe = shutil.which("bwrap") or "bwrap"
    size = str(max(16, tmp_mb) << 20)
    args = [exe, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "archlab-job", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--disable-userns",
            "--proc", "/proc", "--dev", "/dev",
            "--size", size, "--tmpfs", "/dev/shm", "--size", size, "--tmpfs", "/tmp",
            *_system_args()]
    system = {d for d in SYSTEM_DIRS if os.path.isdir(d)}
    for root in python_roots(python, (str(inp.parent),)):  # a venv holding the workspace shows only its libraries
        if not any(root == s or root.startswith(s + "/") for s in system):
            args += ["--ro-bind", root, root]
    for path in _outermost(str(Path(p).resolve()) for p in data):
        args += ["--ro-bind", path, path]
    args += ["--ro-bind", str(inp), str(inp), "--bind", str(out), str(out)]
    if gpus:
        for node in [f"/dev/nvidia{g}" for g in gpus] + list(GPU_CONTROL):
            args += ["--dev-bind-try", node, node]
        # the driver finds its devices by PCI address
        for sys_dir in ("/sys/bus/pci", "/sys/devices", "/sys/module/nvidia"):
            args += ["--ro-bind-try", sys_dir, sys_dir]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", str(out), "--"]
    return args
