"""The runner image: what the docker backend runs jobs in.

`build_image()` builds sandbox/Dockerfile into `archlab-runner:<hash>`, the
hash covering the Dockerfile, runner-requirements.txt and the target Python,
so a changed recipe gives a new tag and an unchanged one is built once.

The wheels are fetched on the host (`pip download` for the image's platform,
through whatever index the host's pip is configured with), put in the build
context, and installed with the build's network off. The base is
python:3.11-slim-bookworm from a registry; `offline=True` builds a Debian root
filesystem with debootstrap instead (needs root and an apt mirror, ~30-110 s
once) and imports it as `archlab-base:<hash>`, so no image registry is needed.

Importing this module is cheap: docker is imported inside the functions.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archlab.errors import ConfigError

HERE = Path(__file__).resolve().parent
DOCKERFILE = HERE / "Dockerfile"
REQUIREMENTS = HERE / "runner-requirements.txt"
REPO = "archlab-runner"
BASE_REPO = "archlab-base"
ONLINE_BASE = "python:3.11-slim-bookworm"
PYTHON_VERSION = "3.11"                 # the wheels are fetched for this CPython...
PLATFORM = "manylinux_2_28_x86_64"      # ...on this platform (bookworm has glibc 2.36)
SUITE = "bookworm"
DEBOOTSTRAP = ("--variant=minbase", "--include=python3")
MIRROR = os.environ.get("ARCHLAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Trimmed from the rootfs before import: apt's caches and lists, docs, manuals, locales.
ROOTFS_JUNK = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")

Log = Callable[[str], None]


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()[:12]


def content_hash() -> str:
    """The hash in the runner tag: the Dockerfile, the requirements and the target Python."""
    return _digest(DOCKERFILE.read_bytes(), REQUIREMENTS.read_bytes(), PYTHON_VERSION.encode(), PLATFORM.encode())


def image_tag() -> str:
    return f"{REPO}:{content_hash()}"


def base_tag() -> str:
    """The offline base's tag: a hash of the debootstrap recipe (not the mirror)."""
    return f"{BASE_REPO}:{_digest(SUITE.encode(), ' '.join(DEBOOTSTRAP).encode(), ' '.join(ROOTFS_JUNK).encode())}"


def client() -> Any:
    """A docker client for the engine in DOCKER_HOST, or the default socket; ConfigError if unreachable."""
    import docker

    try:
        c = docker.from_env()
        c.ping()
    except docker.errors.DockerException as e:
        where = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
        raise ConfigError(f"no docker engine at {where}: {e}; start dockerd or set DOCKER_HOST") from e
    return c


def find_image(c: Any, tag: str) -> Any:
    import docker

    try:
        return c.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def image_status() -> tuple[bool, str]:
    """(usable, one line for `archlab doctor`): is the current runner image built? Never raises."""
    try:
        c = client()
    except ConfigError as e:
        return False, str(e)
    except Exception as e:  # noqa: BLE001 - doctor must not crash on a broken docker install
        return False, f"docker is unusable: {e}"
    tag = image_tag()
    image = find_image(c, tag)
    if image is not None:
        size = image.attrs.get("Size", 0) / 1e9
        return True, f"{tag} built {image.attrs.get('Created', '')[:19]} ({size:.2f} GB)"
    stale = sorted(t for i in c.images.list(name=REPO) for t in i.tags)
    hint = "run `archlab sandbox build` (add --offline where no image registry is reachable)"
    if stale:
        return False, f"{tag} not built; out of date: {', '.join(stale)}; {hint}"
    return False, f"{tag} not built; {hint}"


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}")


def download_wheels(dest: Path, wheels: Path | None = None) -> list[str]:
    """pip-download the requirements (and pip itself) for the image's platform into dest.
    `wheels`: a folder of wheels to use instead of any index (a machine with no index)."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(dest),
           "--only-binary=:all:", "--platform", PLATFORM, "--python-version", PYTHON_VERSION,
           "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
           "-r", str(REQUIREMENTS), "pip"]
    if wheels is not None:
        cmd += ["--no-index", "--find-links", str(Path(wheels).resolve())]
    _run(cmd, "downloading the runner's wheels")
    return sorted(p.name for p in dest.glob("*.whl"))


def offline_base(log: Log = print) -> str:
    """The debootstrap base image, built and imported if missing. Needs root and debootstrap."""
    c = client()
    tag = base_tag()
    if find_image(c, tag) is not None:
        return tag
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        raise ConfigError("the offline base needs root and debootstrap (apt-get install -y debootstrap); "
                          f"or build without --offline to use {ONLINE_BASE} from a registry")
    t0 = time.monotonic()
    log(f"debootstrap {SUITE} from {MIRROR} (takes a minute or two)...")
    with tempfile.TemporaryDirectory(prefix="archlab-rootfs-", dir="/var/tmp") as tmp:
        rootfs, tar = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        _run(["debootstrap", *DEBOOTSTRAP, SUITE, str(rootfs), MIRROR], "debootstrap")
        for junk in ROOTFS_JUNK:
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tar), "."], "packing the rootfs")
        repo, _, version = tag.partition(":")
        c.api.import_image_from_file(str(tar), repository=repo, tag=version)
    log(f"imported {tag} in {time.monotonic() - t0:.0f} s")
    return tag


def build_image(offline: bool = False, force: bool = False, base: str | None = None,
                wheels: Path | None = None, log: Log = print) -> str:
    """Build the runner image if its tag is missing (or `force`); return the tag."""
    c = client()
    tag = image_tag()
    if not force and find_image(c, tag) is not None:
        log(f"{tag} is built and current")
        return tag
    t0 = time.monotonic()
    base = base or (offline_base(log) if offline else ONLINE_BASE)
    with tempfile.TemporaryDirectory(prefix="archlab-build-", dir="/var/tmp") as tmp:
        ctx = Path(tmp)
        shutil.copy(DOCKERFILE, ctx / "Dockerfile")
        shutil.copy(REQUIREMENTS, ctx / "runner-requirements.txt")
        t1 = time.monotonic()
        names = download_wheels(ctx / "wheels", wheels)
        log(f"wheels ({time.monotonic() - t1:.0f} s): {', '.join(names)}")
        log(f"building {tag} from {base} ...")
        t1 = time.monotonic()
        import docker

        try:  # network_mode none: the build itself must not need the network
            c.images.build(path=str(ctx), tag=tag, buildargs={"BASE": base}, network_mode="none", rm=True,
                           forcerm=True, pull=False, labels={"archlab.content-hash": content_hash(),
                                                             "archlab.base": base, "archlab.wheels": " ".join(names)})
        except docker.errors.BuildError as e:
            lines = "".join(str(x.get("stream", x.get("error", ""))) for x in e.build_log)
            hint = "\n(no image registry reachable? build with --offline)" if base == ONLINE_BASE else ""
            raise ConfigError(f"building {tag} failed: {e}\n{lines[-3000:]}{hint}") from e
        except docker.errors.ImageNotFound as e:
            raise ConfigError(f"base image {base} is missing and cannot be pulled; "
                              "use --offline where no registry is reachable") from e
    log(f"built {tag} in {time.monotonic() - t1:.0f} s (total {time.monotonic() - t0:.0f} s)")
    return tag
