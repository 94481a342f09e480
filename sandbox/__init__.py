"""Sandbox backends: where candidate code runs (process, docker, ray)."""
from __future__ import annotations

import importlib
from typing import Any

from archlab.errors import ConfigError
from archlab.sandbox.base import Backend

BACKENDS: tuple[str, ...] = ("process", "docker", "ray")


def get_backend(name: str, **options: Any) -> Backend:
    """The backend called `name`, built with `options`; docker and ray import lazily."""
    if name == "process":
        from archlab.sandbox.process import ProcessBackend
        return ProcessBackend(**options)
    if name in ("docker", "ray"):
        try:
            module = importlib.import_module(f"archlab.sandbox.{name}")
        except ImportError as e:
            if e.name == f"archlab.sandbox.{name}":
                raise ConfigError(f"sandbox {name!r} is not available yet; "
                                  "use sandbox = \"process\"") from e
            raise ConfigError(f"sandbox {name!r} needs a package that is not installed "
                              f"({e}); install it or use sandbox = \"process\"") from e
        cls = getattr(module, f"{name.capitalize()}Backend")
        return cls(**options)
    raise ConfigError(f"unknown sandbox {name!r}; choose one of: {', '.join(BACKENDS)}")
