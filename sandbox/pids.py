"""A cap on how many processes (threads included) one job of the process backend may
hold at once, so a fork bomb fails its forks instead of exhausting the machine.

A pids cgroup per job where this process may create one (root, or a delegated
cgroup v2 subtree); it also lets the backend kill every process the job made,
whatever session or namespace it moved to. Elsewhere RLIMIT_NPROC, which the
kernel counts per user: the limit is set to what the user already runs plus the
cap. Root is exempt from RLIMIT_NPROC, so without a cgroup root gets no cap
(the wall-time kill and the PID namespace still end everything).
"""
from __future__ import annotations

import itertools
import os
import resource
import signal
import time
from pathlib import Path

_counter = itertools.count()


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root within the hierarchy, mount point, fstype, super options) of every cgroup mount."""
    rows = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and tail and tail[0] in ("cgroup", "cgroup2"):
            rows.append((fields[3], fields[4], tail[0], tail[-1]))
    return rows


def _own(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy holding `controller` ('' = v2)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if (controller and controller in names.split(",")) or (not controller and names == ""):
                return path
    except (OSError, ValueError):
        return None
    return None


def cgroup_base() -> Path | None:
    """A writable folder under which per-job pids cgroups can be made, or None."""
    for root, mount, fstype, opts in _mounts():
        if fstype == "cgroup" and "pids" in opts.split(","):
            own = _own("pids")
        elif fstype == "cgroup2":
            own = _own("")
        else:
            continue
        if own is None or not (own + "/").startswith(root.rstrip("/") + "/"):
            continue  # this process's cgroup is not under what is mounted here
        base = Path(mount) / own[len(root.rstrip("/")):].lstrip("/")
        if fstype == "cgroup2" and "pids" not in _read(base / "cgroup.subtree_control").split():
            continue  # v2: a child gets pids.max only where the parent delegates the controller
        if os.access(base, os.W_OK):
            return base
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _user_tasks() -> int:
    """Tasks (threads) this user runs now: what RLIMIT_NPROC counts."""
    uid, total = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            total += int(fields.get("Threads", "1"))
    return total


class PidsCap:
    """One job's cap. `enter()` runs in the child before exec; `kill_all()` and `close()` after."""

    def __init__(self, limit: int, base: Path | None) -> None:
        self.limit = limit
        self.group: Path | None = None
        self.nproc: int | None = None
        if limit <= 0:
            return
        if base is not None:
            group = base / f"archlab-{os.getpid()}-{next(_counter)}"
            try:
                group.mkdir()
                (group / "pids.max").write_text(str(limit))
                self.group = group
                self._procs = str(group / "cgroup.procs")
                return
            except OSError:
                _remove(group)
        if os.geteuid() != 0:
            hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
            want = _user_tasks() + limit
            self.nproc = want if hard == resource.RLIM_INFINITY else min(want, hard)

    @property
    def kind(self) -> str:
        return "cgroup" if self.group else "rlimit" if self.nproc else "none"

    def enter(self) -> None:
        """In the forked child, before exec: join the cgroup, or lower RLIMIT_NPROC."""
        if self.group is not None:
            fd = os.open(self._procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        elif self.nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))

    def kill_all(self) -> None:
        """SIGKILL every process left in the job's cgroup (setsid or not), until it is empty."""
        if self.group is not None:
            _kill_all(self.group)

    def close(self) -> None:
        if self.group is not None:
            _kill_all(self.group)
            _remove(self.group)
            self.group = None


def _kill_all(group: Path) -> None:
    for _ in range(100):
        pids = [int(p) for p in _read(group / "cgroup.procs").split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)


def _remove(group: Path) -> None:
    for _ in range(500):  # a killed process leaves the cgroup a moment after it dies
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.002)


def cap_kind(limit: int = 256) -> str:
    """Which cap a job would get here ("cgroup", "rlimit" or "none"), found by making one."""
    cap = PidsCap(limit, cgroup_base())
    kind = cap.kind
    cap.close()
    return kind


def sweep(base: Path) -> None:
    """Empty and remove the job cgroups of campaigns that died (their pid is in the name)."""
    for group in base.glob("archlab-*-*"):
        try:
            owner = int(group.name.split("-")[1])
            os.kill(owner, 0)
            continue  # its campaign is alive
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        _kill_all(group)
        _remove(group)
