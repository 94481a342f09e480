"""What keeps the page safe to run: loopback by default, a token for any other host
(only its hash is kept), CSRF for the one route that spends, and the scrubbing of
secrets and host paths from whatever leaves the server."""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from archlab.errors import ArchlabError

LOOPBACK = ("127.0.0.1", "::1", "localhost")
TOKEN_COOKIE = "archlab_token"
CSRF_HEADER = "x-csrf-token"
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # a campaign folder's name; no "/", no ".."
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
SECRET_TEXT = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{12,}|\bhf_[A-Za-z0-9]{20,}|\bgh[pousr]_[A-Za-z0-9]{20,}")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def read_token_file(path: Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ArchlabError(f"--token-file {path}: {exc.strerror or exc}") from exc
    if len(token) < 16:
        raise ArchlabError(f"--token-file {path}: the token must be at least 16 characters (it has {len(token)})")
    return token


def token_matches(presented: str | None, token_hash: str) -> bool:
    return bool(presented) and hmac.compare_digest(digest(presented or ""), token_hash)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """The values of the environment's secret-looking variables (API keys, tokens): never sent."""
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)


class Scrubber:
    """Removes secrets and host paths from text about to leave the server: the values of the
    environment's secret variables, anything shaped like a provider key, and the workspace's
    absolute path (pages name files relative to it)."""

    def __init__(self, workspace: Path, environ: dict[str, str] | None = None) -> None:
        self.secrets = secret_values(environ)
        self.roots = sorted({str(Path(workspace)), str(Path(workspace).resolve())}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "[redacted]")
        text = SECRET_TEXT.sub("[redacted]", text)
        for root in self.roots:
            text = text.replace(root + "/", "").replace(root, "workspace")
        return text


def redact_config(value: object) -> object:
    """A campaign's config with every secret-named setting blanked (api keys in [llm], say)."""
    if isinstance(value, dict):
        return {k: ("[redacted]" if SECRET_NAME.search(str(k)) and v else redact_config(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_config(v) for v in value]
    return value
