"""Shared fixtures: a synthetic NAS-Bench-201 table (every cell, made-up but
deterministic accuracies) and a clean environment for CLI subprocesses."""
from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
WEIGHT = {"none": 0.0, "skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 3.0, "avg_pool_3x3": 0.5}
REPO = Path(__file__).resolve().parents[1]


def arch_string(edges: tuple[str, ...]) -> str:
    e = edges
    return f"|{e[0]}~0|+|{e[1]}~0|{e[2]}~1|+|{e[3]}~0|{e[4]}~1|{e[5]}~2|"


def synthetic_accuracy(arch: str) -> tuple[float, float]:
    """Validation and test accuracy: more convolutions is better, plus hashed noise."""
    ops = [tok.split("~")[0] for tok in arch.strip("|").replace("+", "").split("|") if tok]
    noise = int(hashlib.sha256(arch.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    val = 60 + 1.8 * sum(WEIGHT[o] for o in ops) + 2 * noise
    return round(val, 4), round(val + 2.5 - noise, 4)


def write_synthetic_table(path: Path) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("arch,cifar10_val,cifar10_test,cifar100_val,cifar100_test,imagenet16_val,imagenet16_test\n")
        for edges in itertools.product(OPS, repeat=6):
            arch = arch_string(edges)
            val, test = synthetic_accuracy(arch)
            f.write(f"{arch},{val},{test},{val - 20},{test - 20},{val - 40},{test - 40}\n")
    return path


@pytest.fixture(scope="session")
def nb201_table(tmp_path_factory) -> Path:
    return write_synthetic_table(tmp_path_factory.mktemp("nb201") / "table.csv.gz")


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """Environment for running `archlab` as a subprocess: no ARCHLAB_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHLAB_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


ARCHLAB = [sys.executable, "-m", "archlab.cli"]


# -- the real local model (llama.cpp's OpenAI-compatible server) ---------------------------------

sys.path.insert(0, str(REPO / "scripts"))
from local_model import LlamaServer, real_model_paths  # noqa: E402  (stdlib only)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """The real model. Skips (saying why) where the server or the model is absent, unless
    REAL_MODEL_REQUIRED=1 (CI), where their absence fails the test."""
    python, gguf = real_model_paths()
    missing = [f"{what} ({path})" for what, path in (("llama.cpp server", python), ("model", gguf))
               if not path.exists()]
    if missing:
        why = (f"no real local model: missing {' and '.join(missing)}; set it up with "
               "`python scripts/local_model.py` (or set REAL_MODEL_PYTHON / REAL_MODEL_GGUF)")
        if os.environ.get("REAL_MODEL_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    server = LlamaServer(python, gguf, tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    server.stop()


def docker_client():
    """The engine, or skip saying why (no socket, no permission, no SDK)."""
    try:
        import docker

        c = docker.from_env()
        c.ping()
        return c
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no usable docker engine ({os.environ.get('DOCKER_HOST', 'default socket')}): {e}")


@pytest.fixture(scope="session")
def runner_image() -> str:
    """The current runner image, built here if missing (offline where root and debootstrap allow)."""
    from archlab.sandbox.image import build_image, find_image, image_tag

    c = docker_client()
    tag = image_tag()
    if find_image(c, tag) is None:
        offline = os.geteuid() == 0 and shutil.which("debootstrap") is not None
        t0 = time.monotonic()
        build_image(offline=offline, log=lambda line: print(f"[runner image] {line}", file=sys.stderr))
        print(f"[runner image] built {tag} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return tag
