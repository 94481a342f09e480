"""Task-pack registry. Packs are imported only when asked for (torch is slow to import)."""
from __future__ import annotations

import importlib
from typing import Any

from archlab.tasks.base import Candidate, DesignSpace, TaskOptionError, TaskPack

TASKS: dict[str, tuple[str, str]] = {
    "nb201": ("archlab.tasks.nb201", "NAS-Bench-201 cell as code; evaluation is a lookup in a table you supply"),
    "lm": ("archlab.tasks.lm", "causal token mixer inside a small byte-level language model (Shakespeare)"),
    "noise": ("archlab.tasks.noise", "synthetic: the metric is seeded noise plus a planted effect; calibrates "
              "verification"),
}


def get_task(name: str, options: dict[str, Any] | None = None, preset: str | None = None) -> TaskPack:
    """Build the task pack `name` (each pack module exposes `TASK`, its class)."""
    if name not in TASKS:
        raise TaskOptionError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))} (see `archlab tasks`)")
    module = importlib.import_module(TASKS[name][0])
    return module.TASK(options or {}, preset)


__all__ = ["TASKS", "Candidate", "DesignSpace", "TaskOptionError", "TaskPack", "get_task"]
