"""NAS-Bench-201 harness: runs inside the sandbox, stdlib only (never imports archlab).

usage: python harness.py INPUT/spec.json OUTPUT_DIR

The candidate defines `cell(x0, ops)`. We execute it with symbolic values: each
`ops.<name>(node)` returns a term recording (op, source node), `+` collects
terms, and a node is identified by the set of terms that built it. From the
traced nodes we derive the arch string; mode "check" reports it, mode "train"
also looks it up in the indexed table (input/table.sqlite).

The candidate is imported and traced in a forked child: the parent alone opens
the table and writes result.json, so candidate code cannot patch the lookup.
"""
import sys

sys.dont_write_bytecode = True  # the input dir is read-only: don't try to cache candidate.pyc

import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
HINT = "an NB201 cell only applies ops.<name> to node values and adds the results"


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class CellError(Exception):
    """The cell ran but is not a valid NB201 cell (reported as status "integrity")."""


class Value:
    """A symbolic tensor: x0, one op's output, or a sum of op outputs."""

    __slots__ = ("tracer", "terms", "key", "line")

    def __init__(self, tracer, terms, key=None):
        self.tracer, self.terms = tracer, terms  # terms: tuple of (op, source Value)
        self.key = key if key is not None else frozenset((op, src.key) for op, src in terms)
        self.line = tracer.where()
        tracer.values.append(self)

    def __add__(self, other):
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # lets sum([...]) work
        return self.tracer.add(self, other)

    def __radd__(self, other):
        return self.__add__(other)

    def __bool__(self):
        raise CellError(f"a node value has no truth value; {HINT}")

    def __repr__(self):
        return "x0" if not self.terms else " + ".join(f"ops.{op}(...)" for op, _ in self.terms)


class Tracer:
    def __init__(self, filename):
        self.filename = filename
        self.values = []      # every Value, in creation order
        self.op_inputs = []   # Value objects passed to an op (they are nodes)
        self.consumed = {}    # id -> Value, objects used as an operand of +

    def where(self):
        """The candidate's line that is executing now (0 when unknown)."""
        f = sys._getframe(1)
        while f is not None and f.f_code.co_filename != self.filename:
            f = f.f_back
        return f.f_lineno if f is not None else 0

    def name(self, v):
        return "x0" if v.key == "x0" else f"the node computed at line {v.line}"

    def apply(self, op, args, kwargs):
        if kwargs or len(args) != 1:
            raise CellError(f"ops.{op} takes exactly one node value, e.g. ops.{op}(x0)")
        v = args[0]
        if not isinstance(v, Value) or v.tracer is not self:
            raise CellError(f"ops.{op} must be applied to a node (x0 or a node the cell computed), "
                            f"not {type(v).__name__}")
        self.op_inputs.append(v)
        return Value(self, ((op, v),))

    def add(self, a, b):
        if not isinstance(b, Value) or b.tracer is not self:
            raise CellError(f"only op outputs can be added, not {type(b).__name__}; {HINT}")
        for v in (a, b):
            if not v.terms:
                raise CellError("x0 cannot be added as it is; apply an op to it, e.g. ops.skip_connect(x0)")
        seen = {}
        for op, src in a.terms + b.terms:
            if src.key in seen:
                raise CellError(f"two ops on the same edge: ops.{seen[src.key]} and ops.{op} "
                                f"both take {self.name(src)} into one node; NB201 has one op per edge")
            seen[src.key] = op
        self.consumed[id(a)] = a
        self.consumed[id(b)] = b
        return Value(self, a.terms + b.terms)

    def arch(self, out):
        """The arch string of the traced cell whose output is `out`."""
        if not isinstance(out, Value) or out.tracer is not self:
            raise CellError(f"cell must return its output node x3 (a sum of ops), not {type(out).__name__}")
        if not out.terms:
            raise CellError("cell returns x0 unchanged; it must return node x3, built from ops on x0, x1, x2")
        input_ids = {id(v) for v in self.op_inputs}
        for v in self.op_inputs + [out]:
            if id(v) in self.consumed:
                what = "returned" if v is out else "used as an op's input (a node)"
                raise CellError(f"the value computed at line {v.line} is {what} and also added into a sum as it is; "
                                "to pass a node on unchanged write ops.skip_connect(node)")
        if any(v.key == out.key for v in self.op_inputs):
            raise CellError("the returned node also feeds an op; the output node x3 is last and feeds nothing")
        dangling = [v for v in self.values if v.terms and id(v) not in self.consumed and id(v) not in input_ids]
        keys = {v.key for v in self.op_inputs if v.terms} | {v.key for v in dangling}
        first = {}  # node key -> its first Value (creation order is a topological order)
        for v in self.values:
            if v.key in keys and v.key not in first:
                first[v.key] = v
        nodes = list(first.values())  # in creation order
        lines = ", ".join(str(v.line) for v in nodes)
        if len(nodes) != 3:
            raise CellError(f"the cell computes {len(nodes)} distinct node value(s) (lines {lines}) "
                            "but an NB201 cell has exactly three: x1, x2 and the returned x3; "
                            "a node with no incoming op is written e.g. `x2 = ops.none(x0) + ops.none(x1)`; "
                            "nodes built from the same ops on the same inputs are one node "
                            "(tell them apart with an explicit ops.none edge); every computed value must be a node")
        if nodes[-1].key != out.key:
            raise CellError(f"the cell returns a node computed before another one (lines {lines}); "
                            "return the last node, x3")
        index = {"x0": 0, nodes[0].key: 1, nodes[1].key: 2, nodes[2].key: 3}
        parts = []
        for i, node in enumerate(nodes, start=1):
            edges = ["none"] * i
            for op, src_key in node.key:
                j = index[src_key]
                if j >= i:
                    raise CellError(f"node {i} (line {node.line}) uses node {j}, which is not before it")
                edges[j] = op
            parts.append("|" + "|".join(f"{op}~{j}" for j, op in enumerate(edges)) + "|")
        return "+".join(parts)


class Ops:
    """The `ops` a cell receives: the five NB201 ops, nothing else."""

    def __init__(self, tracer):
        for op in OPS:
            setattr(self, op, self._make(tracer, op))

    @staticmethod
    def _make(tracer, op):
        def apply(*args, **kwargs):
            return tracer.apply(op, args, kwargs)
        apply.__name__ = op
        return apply

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise CellError(f"unknown op ops.{name}; the NB201 ops are: {', '.join(OPS)}")


def candidate_line(tb, filename):
    line = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (candidate.py line {line})" if line else ""


def arch_of(cell, filename):
    """Run `cell` on symbolic values; its arch string, or CellError. `filename` is the
    candidate's file, used to name lines in reasons."""
    tracer = Tracer(filename)
    return tracer.arch(cell(Value(tracer, (), key="x0"), Ops(tracer)))


def trace(path):
    """Import the candidate and trace its cell -> {"arch": ...} or {"status", "reason"}."""
    filename = os.path.abspath(path)
    try:
        spec = importlib.util.spec_from_file_location("candidate", filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - anything the candidate does at import is its error
        return {"status": "error", "reason": f"importing the candidate failed: {type(exc).__name__}: {exc}"
                + candidate_line(exc.__traceback__, filename)}
    cell = getattr(module, "cell", None)
    if not callable(cell):
        return {"status": "error", "reason": "the candidate must define a function cell(x0, ops)"}
    try:
        return {"arch": arch_of(cell, filename)}
    except CellError as exc:
        return {"status": "integrity",
                "reason": f"not a valid NB201 cell: {exc}" + candidate_line(exc.__traceback__, filename)}
    except MemoryError as exc:
        return {"status": "oom", "reason": "the cell ran out of memory" + candidate_line(exc.__traceback__, filename)}
    except BaseException as exc:  # noqa: BLE001
        return {"status": "error", "reason": f"the cell raised {type(exc).__name__}: {exc}"
                + candidate_line(exc.__traceback__, filename) + f"; {HINT}"}


def trace_isolated(path):
    """Run trace() in a forked child and read its answer from a pipe."""
    if not hasattr(os, "fork"):
        return trace(path)
    r, w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            data = (json.dumps(trace(path)) + "\n").encode()
            while data:
                data = data[os.write(w, data):]
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    lines = b"".join(chunks).decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1])
        if isinstance(answer, dict) and (isinstance(answer.get("arch"), str)
                                         or answer.get("status") in ("integrity", "error", "oom")):
            return answer
    except (ValueError, IndexError):
        pass
    return {"status": "error", "reason": f"the candidate's process ended without an answer (wait status {status})"}


def valid_arch(arch):
    nodes = arch.split("+")
    if len(nodes) != 3:
        return False
    for i, node in enumerate(nodes, start=1):
        parts = node[1:-1].split("|") if len(node) > 1 and node[0] == node[-1] == "|" else []
        if len(parts) != i or any(p not in {f"{op}~{j}" for op in OPS} for j, p in enumerate(parts)):
            return False
    return True


def lookup(db_path, arch):
    """(val, test, n_rows) from the read-only index; val/test None when the arch is absent."""
    import sqlite3  # only the train mode pays for it

    uri = "file:" + db_path.replace("%", "%25").replace("?", "%3f").replace("#", "%23") + "?mode=ro&immutable=1"
    con = sqlite3.connect(uri, uri=True)
    try:
        row = con.execute("SELECT val, test FROM nb201 WHERE arch = ?", (arch,)).fetchone()
        if row is not None:
            return row[0], row[1], None
        return None, None, con.execute("SELECT COUNT(*) FROM nb201").fetchone()[0]
    finally:
        con.close()


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: harness.py INPUT/spec.json OUTPUT_DIR\n")
        return 2
    spec_path, out_dir = argv[1], argv[2]
    input_dir = os.path.dirname(os.path.abspath(spec_path))
    with open(spec_path) as f:
        spec = json.load(f)
    mode = spec.get("mode", "check")
    emit(event="progress", stage="trace", mode=mode)
    answer = trace_isolated(os.path.join(input_dir, spec.get("candidate", "candidate.py")))
    if "arch" not in answer:  # keep only what the protocol allows from the child
        result = {"status": answer["status"], "reason": str(answer.get("reason", ""))}
    elif not valid_arch(answer["arch"]):
        result = {"status": "error", "reason": f"tracing produced a malformed arch string: {answer['arch']!r}"}
    else:
        arch = answer["arch"]
        result = {"status": "ok", "arch": arch, "fingerprint": hashlib.sha256(arch.encode()).hexdigest(), "params": 0}
        emit(event="progress", stage="traced", arch=arch)
        if mode == "train":
            db = os.path.join(input_dir, spec.get("table", "table.sqlite"))
            if not os.path.exists(db):
                result = {"status": "error",
                          "reason": f"the indexed table is missing from the job input ({os.path.basename(db)})"}
            else:
                if spec.get("delay_s"):  # simulated training time, for drills (kill -9, resume) and demos
                    import time

                    time.sleep(float(spec["delay_s"]))
                val, test, n = lookup(db, arch)
                if val is None:
                    result.update(status="error", reason=f"arch {arch} is not in the table ({n} archs indexed"
                                  f" for {spec.get('dataset', '?')}); the table may be a subset of NAS-Bench-201")
                else:
                    result["metrics"] = {"val_acc": val, "test_acc": test, "arch": arch}
                    emit(event="metric", val_acc=val, test_acc=test)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
