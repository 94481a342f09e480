"""`archlab doctor`: what this machine offers archlab, and what is missing."""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "installed"


def _docker_engine(sdk: str | None) -> tuple[bool, str, str]:
    if sdk is None:
        return False, "docker engine", "docker SDK missing: pip install docker (for --sandbox docker)"
    import docker

    where = os.environ.get("DOCKER_HOST", "the default socket")
    try:
        docker.from_env(timeout=3).ping()
    except Exception as exc:  # not running, no permission, bad DOCKER_HOST
        return False, "docker engine", f"none at {where} ({type(exc).__name__}): start dockerd or set DOCKER_HOST"
    return True, "docker engine", f"running at {where} (SDK {sdk})"


def _isolation(config: Any) -> tuple[bool, str, str]:
    """What isolates candidate code under the configured sandbox, or why nothing can."""
    from archlab.campaign import backend_options, isolation_in_force
    from archlab.errors import ConfigError
    from archlab.sandbox.isolation import HOW_TO_ISOLATE, bwrap_problem

    sandbox = config.sandbox
    try:
        name = isolation_in_force(sandbox, backend_options(sandbox, config.strategy == "llm"))
    except ConfigError as exc:
        return False, "isolation", f"none: {exc}"
    if "none" in name:
        why = "set by [sandbox] isolation = \"none\"" if sandbox.isolation == "none" else bwrap_problem()
        return False, "isolation", f"{name}: jobs see the network, your files and the lab's processes ({why}); " \
            f"{HOW_TO_ISOLATE}"
    if "process+bwrap" not in name:
        return True, "isolation", name  # docker's own
    from archlab.sandbox.pids import cap_kind

    return True, "isolation", f"{name} (no network, no host files, own PID namespace; process cap: {cap_kind()})"


def checks(config: Any) -> list[tuple[bool, str, str]]:
    rows: list[tuple[bool, str, str]] = [(True, "python", platform.python_version())]
    torch = _version("torch")
    rows.append((torch is not None, "torch", torch or "missing: pip install torch"))
    gpus = shutil.which("nvidia-smi")
    if gpus:
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        rows.append((res.returncode == 0, "GPU", res.stdout.strip().replace("\n", "; ") or res.stderr.strip()))
    else:
        rows.append((False, "GPU", "none found (nvidia-smi absent): lm presets above tiny need one"))
    rows.append(_isolation(config))
    docker = _version("docker")
    rows.append(_docker_engine(docker))
    from archlab.sandbox.image import image_status

    ok, line = image_status()
    rows.append((ok, "runner image", line if ok else f"{line} (build it: archlab sandbox build --offline)"))
    ray = _version("ray")
    rows.append((ray is not None, "ray", ray or "missing: pip install ray (for --sandbox ray)"))
    for mod in ("langgraph", "litellm", "chromadb"):
        v = _version(mod)
        rows.append((v is not None, mod, v or "missing"))
    models = config.llm.ensemble
    for model in models:
        from archlab.llm import LLMClient

        try:
            line = LLMClient.from_config(config.llm, Path(os.devnull), model=model).describe()
        except Exception as exc:  # noqa: BLE001 - a bad script path, say
            line = f"{model}: {exc}"
        rows.append((True, "model" if len(models) == 1 else "model (ensemble)", line))
    if not models:
        rows.append((False, "model", "none: offline strategies (set [llm] model or --model)"))
    from archlab.memory.embeddings import describe_embeddings

    text = describe_embeddings(config)
    rows.append(("loads" in text or text.startswith("hashing"), "embeddings", text))
    return rows
