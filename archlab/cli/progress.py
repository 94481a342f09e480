"""Live campaign progress: done / in flight / best so far / spend."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def describe(snap: dict[str, Any]) -> str:
    if "verify" in snap:  # the verification stage, after exploration
        v = snap["verify"]
        line = f"verification at preset {v['preset']}: {v['done']}/{v['total']} runs"
        for subject, event in sorted(v.get("live", {}).items())[:4]:
            if "loss" in event:
                line += f" | {subject} step {event.get('step', '')} loss {event['loss']:.3f}"
        return line
    counts, spend, best = snap["counts"], snap["spend"], snap["best"]
    done = counts.get("campaign.done", 0) + counts.get("campaign.failed", 0)
    line = (f"{done}/{snap['budget']} done ({counts.get('failed', 0)} failed, {counts.get('reused', 0)} duplicates"
            + (f", {counts['cached']} cached" if counts.get("cached") else "")
            + f"), {snap['in_flight']} in flight")
    if best:
        line += f" | best #{best['id']} {best['score']:.4f}"
    line += f" | {int(spend['tokens'])} tok ${spend['usd']:.3f} | {spend['wall_s']:.0f} s"
    for exp, event in sorted(snap.get("live", {}).items())[:4]:
        if "loss" in event:
            line += (f" | #{exp} {event.get('step')} step {event.get('iter', event.get('i', ''))} "
                     f"loss {event['loss']:.3f}")
    return line


@contextmanager
def live_progress(console: Any, enabled: bool = True) -> Iterator[Callable[[dict[str, Any]], None]]:
    if not enabled:
        last = {"done": -1}

        def plain(snap: dict[str, Any]) -> None:  # one line per finished experiment, for logs and pipes
            done = (snap["verify"]["done"] + 0.5 if "verify" in snap  # a float: never equal to an exploration count
                    else sum(v for k, v in snap["counts"].items() if k in ("done", "failed", "duplicate")))
            if done != last["done"]:
                last["done"] = done
                console.print(describe(snap), highlight=False)

        yield plain
        return
    from rich.status import Status

    with Status("starting...", console=console) as status:
        yield lambda snap: status.update(describe(snap))
