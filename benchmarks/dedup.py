"""Precision, recall and latency of each layer of the duplicate gate, beside
NNGPT/LEMUR's whitespace-stripped MD5, on a labelled set made from real
candidates: the nb201 baselines and design-space renders, and the lm task's
baselines and renders.

    python benchmarks/dedup.py                      # nb201 + lm (lm fingerprints: baselines only)
    python benchmarks/dedup.py --lm-fingerprint all # every lm module through the sandboxed check
    python benchmarks/dedup.py --quick              # hashes and embeddings only, no sandbox

Each source module is paired with variants. True duplicates: reindented,
reformatted (ast.unparse), locals renamed, comments and docstrings changed,
independent statements reordered, an equal algebraic rewrite (x*2 -> 2*x,
a+b -> b+a), dead code added. True non-duplicates: one operation changed, one
constant changed, a statement moved into or out of a loop. The behaviour
fingerprint (exact hash) and behaviour vectors (within the task's tolerance) come
from the task harness's own check job, run in the process sandbox. Real rewrites
that are equal but not bit-equal: benchmarks/dedup_rewrites.py.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import io
import random
import re
import statistics
import sys
import tempfile
import time
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
SWAP = {"silu": "gelu", "gelu": "silu", "relu": "gelu", "elu": "selu", "sigmoid": "tanh", "tanh": "sigmoid",
        "softmax": "log_softmax", "exp": "sigmoid", "cumsum": "cumprod", "layer_norm": "rms_norm"}


# -- transforms: (code, rng) -> variant or None when not applicable ------------------------

def _string_lines(code: str) -> set[int]:
    """Lines that continue a multi-line string (their indentation is content)."""
    out: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            out.update(range(tok.start[0] + 1, tok.end[0] + 1))
    return out


def reindent(code: str, rng: random.Random) -> str:
    """Block indentation 4 -> 2 spaces (docstrings too; continuation lines inside
    brackets left alone), blank lines after each def and class, trailing spaces."""
    starts = {n.lineno for n in ast.walk(ast.parse(code)) if isinstance(n, ast.stmt)} | _string_lines(code)
    lines = []
    for n, line in enumerate(code.splitlines(), 1):
        body = line.lstrip(" ")
        if body and (n in starts or re.match(r"(else|elif|except|finally|case)\b|@|#", body)):
            line = " " * ((len(line) - len(body)) // 2) + body
        lines.append(line + "  " if body else line)
        if body.startswith(("def ", "class ")):
            lines.append("")
    return "\n".join(lines) + "\n"


def reformat(code: str, rng: random.Random) -> str:
    return ast.unparse(ast.parse(code)) + "\n"


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def rename(code: str, rng: random.Random) -> str | None:
    tree = ast.parse(code)
    keywords = {k.arg for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords if k.arg}
    edits: list[tuple[int, int, int, str]] = []  # (line, col, end_col, new)
    nested = {id(g) for f in _functions(tree) for g in _functions(f) if g is not f}
    for fn in [f for f in _functions(tree) if id(f) not in nested]:
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args if a.arg not in ("self", "cls")]
        local = {p for p in params if p not in keywords}
        local |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        new = {name: f"v{i}_{name[:1]}" for i, name in enumerate(sorted(local))}
        for n in ast.walk(fn):
            if isinstance(n, ast.Name) and n.id in new:
                edits.append((n.lineno, n.col_offset, n.end_col_offset, new[n.id]))
            elif isinstance(n, ast.arg) and n.arg in new and n in fn.args.posonlyargs + fn.args.args:
                edits.append((n.lineno, n.col_offset, n.col_offset + len(n.arg), new[n.arg]))
    return _apply(code, edits) if edits else None


def _apply(code: str, edits: list[tuple[int, int, int, str]]) -> str:
    lines = code.splitlines(keepends=True)
    for line, col, end, new in sorted(set(edits), reverse=True):
        raw = lines[line - 1].encode()
        lines[line - 1] = (raw[:col] + new.encode() + raw[end:]).decode()
    return "".join(lines)


def comments(code: str, rng: random.Random) -> str:
    tree = ast.parse(code)
    lines = code.splitlines()
    starts = sorted({n.lineno for n in ast.walk(tree) if isinstance(n, ast.stmt)} - _string_lines(code))
    docs = [n.body[0].value for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Module))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
            and isinstance(n.body[0].value.value, str)]
    for d in sorted(docs, key=lambda d: -d.lineno):  # docstrings rewritten
        indent = lines[d.lineno - 1][: len(lines[d.lineno - 1]) - len(lines[d.lineno - 1].lstrip())]
        lines[d.lineno - 1: d.end_lineno] = [f'{indent}"""Reworded documentation, same code."""']
    chosen = [n for n in starts if rng.random() < 0.4 and n <= len(lines)]
    for n in sorted(chosen, reverse=True):  # comments added
        indent = lines[n - 1][: len(lines[n - 1]) - len(lines[n - 1].lstrip())]
        lines.insert(n - 1, f"{indent}# {rng.choice(['why: keep it causal', 'TODO tune', 'see the paper'])}")
    return "\n".join(lines) + "\n"


def _names(node: ast.AST, ctx: type) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def reorder(code: str, rng: random.Random) -> str | None:
    """Swap two adjacent independent assignments (not in __init__: module order is init order)."""
    tree = ast.parse(code)
    pairs = []
    for fn in _functions(tree):
        if fn.name == "__init__":
            continue
        for block in [fn.body] + [n.body for n in ast.walk(fn) if isinstance(n, (ast.For, ast.While, ast.If))]:
            for a, b in zip(block, block[1:], strict=False):
                if not all(isinstance(s, ast.Assign) and all(isinstance(t, (ast.Name, ast.Tuple)) for t in s.targets)
                           for s in (a, b)):
                    continue
                wa, wb = _names(a, ast.Store), _names(b, ast.Store)
                if not (wa & (_names(b, ast.Load) | wb) or wb & _names(a, ast.Load)):
                    pairs.append((a, b))
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    lines = code.splitlines()
    la, lb = lines[a.lineno - 1: a.end_lineno], lines[b.lineno - 1: b.end_lineno]
    lines[a.lineno - 1: b.end_lineno] = lb + la
    return "\n".join(lines) + "\n"


def algebra(code: str, rng: random.Random) -> str | None:
    """Swap the operands of one commutative + or * (exact in IEEE arithmetic)."""
    tree = ast.parse(code)
    ok = (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.BinOp, ast.UnaryOp)
    cands = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Mult))
             and n.lineno == n.end_lineno and all(isinstance(s, ok) or (isinstance(s, ast.Constant)
                                                  and type(s.value) in (int, float)) for s in (n.left, n.right))]
    consts = [n for n in cands if isinstance(n.left, ast.Constant) or isinstance(n.right, ast.Constant)]
    if not cands:
        return None
    n = rng.choice(consts or cands)

    def seg(s: ast.expr) -> str | None:
        return f"({ast.get_source_segment(code, s)})" if isinstance(s, ast.BinOp) else ast.get_source_segment(code, s)

    op = "+" if isinstance(n.op, ast.Add) else "*"
    return _apply(code, [(n.lineno, n.col_offset, n.end_col_offset, f"{seg(n.right)} {op} {seg(n.left)}")])


def dead_code(code: str, rng: random.Random) -> str | None:
    tree = ast.parse(code)
    fn = (next((f for f in _functions(tree) if f.name in ("forward", "cell")), None)
          or next(iter(_functions(tree)), None))
    if fn is None:
        return None
    lines = code.splitlines()
    first = fn.body[0]
    indent = " " * first.col_offset
    lines.insert(first.lineno - 1, f"{indent}unused_scale = {rng.choice([3, 7, 0.25])}")
    return "\n".join(lines) + "\n\n\ndef _unused_helper(t):\n    return t * 2\n"


def op_changed(code: str, rng: random.Random) -> str | None:
    tree = ast.parse(code)
    if "def cell(" in code:  # nb201: another op on one edge
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in OPS]
        n = rng.choice(calls)
        new = rng.choice([o for o in OPS if o != n.attr])
    else:
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in SWAP]
        if not calls:
            return None
        n = rng.choice(calls)
        new = SWAP[n.attr]
    return _apply(code, [(n.end_lineno, n.end_col_offset - len(n.attr), n.end_col_offset, new)])


def constant_changed(code: str, rng: random.Random) -> str | None:
    tree = ast.parse(code)
    cands = [n for fn in _functions(tree) if fn.name != "__init__" for n in ast.walk(fn)
             if isinstance(n, ast.Constant) and type(n.value) in (int, float) and n.value not in (0, 1, -1)
             and abs(n.value) >= 1e-3]
    if not cands:
        return None
    n = rng.choice(cands)
    new = repr(n.value * 2) if isinstance(n.value, float) else repr(n.value + 1)
    return _apply(code, [(n.lineno, n.col_offset, n.end_col_offset, new)])


def loop_move(code: str, rng: random.Random) -> str | None:
    """Move the statement after a loop into its body, or its body's last statement out."""
    tree = ast.parse(code)
    lines = code.splitlines()
    options = []
    for block in [n.body for n in ast.walk(tree) if hasattr(n, "body") and isinstance(n.body, list)]:
        for i, s in enumerate(block):
            if not isinstance(s, (ast.For, ast.While)):
                continue
            body_indent = s.body[0].col_offset
            if i + 1 < len(block) and block[i + 1].lineno == block[i + 1].end_lineno:
                options.append(("into", s, block[i + 1], body_indent))
            last = s.body[-1]
            if len(s.body) > 1 and last.lineno == last.end_lineno and not isinstance(last, ast.Return):
                options.append(("out", s, last, s.col_offset))
    if not options:
        return None
    how, loop, stmt, indent = rng.choice(options)
    text = " " * indent + lines[stmt.lineno - 1].lstrip()
    del lines[stmt.lineno - 1]
    at = loop.end_lineno if how == "into" else loop.end_lineno - 1  # after the (shortened) loop
    lines.insert(at, text)
    return "\n".join(lines) + "\n"


DUPLICATES: dict[str, Callable] = {"reindented": reindent, "reformatted": reformat, "renamed": rename,
                                   "comments": comments, "reordered": reorder, "algebra": algebra,
                                   "dead code": dead_code}
DIFFERENT: dict[str, Callable] = {"op changed": op_changed, "constant changed": constant_changed,
                                  "loop move": loop_move}


# -- the labelled set ---------------------------------------------------------------------

def sources(n_nb201: int, n_lm: int) -> list[tuple[str, str, str]]:
    """(task, name, code) of real candidates: baselines and design-space renders."""
    from archlab.tasks.nb201 import NB201Space, NB201Task

    rng = random.Random(0)
    out = [("nb201", c.name, c.code) for c in NB201Task({"table": "x"}).seeds()]
    out += [("nb201", f"render{i}", NB201Space().render(NB201Space().sample(rng))) for i in range(n_nb201)]
    try:
        from archlab.tasks import get_task

        lm = get_task("lm", {}, "tiny")
        out += [("lm", c.name, c.code) for c in lm.seeds()]
        out += [("lm", f"render{i}", lm.space.render(lm.space.sample(rng))) for i in range(n_lm)]
    except Exception as exc:  # noqa: BLE001 - the lm pack may be absent
        print(f"(lm task unavailable: {exc})", file=sys.stderr)
    return out


def pairs(srcs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for task, name, code in srcs:
        for label, group in ((True, DUPLICATES), (False, DIFFERENT)):
            for kind, fn in group.items():
                rng = random.Random(f"{task}:{name}:{kind}")
                tries = 2 if (task == "nb201" and kind == "op changed") else 1
                for _try in range(tries):
                    try:
                        variant = fn(code, rng)
                        ast.parse(variant) if variant else None
                    except (SyntaxError, ValueError, IndexError):
                        variant = None
                    if variant and variant != code:
                        out.append({"task": task, "source": name, "kind": kind, "dup": label, "a": code, "b": variant})
    return out


# -- the layers ---------------------------------------------------------------------------

def lemur_md5(code: str) -> str:
    """NNGPT/LEMUR: every whitespace character removed, then MD5."""
    return hashlib.md5(re.sub(r"\s+", "", code).encode()).hexdigest()


def fingerprints(codes: dict[str, str], lm_ok: set[str]) -> dict[str, dict | None]:
    """The task harness's check report (fingerprint, behaviour), from its real check job in the process sandbox."""
    from archlab.agents.context import job_limits
    from archlab.config import SandboxConfig
    from archlab.sandbox.process import ProcessBackend
    from archlab.tasks import get_task

    tasks = {"nb201": get_task("nb201", {"table": "unused"}, None), "lm": None}
    backend, out, walls = ProcessBackend(), {}, {"nb201": [], "lm": []}
    with tempfile.TemporaryDirectory(prefix="dedup-fp-") as tmp:
        for i, (code, task) in enumerate(codes.items()):
            if task == "lm" and code not in lm_ok:
                continue
            if task == "lm" and tasks["lm"] is None:
                tasks["lm"] = get_task("lm", {}, "tiny")
            t = tasks[task]
            job = t.check_job(code, Path(tmp) / f"c{i}", 0, job_limits(t, SandboxConfig(), "check"))
            res = backend.run(job)
            walls[task].append(res.wall_s)
            out[code] = {**res.result, "tolerance": t.behaviour_tolerance} if res.ok and res.result else None
    fingerprints.walls = walls  # type: ignore[attr-defined]
    return out


def same_behaviour(ra: dict, rb: dict) -> bool:
    """The gate's behaviour layer: vectors within the task's tolerance (lm); nb201 has none."""
    from archlab.behaviour import compare

    tol = ra.get("tolerance")
    if tol is None or not ra.get("behaviour") or not rb.get("behaviour"):
        return False
    match = compare(ra["behaviour"], rb["behaviour"], tol)
    return bool(match and match.within)


def evaluate(data: list[dict[str, Any]], fps: dict[str, dict | None], near: float) -> dict[str, list]:
    from archlab.code_hashes import ast_hash, text_hash
    from archlab.memory.embeddings import code_vector, cosine

    for p in data:
        a, b = p["a"], p["b"]
        p["LEMUR md5 (whitespace stripped)"] = lemur_md5(a) == lemur_md5(b)
        p["text hash"] = text_hash(a) == text_hash(b)
        p["AST hash"] = ast_hash(a) == ast_hash(b)
        p["sim"] = cosine(code_vector(a), code_vector(b))
        p[f"embedding (code cos >= {near})"] = p["sim"] >= near
        if a in fps and b in fps:
            ra, rb = fps[a], fps[b]
            p["behaviour fingerprint"] = bool(ra and rb) and ra["fingerprint"] == rb["fingerprint"]
            p["cascade: text > AST > fingerprint"] = p["text hash"] or p["AST hash"] or p["behaviour fingerprint"]
            p["cascade + behaviour"] = p["cascade: text > AST > fingerprint"]
            if p["task"] == "lm":  # the task with a tolerance (nb201's cells are compared by their hash only)
                p["behaviour (tolerance)"] = bool(ra and rb) and same_behaviour(ra, rb)
                p["cascade + behaviour"] = p["cascade + behaviour"] or p["behaviour (tolerance)"]
            p["cascade + embedding"] = p["cascade + behaviour"] or p[f"embedding (code cos >= {near})"]
    layers = ["LEMUR md5 (whitespace stripped)", "text hash", "AST hash", "behaviour fingerprint",
              "behaviour (tolerance)", f"embedding (code cos >= {near})", "cascade: text > AST > fingerprint",
              "cascade + behaviour", "cascade + embedding"]
    return {layer: [(p["dup"], p[layer], p) for p in data if layer in p] for layer in layers}


def scores(rows: list) -> tuple[int, float, float, int, int]:
    tp = sum(1 for y, f, _ in rows if y and f)
    fp = sum(1 for y, f, _ in rows if not y and f)
    fn = sum(1 for y, f, _ in rows if y and not f)
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    return len(rows), prec, rec, fp, fn


# -- latency ------------------------------------------------------------------------------

def median_ms(fn: Callable[[int], Any], n: int = 30) -> float:
    """Median wall time of fn(i), i = 0..n-1 (callers vary the input with i, so no cache helps)."""
    fn(n)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def lm_module(lines: int = 300) -> str:
    """The lm baselines, then design-space renders, until the module has `lines` lines."""
    from archlab.tasks import get_task

    lm, rng = get_task("lm", {}, "tiny"), random.Random(1)
    parts = [c.code for c in lm.seeds()]
    while sum(len(p.splitlines()) for p in parts) < lines:
        parts.append(lm.space.render(lm.space.sample(rng)))
    return "\n\n".join(parts)


def gate_latency(module: str, n_memories: int, embeddings: str) -> dict[str, float]:
    """The real gate node (hashes, ledger, embedding novelty) on an lm candidate
    against a memory of `n_memories` experiments (random vectors stand in for them)."""
    import json

    import numpy as np

    from archlab.agents.gate import gate
    from archlab.campaign import Campaign
    from archlab.config import load_config
    from archlab.memory.embeddings import CODE_DIM, code_vector

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dedup-gate-") as tmp:
        script = Path(tmp) / "script.json"
        script.write_text(json.dumps({"rules": []}))
        cfg = load_config(None, env={}, overrides={
            "workspace": str(Path(tmp) / "runs"), "task": {"name": "lm"}, "llm": {"model": f"scripted/{script}"},
            "memory": {"embeddings": embeddings}, "search": {"baselines": False}})
        campaign = Campaign.create(cfg)
        mem, ctx = campaign.ctx.memory, campaign.ctx
        dim = len(mem.embed(["warm up"])[0])
        rs = np.random.default_rng(0)
        for kind, d in (("experiments", dim), ("code", CODE_DIM)):
            vecs = rs.standard_normal((n_memories, d)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            col = mem.collection(kind, "lm")
            for i in range(0, n_memories, 5000):
                ids = [f"filler:{j}" for j in range(i, min(n_memories, i + 5000))]
                metas = [{"campaign": "filler", "experiment": j, "task": "lm", "setting": "x", "status": "done",
                          "score": float(rs.random()), "name": f"filler {j}"} for j in range(i, i + len(ids))]
                col.add(ids=ids, embeddings=vecs[i:i + len(ids)].tolist(), documents=["filler"] * len(ids),
                        metadatas=metas)
        qv = mem.embed(["a gated delta rule with a short convolution"])[0]
        out["vector query, proposals (10k)"] = median_ms(lambda i: mem.query("experiments", qv, 8, task="lm"))
        cv = code_vector(module)
        out["vector query, code (10k)"] = median_ms(lambda i: mem.query("code", cv, 8, task="lm"))
        out["proposal embedding (one text)"] = median_ms(lambda i: mem.embed([f"gated delta rule, short conv, C{i}"]))
        walls = []
        for i in range(12):
            exp = campaign.ledger.allocate("campaign")
            state = {"experiment": exp, "origin": "campaign", "code": module + f"\n_variant = {i}\n", "code_calls": 1,
                     "proposals": 1, "rejections": [], "proposal": {"name": f"idea {i}", "motivation": "speed",
                                                                   "design": "delta rule with gating, chunk 64"}}
            t0 = time.perf_counter()
            update = gate(ctx, state)
            walls.append(time.perf_counter() - t0)
            assert update.get("hashes"), update
        out["whole gate (hashes + ledger + novelty, 10k)"] = statistics.median(walls[2:]) * 1000
        campaign.close_memory()
    return out


# -- main ---------------------------------------------------------------------------------

def main() -> None:
    # long: the arguments, then each task's variants and their verdicts: a benchmark script read top to bottom
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nb201", type=int, default=27, help="nb201 design-space renders (plus the 3 baselines)")
    ap.add_argument("--lm", type=int, default=16, help="lm design-space renders (plus the baselines)")
    ap.add_argument("--lm-fingerprint", choices=("none", "baselines", "all"), default="baselines")
    ap.add_argument("--near", type=float, default=0.95, help="embedding threshold ([memory] near_duplicate)")
    ap.add_argument("--memories", type=int, default=10_000)
    ap.add_argument("--embeddings", default="minilm")
    ap.add_argument("--quick", action="store_true", help="no sandbox (no fingerprints), no 10k-memory gate")
    args = ap.parse_args()

    from archlab.code_hashes import ast_hash, text_hash
    from archlab.memory.embeddings import code_vector

    srcs = sources(args.nb201, args.lm)
    data = pairs(srcs)
    codes: dict[str, str] = {}
    for p in data:
        codes.setdefault(p["a"], p["task"])
        codes.setdefault(p["b"], p["task"])
    lm_bases = {c for t, name, c in srcs if t == "lm" and not name.startswith("render")}
    lm_ok = {c for c, t in codes.items() if t == "lm"} if args.lm_fingerprint == "all" else \
        {p[k] for p in data if p["task"] == "lm" and p["a"] in lm_bases for k in ("a", "b")} \
        if args.lm_fingerprint == "baselines" else set()
    t0 = time.perf_counter()
    fps = {} if args.quick else fingerprints(codes, lm_ok)
    fp_s = time.perf_counter() - t0
    by_layer = evaluate(data, fps, args.near)

    n_dup = sum(p["dup"] for p in data)
    print(f"labelled pairs: {len(data)} ({n_dup} duplicates, {len(data) - n_dup} different) from "
          f"{sum(t == 'nb201' for t, _, _ in srcs)} nb201 and {sum(t == 'lm' for t, _, _ in srcs)} lm modules; "
          f"fingerprints: {len(fps)} check jobs in {fp_s:.0f} s (lm: {args.lm_fingerprint})")
    for task in ("nb201", "lm", "all"):
        print(f"\n[{task}] {'layer':<38} {'pairs':>5} {'precision':>9} {'recall':>7} {'FP':>4} {'FN':>4}")
        for layer, rows in by_layer.items():
            rows = [r for r in rows if task == "all" or r[2]["task"] == task]
            if rows:
                n, prec, rec, fp, fn = scores(rows)
                print(f"        {layer:<38} {n:>5} {prec:>9.3f} {rec:>7.3f} {fp:>4} {fn:>4}")
    print("\nshare of each variant kind called a duplicate (all tasks; fingerprint where computed):")
    layers = list(by_layer)
    short = ["md5", "text", "AST", "fp", "behav", "emb", "casc", "c+beh", "c+emb"]
    print(f"  {'variant':<17} {'dup?':<5} {'n':>4} " + " ".join(f"{s:>6}" for s in short))
    for kind in [*DUPLICATES, *DIFFERENT]:
        ps = [p for p in data if p["kind"] == kind]
        if not ps:
            continue
        cells = []
        for layer in layers:
            got = [p[layer] for p in ps if layer in p]
            cells.append(f"{sum(got) / len(got):>6.2f}" if got else f"{'-':>6}")
        print(f"  {kind:<17} {'yes' if kind in DUPLICATES else 'no':<5} {len(ps):>4} " + " ".join(cells))

    wrong = [r[2] for r in by_layer["cascade + behaviour"] if r[0] != r[1]]
    if wrong:
        print("\nwhere the cascade is wrong (first differing line of the variant):")
    for p in wrong:
        import difflib

        diff = [d for d in difflib.unified_diff(p["a"].splitlines(), p["b"].splitlines(), lineterm="", n=0)
                if d[:1] in "+-" and not d.startswith(("+++", "---"))]
        print(f"  {p['task']} {p['source']} {p['kind']}: {'missed duplicate' if p['dup'] else 'false duplicate'}; "
              f"{' | '.join(x.strip() for x in diff[:2])[:150]}")

    module = lm_module()
    print(f"\nlatency, median of 30, on a {len(module.splitlines())}-line module:")
    variant = [f"{module}\n_variant = {i}\n" for i in range(31)]  # distinct texts: the token cache never hits
    lat = {"LEMUR md5": median_ms(lambda i: lemur_md5(variant[i])),
           "text hash": median_ms(lambda i: text_hash(variant[i])),
           "ast.parse alone": median_ms(lambda i: ast.parse(variant[i])),
           "AST hash (incl. parse)": median_ms(lambda i: ast_hash(variant[i])),
           "code vector, tokens cached from the AST hash": median_ms(lambda i: code_vector(variant[i])),
           "code vector from scratch": median_ms(lambda i: code_vector(variant[i] + "_x = 0\n"))}
    walls = getattr(fingerprints, "walls", {})
    for task in ("nb201", "lm"):
        if walls.get(task):
            lat[f"behaviour fingerprint: {task} check job (sandbox)"] = statistics.median(walls[task]) * 1000
    if not args.quick:
        lat.update(gate_latency(module, args.memories, args.embeddings))
    for name, ms in lat.items():
        print(f"  {name:<48} {ms:>9.2f} ms")


if __name__ == "__main__":
    main()
