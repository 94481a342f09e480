"""The vector memory: chromadb, embedded under the workspace (runs/memory) and
shared by its campaigns, or a chromadb server (`[memory] url`) shared by a team.

It is an index, not a source of truth: the ledgers are. Finished experiments
are indexed from the workspace's ledgers when the memory is about to be read
(`sync`), in one batch, so an offline campaign that never reads it pays
nothing and a kill can never leave the two disagreeing for long.

Collections, one per kind, embedder and task (`experiments-minilm-nb201`): a
task's memories need no metadata filter, and switching embedders never mixes
vectors of different models:
  experiments  one per finished experiment: the proposal as the document,
               outcome, metrics, code summary and analysis as metadata
  code         the candidate's code, with its structural vector (gate, exemplars)
  insights     the analyst's lesson from each analysed experiment (LLM campaigns)
  notes        papers and notes the user adds (`archlab memory add FILE...`), chunked;
               one collection for all tasks (metadata `task`: "" = every task)
Ids: "<campaign>:<experiment>" for the first three, "note:<sha>:<chunk>" for notes.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.memory.embeddings import (
    CODE_KEY,
    Embedder,
    chroma_function,
    chunk_text,
    code_summary,
    code_vector,
    get_embedder,
)

KINDS = ("experiments", "code", "insights", "notes")
BATCH = 2000          # chromadb takes at most 5,461 records per call
CODE_CHARS = 30_000   # code kept per experiment


@dataclass
class Item:
    """One memory: its id, document, metadata and (when asked for) vector."""

    id: str
    kind: str
    text: str
    meta: dict[str, Any]
    similarity: float | None = None
    vector: list[float] | None = field(default=None, repr=False)


def where(**conds: Any) -> dict[str, Any] | None:
    """chromadb's filter: equality on each given field, None values ignored."""
    parts = [{k: v} for k, v in conds.items() if v is not None]
    return None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}


def task_setting(task: dict[str, Any]) -> str:
    """Scores are comparable between campaigns with the same task options."""
    return hashlib.sha256(json.dumps(task, sort_keys=True, default=str).encode()).hexdigest()[:10]


def lesson(analysis: str | None) -> str | None:
    """The analyst's lesson: the text after its last `Lesson:`, else the analysis itself."""
    if not analysis or not analysis.strip():
        return None
    m = list(re.finditer(r"(?im)^\W*lesson\s*:\s*", analysis))
    text = analysis[m[-1].end():] if m else analysis
    return " ".join(text.split())[:600] or None


def _campaign_info(root: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((root / "config.json").read_text())
    except (OSError, ValueError):
        return None
    task = cfg.get("task") or {}
    search, llm = cfg.get("search") or {}, cfg.get("llm") or {}
    strategy = search.get("strategy", "auto")
    if strategy == "auto":
        strategy = "llm" if llm.get("model") else "evolution"
    skip = 0
    if (root / "replay.json").exists():  # a replay repeats its original: index only what a fork adds
        import sqlite3

        try:
            original = root.parent / json.loads((root / "replay.json").read_text())["replay_of"] / "ledger.sqlite"
            with sqlite3.connect(f"file:{original}?mode=ro", uri=True) as db:
                skip = db.execute("SELECT COALESCE(MAX(id), 0) FROM experiments").fetchone()[0]
        except (OSError, ValueError, KeyError, sqlite3.Error):
            return None
    return {"campaign": root.name, "task": task.get("name", ""), "setting": task_setting(task),
            "strategy": strategy, "skip": skip}


class VectorMemory:
    """Opened lazily: constructing one imports nothing heavy."""

    def __init__(self, path: Path | None = None, url: str | None = None, embeddings: str = "minilm") -> None:
        if path is None and url is None:
            raise ValueError("VectorMemory needs a path or a url")
        self.path, self.url, self.spec = (Path(path) if path else None), url, embeddings
        self._client: Any = None
        self._cols: dict[str, Any] = {}
        self._known: dict[tuple[str, str], set[int]] = {}  # (kind, campaign) -> indexed experiment ids
        self._workspace_done: set[tuple[str, str]] = set()  # (kind, task) synced from every campaign
        self._lock = threading.RLock()

    @classmethod
    def for_config(cls, config: Any, workspace: Path) -> VectorMemory:
        mem = config.memory
        path = Path(mem.path) if mem.path else Path(workspace) / "memory"
        return cls(path=None if mem.url else path, url=mem.url, embeddings=mem.embeddings)

    # -- opening ------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        return get_embedder(self.spec)

    @property
    def opened(self) -> bool:
        """Whether the chromadb client was opened (nothing is, until an agent reads the memory)."""
        return self._client is not None

    @property
    def where_from(self) -> str:
        return self.url or str(self.path)

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import chromadb
                from chromadb.config import Settings

                settings = Settings(anonymized_telemetry=False)
                if self.url:
                    from urllib.parse import urlparse

                    u = urlparse(self.url if "://" in self.url else f"http://{self.url}")
                    self._client = chromadb.HttpClient(host=u.hostname or "localhost", port=u.port or 8000,
                                                       ssl=u.scheme == "https", settings=settings)
                else:
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._client = chromadb.PersistentClient(str(self.path), settings=settings)
            return self._client

    def name(self, kind: str, task: str | None = None) -> str:
        """One collection per kind, embedder and task (notes: one for all tasks), so a
        task's memories need no metadata filter: a filtered query over 10k costs ~20 ms, a plain one ~2."""
        key = CODE_KEY if kind == "code" else self.embedder.key
        return f"{kind}-{key}" if kind == "notes" else f"{kind}-{key}-{re.sub(r'[^A-Za-z0-9]', '_', task or 'any')}"

    def collection(self, kind: str, task: str | None = None) -> Any:
        with self._lock:
            name = self.name(kind, task)
            if name not in self._cols:
                fn = chroma_function(CODE_KEY if kind == "code" else self.spec)
                self._cols[name] = self.client().get_or_create_collection(
                    name, embedding_function=fn, configuration={"hnsw": {"space": "cosine"}})
            return self._cols[name]

    def tasks(self) -> list[str]:
        """The tasks the memory holds experiments of."""
        prefix = f"experiments-{self.embedder.key}-"
        return sorted(c.name[len(prefix):] for c in self.client().list_collections() if c.name.startswith(prefix))

    def close(self) -> None:
        with self._lock:
            if self._client is not None and hasattr(self._client, "close"):
                try:
                    self._client.close()
                except Exception:  # noqa: BLE001 - closing must never fail a campaign
                    pass
            self._client, self._cols, self._known, self._workspace_done = None, {}, {}, set()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Writers of an embedded memory take a file lock: campaigns of one workspace may run at once."""
        if self.path is None:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".write.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- writing --------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embedder.embed(list(texts))

    def upsert(self, kind: str, ids: list[str], docs: list[str], metas: list[dict[str, Any]],
               vectors: list[list[float]] | None = None, task: str | None = None) -> None:
        if not ids:
            return
        if vectors is None:
            vectors = [code_vector(d) for d in docs] if kind == "code" else self.embed(docs)
        col = self.collection(kind, task)
        with self.writing():
            for i in range(0, len(ids), BATCH):
                s = slice(i, i + BATCH)
                col.upsert(ids=ids[s], documents=docs[s], metadatas=metas[s], embeddings=vectors[s])

    def _indexed(self, kind: str, campaign: str, task: str) -> set[int]:
        key = (kind, campaign)
        if key not in self._known:
            got = self.collection(kind, task).get(where={"campaign": campaign}, include=[])
            self._known[key] = {int(i.rsplit(":", 1)[1]) for i in got["ids"]}
        return self._known[key]

    def sync(self, root: Path, ledger: Any = None, kinds: Sequence[str] = ("experiments", "code", "insights")) -> int:
        """Index a campaign folder's finished experiments that are not indexed yet.
        Returns how many experiments were added."""
        root = Path(root)
        info = _campaign_info(root)
        if info is None or not (root / "ledger.sqlite").exists():
            return 0
        with self._lock:
            own = ledger is None
            if own:
                from archlab.memory.ledger import Ledger

                ledger = Ledger(root / "ledger.sqlite")
            try:
                rows = [e for e in ledger.experiments(status=["done", "failed"]) if e.id > info["skip"]]
            finally:
                if own:
                    ledger.close()
            added = 0
            for kind in kinds:
                if kind == "insights" and info["strategy"] != "llm":
                    continue  # an offline analysis is arithmetic, not a lesson
                known = self._indexed(kind, info["campaign"], info["task"])
                new = [e for e in rows if e.id not in known]
                recs = [r for r in (_record(kind, e, info) for e in new) if r is not None]
                if recs:
                    self.upsert(kind, [r[0] for r in recs], [r[1] for r in recs], [r[2] for r in recs],
                                task=info["task"])
                known.update(e.id for e in new)
                added = max(added, len(recs))
            return added

    def sync_workspace(self, workspace: Path, task: str | None = None,
                       kinds: Sequence[str] = ("experiments", "code", "insights")) -> int:
        """Index every campaign of a workspace (once per campaign and process is cheap after)."""
        from archlab.campaign_folder import list_campaigns

        total = 0
        for folder in list_campaigns(Path(workspace)):
            info = _campaign_info(folder.root)
            if info is not None and (task is None or info["task"] == task):
                total += self.sync(folder.root, kinds=kinds)
        return total

    def refresh(self, root: Path, ledger: Any, task: str,
                kinds: Sequence[str] = ("experiments", "code", "insights")) -> None:
        """Before a read: index this campaign's newly finished experiments and, once
        per process, every other campaign of the workspace on the same task."""
        with self._lock:
            todo = [k for k in kinds if (k, task) not in self._workspace_done]
            if todo:
                self.sync_workspace(Path(root).parent, task, todo)
                self._workspace_done.update((k, task) for k in todo)
            self.sync(root, ledger, kinds)

    def add_notes(self, paths: Sequence[Path], task: str = "") -> list[tuple[Path, int]]:
        """Chunk and index text files (papers as text, notes, markdown). Re-adding a file replaces it."""
        out = []
        for path in map(Path, paths):
            raw = path.read_bytes()
            if b"\x00" in raw[:4096]:
                raise ValueError(f"{path} is not a text file (convert PDFs to text first, e.g. pdftotext)")
            text = raw.decode("utf-8", errors="replace")
            digest = hashlib.sha256(raw).hexdigest()[:12]
            pieces = chunk_text(text)
            with self._lock:
                col = self.collection("notes")
                old = col.get(where={"source": str(path.resolve())}, include=[])["ids"]
                if old:
                    with self.writing():
                        col.delete(ids=old)
                metas = [{"source": str(path.resolve()), "title": path.name, "chunk": i, "task": task,
                          "sha": digest} for i in range(len(pieces))]
                self.upsert("notes", [f"note:{digest}:{i}" for i in range(len(pieces))], pieces, metas)
            out.append((path, len(pieces)))
        return out

    # -- reading ------------------------------------------------------------------------
    def _cols_for(self, kind: str, task: str | None) -> list[Any]:
        if kind == "notes":
            return [self.collection("notes")]
        return [self.collection(kind, t) for t in ([task] if task else self.tasks())]

    def query(self, kind: str, vector: Sequence[float], k: int, filters: dict[str, Any] | None = None,
              vectors: bool = False, task: str | None = None) -> list[Item]:
        """The k nearest memories of `task` (None: of every task), most similar first;
        ties broken by id (deterministic)."""
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if vectors else [])
        items: list[Item] = []
        for col in self._cols_for(kind, task):
            n = col.count()
            if n == 0 or k <= 0:
                continue
            r = col.query(query_embeddings=[list(vector)], n_results=min(k, n), where=filters, include=include)
            embs = r.get("embeddings")
            items += [Item(i, kind, d or "", m or {}, round(1.0 - float(dist), 6),
                           list(map(float, embs[0][j])) if vectors and embs is not None else None)
                      for j, (i, d, m, dist) in enumerate(zip(r["ids"][0], r["documents"][0], r["metadatas"][0],
                                                              r["distances"][0], strict=False))]
        return sorted(items, key=lambda it: (-(it.similarity or 0.0), it.id))[:max(k, 0)]

    def get(self, kind: str, ids: Sequence[str] | None = None, filters: dict[str, Any] | None = None,
            vectors: bool = False, task: str | None = None) -> list[Item]:
        """Items by id or filter, of `task` (None: of every task), in id order."""
        include = ["documents", "metadatas"] + (["embeddings"] if vectors else [])
        if ids is not None and not ids:
            return []
        items: list[Item] = []
        for col in self._cols_for(kind, task):
            r = col.get(ids=list(ids) if ids is not None else None, where=filters, include=include)
            embs = r.get("embeddings")
            items += [Item(i, kind, d or "", m or {}, None,
                           list(map(float, embs[j])) if vectors and embs is not None else None)
                      for j, (i, d, m) in enumerate(zip(r["ids"], r["documents"], r["metadatas"], strict=False))]
        return sorted(items, key=lambda it: it.id)

    def stats(self) -> dict[str, Any]:
        tasks = self.tasks()
        out: dict[str, Any] = {"where": self.where_from, "embeddings": self.spec,
                               "notes": self.collection("notes").count()}
        for kind in KINDS[:3]:
            out[kind] = sum(self.collection(kind, t).count() for t in tasks)
        out["tasks"] = {t: self.collection("experiments", t).count() for t in tasks}
        return out


def proposal_text(proposal: dict[str, Any] | None) -> str:
    """What an idea is, as embedded: name, motivation, design."""
    p = proposal or {}
    return "\n".join(str(p.get(k) or "") for k in ("name", "motivation", "design")).strip()


def _read_code(e: Any) -> str | None:
    if e.code_path:
        try:
            return Path(e.code_path).read_text()[:CODE_CHARS]
        except OSError:
            pass
    code = (e.proposal or {}).get("code")
    return code[:CODE_CHARS] if code else None


def _record(kind: str, e: Any, info: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(id, document, metadata) of experiment `e` for collection `kind`, or None."""
    base = {"campaign": info["campaign"], "experiment": e.id, "task": info["task"], "setting": info["setting"],
            "status": e.status, "name": (e.name or f"#{e.id}")[:200], "origin": e.origin,
            "finished": float(e.finished or e.created or 0.0)}
    if e.score is not None and e.status == "done":
        base["score"] = float(e.score)
    uid = f"{info['campaign']}:{e.id}"
    if not proposal_text(e.proposal):
        return None  # nothing was proposed (the model never answered): nothing to learn from
    if kind == "experiments":
        code = _read_code(e)
        meta = {**base, "parent": e.parent if e.parent is not None else -1, "strategy": info["strategy"],
                "reason": (e.failure_reason or "")[:600], "analysis": (e.analysis or "")[:1500],
                "motivation": str((e.proposal or {}).get("motivation") or "")[:600],
                "design": str((e.proposal or {}).get("design") or "")[:600],
                "summary": code_summary(code) if code else "", "has_code": code is not None,
                "ast_hash": e.ast_hash or "",
                "metrics": json.dumps(e.metrics or {}, sort_keys=True, default=str)[:2000],
                "genome": json.dumps((e.proposal or {}).get("genome"), sort_keys=True)}
        return uid, proposal_text(e.proposal) or (e.name or uid), meta
    if kind == "code":
        code = _read_code(e)
        return (uid, code, base) if code else None
    if kind == "insights":  # a lesson is the analyst's, on a proposal: baselines' analyses are arithmetic
        text = lesson(e.analysis) if e.status == "done" and e.origin == "campaign" else None
        return (uid, text, base) if text else None
    return None
