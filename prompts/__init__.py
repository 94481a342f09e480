"""Prompt templates: every prompt an agent sends lives here as a jinja2 `*.j2` file."""

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIR = Path(__file__).parent


def _json(value: Any) -> str:
    # jinja's own `tojson` HTML-escapes <, > and &, which would garble code in a prompt.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["json"] = _json
    return env


def render(template_name: str, **context: Any) -> str:
    """Render prompts/<template_name> (e.g. "feedback.j2") with `context`."""
    return environment().get_template(template_name).render(**context)


def template_source_hash(name: str) -> str:
    """sha256 of a template's source, so replay can tell that a prompt changed."""
    return hashlib.sha256((TEMPLATE_DIR / name).read_bytes()).hexdigest()
