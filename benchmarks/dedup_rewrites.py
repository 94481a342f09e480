"""Real rewrites against the behaviour layer: every module of the labelled pairs in
benchmarks/rewrite_pairs.py goes through the lm task's real check job (process
sandbox), and each dedup layer says "same" or "different" for each pair.

    python benchmarks/dedup_rewrites.py            # per-layer precision / recall, per kind
    python benchmarks/dedup_rewrites.py --verify   # the labels hold numerically (in-process)
    python benchmarks/dedup_rewrites.py --list     # name, kind, same

Layers: the text and AST hashes, the exact fingerprint (a hash of rounded outputs,
the first look), the behaviour vectors compared within the task's tolerance, and
the cascades (today's text > AST > fingerprint, and with behaviour after it). The
pairs labelled same are numerically equal but not bit-equal; the pairs labelled
apart are near them on purpose. Beside today's 437 pairs: benchmarks/dedup.py.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rewrite_pairs import PAIRS, Pair  # noqa: E402 - the data beside this script


def checks(codes: list[str]) -> tuple[dict[str, dict | None], list[float]]:
    """Each module's check report (None when the check failed), and the job walls."""
    from archlab.agents.context import job_limits
    from archlab.config import SandboxConfig
    from archlab.sandbox.process import ProcessBackend
    from archlab.tasks import get_task

    task, backend, out, walls = get_task("lm", {}, "tiny"), ProcessBackend(), {}, []
    with tempfile.TemporaryDirectory(prefix="dedup-rewrites-") as tmp:
        for i, code in enumerate(codes):
            res = backend.run(task.check_job(code, Path(tmp) / f"c{i}", 0, job_limits(task, SandboxConfig(), "check")))
            walls.append(res.wall_s)
            out[code] = res.result if res.ok else None
            if not res.ok:
                print(f"  check failed for module {i}: {res.reason}", file=sys.stderr)
    return out, walls


LAYERS = ("text hash", "AST hash", "exact fingerprint", "behaviour (tolerance)",
          "cascade: text > AST > fingerprint", "cascade + behaviour")


def verdicts(pair: Pair, reports: dict[str, dict | None], tol) -> dict[str, bool] | None:
    from archlab.behaviour import compare
    from archlab.code_hashes import ast_hash, text_hash

    ra, rb = reports.get(pair.a), reports.get(pair.b)
    if not ra or not rb:
        return None
    match = compare(ra["behaviour"], rb["behaviour"], tol) if ra.get("behaviour") and rb.get("behaviour") else None
    v = {"text hash": text_hash(pair.a) == text_hash(pair.b), "AST hash": ast_hash(pair.a) == ast_hash(pair.b),
         "exact fingerprint": ra["fingerprint"] == rb["fingerprint"],
         "behaviour (tolerance)": bool(match and match.within)}
    v["cascade: text > AST > fingerprint"] = v["text hash"] or v["AST hash"] or v["exact fingerprint"]
    v["cascade + behaviour"] = v["cascade: text > AST > fingerprint"] or v["behaviour (tolerance)"]
    v["close"] = bool(match and match.close and not match.within)  # reported to the researcher
    v["ratio"] = match.ratio if match else float("nan")
    return v


def score(rows: list[tuple[bool, bool]]) -> tuple[float, float, int, int]:
    tp = sum(y and f for y, f in rows)
    fp = sum(f and not y for y, f in rows)
    fn = sum(y and not f for y, f in rows)
    return (tp / (tp + fp) if tp + fp else float("nan"), tp / (tp + fn) if tp + fn else float("nan"), fp, fn)


def table(pairs: list[Pair]) -> bool:
    from archlab.tasks import get_task

    tol = get_task("lm", {}, "tiny").behaviour_tolerance
    codes = list(dict.fromkeys(c for p in pairs for c in (p.a, p.b)))
    t0 = time.perf_counter()
    reports, walls = checks(codes)
    walls.sort()
    print(f"{len(pairs)} pairs ({sum(p.same for p in pairs)} same, {sum(not p.same for p in pairs)} apart), "
          f"{len(codes)} modules checked in {time.perf_counter() - t0:.0f} s "
          f"(check job median {walls[len(walls) // 2]:.2f} s); tolerance {tol.describe()}")
    scored = [(p, v) for p in pairs if (v := verdicts(p, reports, tol)) is not None]
    if len(scored) < len(pairs):
        print(f"  {len(pairs) - len(scored)} pairs left out: a side failed its check")
    print(f"\n{'layer':<36} {'precision':>9} {'recall':>7} {'FP':>4} {'FN':>4}")
    for layer in LAYERS:
        prec, rec, fp, fn = score([(p.same, v[layer]) for p, v in scored])
        print(f"{layer:<36} {prec:>9.3f} {rec:>7.3f} {fp:>4} {fn:>4}")
    kinds = list(dict.fromkeys((p.kind, p.same) for p, _ in scored))
    short = ("text", "AST", "exact", "behav", "casc", "c+beh", "close")
    print(f"\nshare called the same, per kind ('close': apart but reported behaviourally close)\n"
          f"  {'kind':<24} {'same?':<5} {'n':>3} " + " ".join(f"{s:>6}" for s in short))
    for kind, same in kinds:
        vs = [v for p, v in scored if (p.kind, p.same) == (kind, same)]
        cells = [sum(v[k] for v in vs) / len(vs) for k in (*LAYERS, "close")]
        print(f"  {kind:<24} {'yes' if same else 'no':<5} {len(vs):>3} " + " ".join(f"{c:>6.2f}" for c in cells))
    wrong = [(p, v) for p, v in scored if v["cascade + behaviour"] != p.same]
    for p, v in wrong:
        print(f"  wrong: {p.name} (labelled {'same' if p.same else 'apart'}, ratio {v['ratio']:.3g})")
    same = [v["cascade + behaviour"] for p, v in scored if p.same]
    apart = [v["cascade + behaviour"] for p, v in scored if not p.same]
    recall, merged = sum(same) / max(1, len(same)), sum(apart)
    print(f"\ncascade + behaviour: recall {recall:.3f} on the same pairs (target >= 0.95), "
          f"{merged} apart pairs merged (target 0: precision 1.00)")
    return recall >= 0.95 and merged == 0


# -- verification ---------------------------------------------------------------------------

def load(src: str, name: str) -> type:
    ns: dict = {"__name__": f"candidate_{name}"}
    exec(compile(src, f"<{name}>", "exec"), ns)
    return ns["TokenMixer"]


def probe_inputs(d: int = 64) -> list:
    import torch
    x1 = torch.randn(2, 136, d, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(4321)
    table = torch.randn(16, d, generator=g)  # few distinct tokens, repeated: another regime
    x2 = table[torch.randint(0, 16, (2, 77), generator=g)] * 3
    return [x1, x2]


def rounded_hash(y) -> str:
    import numpy as np
    return hashlib.sha256((np.round(y.double().numpy(), 4) + 0.0).tobytes()).hexdigest()


def check_module(cls: type, xs: list, d: int, h: int) -> str | None:
    """Shape and causality (perturb token p: earlier outputs must not move)."""
    import torch
    torch.manual_seed(0)
    m = cls(d, h).eval()
    with torch.no_grad():
        for x in xs:
            y = m(x)
            if y.shape != x.shape:
                return f"shape {tuple(y.shape)} for {tuple(x.shape)}"
            for p in (1, 40, x.shape[1] - 1):
                x2 = x.clone()
                x2[:, p] += torch.randn(x.shape[0], d, generator=torch.Generator().manual_seed(p))
                if (m(x2)[:, :p] - y[:, :p]).abs().max() > 1e-5:
                    return f"non-causal at p={p}"
    return None


def compare(pair: Pair, xs: list, d: int = 64, h: int = 4) -> dict:
    """Both sides under the same seeds (0, 1) on every probe input: max |a-b| per input,
    max |a-b| / (1e-6 + 1e-5 |b|) (<= 1 means allclose), max |a-b| / max |b| (how close in
    scale), and whether outputs were bit-equal / had equal rounded-4 hashes on every run."""
    import torch
    ca, cb = load(pair.a, pair.name), load(pair.b, pair.name)
    out = {"abs": [0.0] * len(xs), "rel": 0.0, "scaled": 0.0, "bit_equal": True, "hash_equal": True}
    for seed in (0, 1):
        torch.manual_seed(seed)
        ma = ca(d, h).eval()
        torch.manual_seed(seed)
        mb = cb(d, h).eval()
        with torch.no_grad():
            for i, x in enumerate(xs):
                ya, yb = ma(x), mb(x)
                diff = (ya - yb).abs()
                out["abs"][i] = max(out["abs"][i], float(diff.max()))
                out["rel"] = max(out["rel"], float((diff / (1e-6 + 1e-5 * yb.abs())).max()))
                out["scaled"] = max(out["scaled"], float(diff.max() / yb.abs().max()))
                out["bit_equal"] &= bool(torch.equal(ya, yb))
                out["hash_equal"] &= rounded_hash(ya) == rounded_hash(yb)
    return out


def verify(pairs: list[Pair], d: int = 64, h: int = 4) -> bool:
    import torch
    torch.set_num_threads(1)
    xs = probe_inputs(d)
    checked: dict[str, str | None] = {}
    ok, same_abs, apart_abs, apart_scaled = True, [], [], []
    n_not_bit = n_hash_diff = 0
    print(f"{'pair':36} {'same':5} {'|a-b| x1':>9} {'|a-b| x2':>9} {'rel':>8} {'scaled':>8} {'bit-eq':>6} "
          f"{'r4-eq':>5}  verdict")
    for p in pairs:
        problems = []
        for side, src in (("a", p.a), ("b", p.b)):
            if src not in checked:
                try:
                    checked[src] = check_module(load(src, p.name), xs, d, h)
                except Exception as e:  # noqa: BLE001 - report, keep going
                    checked[src] = f"{type(e).__name__}: {e}"
            if checked[src]:
                problems.append(f"{side}: {checked[src]}")
        if problems:
            ok = False
            print(f"{p.name:36} {str(p.same):5} FAIL {'; '.join(problems)}")
            continue
        r = compare(p, xs, d, h)
        mx = max(r["abs"])
        if p.same:
            same_abs.append(mx)
            n_not_bit += not r["bit_equal"]
            n_hash_diff += not r["hash_equal"]
            verdict = "BIT-EQUAL (useless)" if r["bit_equal"] else ("ok" if mx <= 1e-5 else "TOO FAR")
        else:
            apart_abs.append(mx)
            apart_scaled.append(r["scaled"])
            verdict = "TOO CLOSE" if mx < 1e-4 else ("ok" if r["scaled"] < 1e-1 else "ok (not close)")
        ok &= verdict.startswith("ok")
        print(f"{p.name:36} {str(p.same):5} {r['abs'][0]:9.2e} {r['abs'][1]:9.2e} {r['rel']:8.3g} "
              f"{r['scaled']:8.2e} {str(r['bit_equal']):>6} {str(r['hash_equal']):>5}  {verdict}")
    ns, na = len(same_abs), len(apart_abs)
    if ns:
        print(f"\nsame pairs: {ns}; max|a-b| in [{min(same_abs):.2e}, {max(same_abs):.2e}]; "
              f"not bit-equal {n_not_bit}/{ns}; rounded-4 hash differs {n_hash_diff}/{ns}")
    if na:
        print(f"apart pairs: {na}; max|a-b| in [{min(apart_abs):.2e}, {max(apart_abs):.2e}]; "
              f"close (max|a-b| / max|b| < 0.1) {sum(v < 1e-1 for v in apart_scaled)}/{na}, "
              f"max|a-b| < 0.1 {sum(v < 1e-1 for v in apart_abs)}/{na}")
    print("verify:", "PASS" if ok else "FAIL")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="check every label numerically (CPU, 1 thread)")
    ap.add_argument("--list", action="store_true", help="print name, kind, same")
    args = ap.parse_args(argv)
    if args.list:
        for p in PAIRS:
            print(f"{p.name:36} {p.kind:22} {p.same}")
        return 0
    if args.verify:
        return 0 if verify(PAIRS) else 1
    return 0 if table(PAIRS) else 1


if __name__ == "__main__":
    sys.exit(main())
