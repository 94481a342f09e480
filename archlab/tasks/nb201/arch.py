"""NAS-Bench-201 architecture strings and genomes (pure functions, no I/O).

A cell has 4 nodes and 6 edges j->i (0 <= j < i <= 3). The arch string lists
each node's input edges in order: |op~0|+|op~0|op~1|+|op~0|op~1|op~2|.
A genome is {"edges": [6 op names in that same order]}.
"""
from __future__ import annotations

import hashlib
from typing import Any

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (src, dst), arch-string order
SHORT: dict[str, str] = {"none": "n", "skip_connect": "sk", "nor_conv_1x1": "c1", "nor_conv_3x3": "c3",
                         "avg_pool_3x3": "p"}
N_ARCHS = len(OPS) ** len(EDGES)  # 15,625


def genome_to_arch(genome: dict[str, Any]) -> str:
    """{"edges": [6 ops]} -> |op~0|+|op~0|op~1|+|op~0|op~1|op~2|."""
    edges = list(genome.get("edges", []))
    if len(edges) != len(EDGES):
        raise ValueError(f"an NB201 genome has {len(EDGES)} edges, got {len(edges)}")
    bad = [op for op in edges if op not in OPS]
    if bad:
        raise ValueError(f"unknown op(s) {bad}; NB201 ops are: {', '.join(OPS)}")
    nodes = ["|" + "|".join(f"{op}~{src}" for op, (src, dst) in zip(edges, EDGES, strict=True) if dst == i) + "|"
             for i in (1, 2, 3)]
    return "+".join(nodes)


def arch_to_genome(arch: str) -> dict[str, Any]:
    """The inverse of genome_to_arch; raises ValueError naming what is wrong."""
    nodes = arch.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(f"an NB201 arch string has 3 nodes joined by '+', got {len(nodes)}: {arch!r}")
    edges: list[str] = []
    for i, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"node {i} of {arch!r} must be written |op~j|...|")
        parts = node[1:-1].split("|")
        if len(parts) != i:
            raise ValueError(f"node {i} of {arch!r} must have {i} input edge(s), got {len(parts)}")
        for j, part in enumerate(parts):
            op, _, src = part.partition("~")
            if op not in OPS or src != str(j):
                raise ValueError(f"edge {part!r} of node {i} in {arch!r} must be op~{j} with op in {', '.join(OPS)}")
            edges.append(op)
    return {"edges": edges}


def arch_fingerprint(arch: str) -> str:
    return hashlib.sha256(arch.encode()).hexdigest()


def short_name(genome: dict[str, Any]) -> str:
    """c3-c3-sk-p-c1-n: the six edges, abbreviated, in arch-string order."""
    return "-".join(SHORT[op] for op in genome["edges"])
