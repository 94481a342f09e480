"""The vector memory: offline embeddings, chromadb under the workspace, indexing
the workspace's ledgers, notes, and the `archlab memory` commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archlab.campaign import Campaign
from archlab.config import load_config
from archlab.memory.embeddings import code_vector, cosine, describe_embeddings, get_embedder
from archlab.memory.vector import VectorMemory, chunk_text, lesson


@pytest.fixture(scope="session")
def minilm():
    """One MiniLM per test session (loading sentence-transformers costs seconds)."""
    return get_embedder("minilm")


def test_minilm_loads_offline_and_embeds_meaning(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a, b, c = minilm.embed(["linear attention whose state decays over time",
                            "an attention variant with an exponentially decaying memory of past tokens",
                            "the learning rate schedule of the optimiser"])
    assert len(a) == 384 and abs(cosine(a, a) - 1) < 1e-5
    assert cosine(a, b) > cosine(a, c) + 0.2


def test_hash_embedder_is_explicit_and_code_vectors_are_stable_across_processes():
    h = get_embedder("hash")
    assert h.embed(["same text"]) == h.embed(["same text"]) and "no semantics" in h.label
    code = "def cell(x0, ops):\n    return ops.nor_conv_3x3(x0)\n"
    here = code_vector(code)
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    there = json.loads(subprocess.run(
        [sys.executable, "-c", f"import json; from archlab.memory.embeddings import code_vector; "
                               f"print(json.dumps(code_vector({code!r})))"],
        capture_output=True, text=True, env=env, check=True).stdout)
    assert max(abs(x - y) for x, y in zip(here, there, strict=True)) < 1e-9


def test_describe_embeddings_for_doctor(minilm):
    cfg = load_config(None, env={}, overrides={})
    assert "all-MiniLM-L6-v2" in describe_embeddings(cfg) and "loads, 384 dims" in describe_embeddings(cfg)
    bad = load_config(None, env={}, overrides={"memory": {"embeddings": "/no/such/model"}})
    assert "no such model folder" in describe_embeddings(bad)
    hashed = load_config(None, env={}, overrides={"memory": {"embeddings": "hash"}})
    assert "no semantics" in describe_embeddings(hashed)


@pytest.fixture
def offline_campaign(tmp_path, nb201_table) -> Campaign:
    cfg = load_config(None, env={}, overrides={
        "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
        "budget": {"experiments": 4}, "search": {"strategy": "random"}, "memory": {"embeddings": "hash"}})
    campaign = Campaign.create(cfg)
    campaign.run()
    return campaign


def test_an_offline_campaign_opens_no_vector_store(offline_campaign):
    assert offline_campaign.ctx.memory._client is None  # indexed later, by whoever reads
    assert not (offline_campaign.folder.root.parent / "memory").exists()


def test_sync_indexes_finished_experiments_once_and_persists(offline_campaign, tmp_path):
    ws = offline_campaign.folder.root.parent
    mem = VectorMemory(ws / "memory", embeddings="hash")
    assert mem.sync_workspace(ws, "nb201") == 7  # 3 baselines + 4
    assert mem.sync_workspace(ws, "nb201") == 0
    items = mem.get("experiments", filters={"campaign": offline_campaign.folder.id}, task="nb201")
    assert len(items) == 7 and {it.meta["task"] for it in items} == {"nb201"}
    row = offline_campaign.ledger.get(1)
    first = next(it for it in items if it.meta["experiment"] == 1)
    assert first.meta["score"] == row.score and first.meta["status"] == "done" and first.meta["name"] == row.name
    assert "calls ops." in first.meta["summary"] and json.loads(first.meta["metrics"]) == row.metrics
    assert mem.stats()["code"] == 7 and mem.stats()["insights"] == 0  # offline analyses are not lessons
    mem.close()
    again = VectorMemory(ws / "memory", embeddings="hash")  # a new process would see the same
    assert again.stats()["experiments"] == 7 and again.sync(offline_campaign.folder.root) == 0
    hit = again.query("code", code_vector(Path(row.code_path).read_text()), 1, task="nb201")
    assert hit[0].id == f"{offline_campaign.folder.id}:1" and hit[0].similarity > 0.999
    # one collection per kind, embedder and task: vectors of two models never mix, and no task filter is needed
    assert "experiments-hash384-nb201" in [c.name for c in again.client().list_collections()]
    assert again.tasks() == ["nb201"]


def test_a_replay_folder_is_not_indexed_twice(offline_campaign):
    ws = offline_campaign.folder.root.parent
    copy = ws / f"{offline_campaign.folder.id}-replay"
    copy.mkdir()
    for name in ("config.json", "ledger.sqlite"):
        (copy / name).write_bytes((offline_campaign.folder.root / name).read_bytes())
    (copy / "replay.json").write_text(json.dumps({"replay_of": offline_campaign.folder.id}))
    mem = VectorMemory(ws / "memory", embeddings="hash")
    assert mem.sync_workspace(ws, "nb201") == 7


def test_notes_are_chunked_searchable_and_replaced(tmp_path):
    mem = VectorMemory(tmp_path / "memory", embeddings="hash")
    paper = tmp_path / "paper.md"
    paper.write_text("# Gated DeltaNet\n\nThe delta rule with a gate on the state.\n\n" + "Filler sentence. " * 150)
    (added,) = mem.add_notes([paper])
    assert added[1] >= 2 and all(len(c) <= 1200 for c in chunk_text(paper.read_text()))
    hit = mem.query("notes", mem.embed(["delta rule gate state"])[0], 1)
    assert "delta rule" in hit[0].text and hit[0].meta["title"] == "paper.md"
    paper.write_text("Only one short paragraph now.")
    mem.add_notes([paper])
    assert mem.stats()["notes"] == 1
    binary = tmp_path / "x.pdf"
    binary.write_bytes(b"%PDF\x00\x01")
    with pytest.raises(ValueError, match="not a text file"):
        mem.add_notes([binary])


def test_lesson_is_the_analysts_last_line():
    assert lesson("It worked.\nLesson: keep the shortcut.") == "keep the shortcut."
    assert lesson("No marker here.") == "No marker here."
    assert lesson("  ") is None


def test_memory_cli_add_stats_search(tmp_path, offline_campaign):
    from typer.testing import CliRunner

    from archlab.cli.memory import app

    ws = str(offline_campaign.folder.root.parent)
    env = {"ARCHLAB_MEMORY_EMBEDDINGS": "hash"}
    note = tmp_path / "note.txt"
    note.write_text("Avoid pooling on the first edge: it lost accuracy every time.")
    runner = CliRunner()
    res = runner.invoke(app, ["add", str(note), "--workspace", ws], env=env)
    assert res.exit_code == 0 and "1 chunk" in res.output, res.output
    res = runner.invoke(app, ["stats", "--json", "--workspace", ws], env=env)
    stats = json.loads(res.stdout)
    assert stats["experiments"] == 7 and stats["notes"] == 1 and stats["tasks"] == {"nb201": 7}
    res = runner.invoke(app, ["search", "pooling on the first edge", "--json", "--workspace", ws], env=env)
    found = json.loads(res.stdout)
    assert found[0]["kind"] in ("experiments", "notes") and any(r["kind"] == "notes" for r in found)
    cell = Path(offline_campaign.ledger.get(2).code_path)
    res = runner.invoke(app, ["search", str(cell), "--code", "--json", "-k", "1", "--workspace", ws], env=env)
    assert json.loads(res.stdout)[0]["ref"].endswith("#2")
    res = runner.invoke(app, ["search", "x", "--kind", "bogus", "--workspace", ws], env=env)
    assert res.exit_code == 2


def test_memory_cli_imports_nothing_heavy():
    code = ("import sys, archlab.cli.memory; heavy = [m for m in ('chromadb', 'torch', 'sentence_transformers', "
            "'litellm') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_team_memory_on_a_chromadb_server(tmp_path, nb201_table):
    """`[memory] url`: a campaign pushes its experiments to the server when it ends."""
    import shutil
    import socket
    import time

    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    if chroma is None:
        pytest.skip("the chroma server CLI is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([chroma, "run", "--path", str(tmp_path / "srv"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        mem = VectorMemory(url=url, embeddings="hash")
        for _ in range(100):  # ready in a second or two
            try:
                mem.client().heartbeat()
                break
            except Exception:  # noqa: BLE001
                mem.close()
                time.sleep(0.1)
        cfg = load_config(None, env={}, overrides={
            "workspace": str(tmp_path / "runs"), "task": {"name": "nb201", "table": str(nb201_table)},
            "budget": {"experiments": 2}, "search": {"strategy": "random", "baselines": False},
            "memory": {"embeddings": "hash", "url": url}})
        campaign = Campaign.create(cfg)
        campaign.run()
        assert mem.stats()["experiments"] == 2 and mem.stats()["tasks"] == {"nb201": 2}
        assert not (tmp_path / "runs" / "memory").exists()
    finally:
        server.terminate()
        server.wait(timeout=10)
