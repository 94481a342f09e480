"""The same campaign with --sandbox process, docker and ray (a local cluster)
produces the same ledger: same proposals, code hashes, statuses and metrics."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import ARCHLAB


def _ledger_shape(tmp_path, table, backend, cli_env) -> list[tuple]:
    ws = tmp_path / backend
    env = {**cli_env, "RAY_AUTH_MODE": "disabled"}
    run = subprocess.run([*ARCHLAB, "run", "--task", "nb201", "--table", str(table), "--budget", "4",
                          "--strategy", "random", "--sandbox", backend, "--workspace", str(ws), "-q"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    cid = next(ws.glob("nb201-*")).name
    shown = subprocess.run([*ARCHLAB, "show", cid, "--json", "--workspace", str(ws)],
                           capture_output=True, text=True, env=env, timeout=120)
    rows = json.loads(shown.stdout)["experiments"]
    return [(r["id"], r["origin"], r["status"], r["ast_hash"], r["fingerprint"], r["score"],
             json.dumps(r["metrics"], sort_keys=True)) for r in rows]


def _docker_ready() -> str | None:
    try:
        import docker

        from archlab.sandbox.image import find_image, image_tag

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001
        return f"no usable docker engine ({os.environ.get('DOCKER_HOST', 'default socket')}): {exc}"
    if find_image(client, image_tag()) is None:
        return f"runner image {image_tag()} not built (archlab sandbox build --offline; .ci/run does it)"
    return None


@pytest.fixture(scope="module")
def process_shape(tmp_path_factory, nb201_table):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHLAB_")}
    return _ledger_shape(tmp_path_factory.mktemp("process"), nb201_table, "process", env)


@pytest.mark.slow
def test_docker_campaign_matches_process(tmp_path, nb201_table, cli_env, process_shape):
    why = _docker_ready()
    if why:
        pytest.skip(why)
    assert _ledger_shape(tmp_path, nb201_table, "docker", cli_env) == process_shape


@pytest.mark.slow
def test_ray_campaign_matches_process(tmp_path, nb201_table, cli_env, process_shape):
    pytest.importorskip("ray")
    shape = _ledger_shape(tmp_path, nb201_table, "ray", cli_env)
    assert shape == process_shape and len(shape) == 7
