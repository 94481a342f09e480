"""Behaviour vectors: what a candidate computed on its task's fixed probes, compared
within a tolerance rather than by a hash of rounded floats.

A hash of `round(y, 4)` only matches computations that are bit-for-bit the same: the
same mixer written with `einsum` and with a broadcast multiply-and-sum differs by
~1e-7, and a few of ~70k values fall on the other side of a rounding boundary. Two
candidates behave the same when every value of every probe agrees within
`atol + rtol * |y|` (numpy's allclose, symmetric here); the `ratio` of the worst value
to its allowance says how far inside (<= 1) or outside the tolerance a pair is.

The harness (in the sandbox) returns {"values": [...], "params": n, "shape": [...],
"probes": k}: a fixed sample of its outputs on k probes (inputs of different length
and content, each after seeded init under two seeds). Only vectors of the same `key`
(task, preset, setting, interface) and size are compared.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Per task. Calibrated by benchmarks/dedup_rewrites.py: float32 reassociation
    noise of real rewrites against the smallest difference that matters."""

    rtol: float = 1e-5
    atol: float = 1e-6
    close: float = 1e4   # up to this ratio a pair is reported as behaviourally close (evidence, not refusal)

    def describe(self) -> str:
        return f"rtol {self.rtol:g}, atol {self.atol:g}"


@dataclass(frozen=True)
class Match:
    distance: float  # the largest |a - b| over every probed value
    ratio: float     # the largest |a - b| / (atol + rtol * max(|a|, |b|)): <= 1 is within tolerance
    within: bool
    close: bool

    def to_dict(self) -> dict[str, Any]:
        return {"distance": self.distance, "ratio": self.ratio, "within": self.within, "close": self.close}


def vector(behaviour: dict[str, Any]) -> np.ndarray:
    import numpy as np  # not at import: the CLI's start stays light

    return np.asarray(behaviour["values"], dtype=np.float64)


def comparable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same parameter count, output shape and probe layout: anything else behaves differently by construction."""
    return (a.get("params") == b.get("params") and list(a.get("shape") or []) == list(b.get("shape") or [])
            and len(a.get("values") or ()) == len(b.get("values") or ()) and bool(a.get("values")))


def compare(a: dict[str, Any], b: dict[str, Any], tol: Tolerance) -> Match | None:
    """How far apart two behaviour records are; None when they are not comparable."""
    if not comparable(a, b):
        return None
    import numpy as np

    x, y = vector(a), vector(b)
    diff = np.abs(x - y)
    allowance = tol.atol + tol.rtol * np.maximum(np.abs(x), np.abs(y))
    ratio = float(np.max(diff / allowance))
    return Match(distance=float(diff.max()), ratio=ratio, within=ratio <= 1.0, close=ratio <= tol.close)


def key(task: str, preset: str | None, options: dict[str, Any], interface: str) -> str:
    """Only candidates meeting the same contract under the same setting are compared."""
    blob = json.dumps({"task": task, "preset": preset, "options": options,
                       "interface": hashlib.sha256(interface.encode()).hexdigest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
