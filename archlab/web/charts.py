"""The page's figures: the report's matplotlib plots drawn as SVG, each cached until the
campaign's ledger moves on (its newest event), so a page of a finished campaign costs one
drawing per figure and a live one a drawing per change."""
from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from archlab.analysis import plots
from archlab.analysis.campaign_reader import CampaignReader

KINDS = ("best_experiments", "best_compute", "distribution", "lineage", "verified")
_draw_lock = threading.Lock()  # pyplot's state is global: one drawing at a time


class Charts:
    def __init__(self, size: int = 128) -> None:
        self._cache: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._size = size
        self._tmp = Path(tempfile.mkdtemp(prefix="archlab-serve-"))  # never the workspace: serving is read-only

    def get(self, view: CampaignReader, kind: str, exp_id: int | None = None) -> bytes | None:
        key = (view.id, kind, exp_id, view.ledger.last_event_seq())
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with _draw_lock:
            path = self._draw(view, kind, exp_id, self._tmp / f"{kind}.svg")
            svg = path.read_bytes() if path is not None else None
            if path is not None:
                path.unlink(missing_ok=True)
        if svg is not None:
            self._cache[key] = svg
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return svg

    def _draw(self, view: CampaignReader, kind: str, exp_id: int | None, path: Path) -> Path | None:
        base = view.best(origin=("baseline",))
        base_score = view.value(base) if base else None
        if kind in ("best_experiments", "best_compute"):
            xs, ys, label = view.progress("experiments" if kind == "best_experiments" else "compute")
            if not xs:
                return None
            return plots.best_so_far(path, xs, ys, metric=view.metric, higher=view.higher, xlabel=label,
                                     baseline=base_score, title=f"best {view.metric} against {label}")
        if kind == "distribution":
            groups: dict[str, list[float]] = {}
            for e in view.rows:
                v = view.value(e) if e.status == "done" else None
                if v is not None:
                    groups.setdefault((e.proposal or {}).get("arm") or e.origin, []).append(v)
            return plots.distribution(path, groups, metric=view.metric) if groups else None
        if kind == "lineage":
            nodes = [{"id": e.id, "parent": e.parent, "score": view.value(e), "origin": e.origin, "name": e.name}
                     for e in view.rows if e.status in ("done", "failed")]
            return plots.lineage(path, nodes, metric=view.metric, higher=view.higher) if nodes else None
        if kind == "verified":
            from archlab.web.views import findings

            f = findings(view)
            rows = [r for r in (f or {}).get("rows", []) if r["mean"] is not None]
            if not rows:
                return None
            half = [r["half"] or 0.0 for r in rows]
            return plots.verified(path, [r["label"] for r in rows], [r["mean"] for r in rows],
                                  [r["mean"] - h for r, h in zip(rows, half, strict=True)],
                                  [r["mean"] + h for r, h in zip(rows, half, strict=True)],
                                  [r["role"] for r in rows], metric=view.metric, higher=view.higher)
        if kind == "curves" and exp_id is not None:
            e = view.get(exp_id)
            if e is None or not view.curves(e):
                return None
            series = {f"#{e.id} {e.name}": view.curves(e)}
            for b in view.ranked(origin=("baseline",)):
                if b.id != e.id and view.curves(b):
                    series[f"baseline #{b.id} {b.name}"] = view.curves(b)
            return plots.curves(path, series, title=f"#{e.id} (solid) against the baselines (dashed)")
        return None
