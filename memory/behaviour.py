"""Behaviour vectors in the workspace's chromadb: one collection per task and vector
setting key and vector size (`behaviour-lm-<key>-2048`), L2 space, vectors given (no
embedder). The key is in the name, not a metadata filter: chromadb's `where` scans the
metadata (54 ms at 10k vectors, measured) where the plain HNSW query takes 6 ms. The index answers
"which earlier candidates computed nearly this?" in milliseconds over 10k vectors;
the exact tolerance test on the few neighbours is the gate's (archlab/behaviour.py).
Like the rest of the memory it is an index: the check results in the campaign
folders are the source of truth, and the gate logs what each lookup saw."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from archlab.memory.vector import VectorMemory


@dataclass
class Neighbour:
    campaign: str
    experiment: int
    behaviour: dict[str, Any]


class BehaviourIndex:
    def __init__(self, memory: VectorMemory, task: str) -> None:
        self.memory, self.task = memory, task
        self._cols: dict[tuple[str, int], Any] = {}

    def collection(self, key: str, size: int) -> Any:
        if (key, size) not in self._cols:
            name = f"behaviour-{re.sub(r'[^A-Za-z0-9]', '_', self.task)}-{key}-{size}"
            self._cols[key, size] = self.memory.client().get_or_create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "l2"}})
        return self._cols[key, size]

    def add(self, campaign: str, experiment: int, key: str, behaviour: dict[str, Any]) -> None:
        """Idempotent (a step re-run after a kill upserts the same id)."""
        values = behaviour["values"]
        meta = {"campaign": campaign, "experiment": experiment, "key": key,
                "params": int(behaviour.get("params") or 0), "shape": json.dumps(behaviour.get("shape"))}
        with self.memory.writing():
            self.collection(key, len(values)).upsert(ids=[f"{campaign}:{experiment}"], embeddings=[values],
                                                 metadatas=[meta], documents=[""])

    def stored(self, campaign: str, experiments: list[int], key: str, size: int) -> set[int]:
        """Which of a campaign's experiments have a vector here (ids only: 2 ms for 100)."""
        if not experiments:
            return set()
        got = self.collection(key, size).get(ids=[f"{campaign}:{e}" for e in experiments], include=[])["ids"]
        return {int(i.rsplit(":", 1)[1]) for i in got}

    def nearest(self, key: str, behaviour: dict[str, Any], k: int = 8, campaign: str | None = None) -> list[Neighbour]:
        """The k nearest stored vectors of the same key and size (of one campaign, if given: other
        campaigns' copies of a baseline must not crowd its twin out), nearest first (ties by id)."""
        values = behaviour["values"]
        col = self.collection(key, len(values))
        n = col.count()
        if n == 0:
            return []
        where = {"campaign": campaign} if campaign else None
        r = col.query(query_embeddings=[values], n_results=min(k, n), where=where,
                      include=["metadatas", "embeddings", "distances"])
        rows = sorted(zip(r["distances"][0], r["ids"][0], r["metadatas"][0], r["embeddings"][0], strict=True),
                      key=lambda t: (round(float(t[0]), 12), t[1]))
        return [_neighbour(m, emb) for _, _, m, emb in rows]


def _neighbour(meta: dict[str, Any], values: Any) -> Neighbour:
    return Neighbour(meta["campaign"], int(meta["experiment"]), {"values": [float(v) for v in values],
                     "params": meta["params"], "shape": json.loads(meta["shape"])})
