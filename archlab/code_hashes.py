"""The static hashes of candidate code, the gate's first two layers (agents/gate.py
holds the whole cascade), and the canonical tokens the code embedder reads.

1. `text_hash`: whitespace-normalised text. Unlike a hash that deletes all
   whitespace (NNGPT/LEMUR), indentation is kept as a depth, so moving a
   statement into or out of a loop body is a change.
2. `ast_hash`: a canonical AST. Comments, docstrings, formatting, type
   annotations and local names (arguments, locals, loop/with/except/
   comprehension targets, nested defs) are gone; the interface stays: top-level
   and class-level names, attributes, imports, builtins, call keywords,
   keyword-only parameters, constants with their type.

The behaviour fingerprint needs the candidate to run: the task harness computes it
in the sandbox's check step. Stdlib only: this runs for every candidate before any compute.
"""
from __future__ import annotations

import ast
import hashlib
import warnings
from dataclasses import dataclass
from functools import lru_cache

from archlab.pyparse import parse as parse_python


@dataclass(frozen=True)
class CodeHashes:
    text: str
    ast: str
    # behaviour: added by the check step (sandbox), see the module docstring.


def hashes(code: str) -> CodeHashes:
    """Both static hashes; ValueError when the code does not parse."""
    return CodeHashes(text=text_hash(code), ast=ast_hash(code))


# -- 1. text ----------------------------------------------------------------

def text_hash(code: str) -> str:
    """sha256 of the code with whitespace normalised: line endings unified,
    trailing whitespace and blank lines dropped, runs of spaces/tabs inside a
    line collapsed, and leading indentation replaced by its depth (the level in
    the stack of open indents, as Python's tokenizer counts them) so 2- and
    4-space indents hash the same but a loop-body change does not."""
    out: list[str] = []
    stack = [0]  # open indentation widths, like tokenize's INDENT/DEDENT
    for line in code.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        body = line.lstrip(" \t\f")
        if not body.strip():
            continue
        width = len(line[: len(line) - len(body)].expandtabs(8))
        if width > stack[-1]:
            stack.append(width)
        else:
            while width < stack[-1]:
                stack.pop()
            if width > stack[-1]:  # dedent to a width never opened: a new level
                stack.append(width)
        out.append(f"{len(stack) - 1}|{' '.join(body.split())}")
    return hashlib.sha256("\n".join(out).encode("utf-8", "surrogatepass")).hexdigest()


# -- 2. canonical AST -------------------------------------------------------

_SKIP_FIELDS = {"ctx", "type_comment", "kind", "returns", "annotation"}
_FIELDS: dict[type, tuple[str, ...]] = {
    c: tuple(f for f in c._fields if f not in _SKIP_FIELDS)
    for c in vars(ast).values() if isinstance(c, type) and issubclass(c, ast.AST)
}


class _Scope:
    """A namespace. A name bound in a function (or lambda, or comprehension)
    gets the canonical name `%depth.index`, numbered in order of first
    appearance; `%` cannot start an identifier, so it never meets a real name,
    and the depth keeps a closure's free variable apart from the inner
    function's own locals. Names are resolved when the scope ends, when all its
    bindings are known: occurrences not bound here move to the enclosing scope."""

    __slots__ = ("kind", "up", "depth", "bound", "keep", "glob", "nonloc", "names", "seen")

    def __init__(self, kind: str, parent: _Scope | None) -> None:
        self.kind = kind  # module | class | function | comp
        self.up = parent
        self.depth = (parent.depth + (kind in ("function", "comp"))) if parent else 0
        self.bound: set[str] = set()
        self.keep: set[str] = set()   # bound here but interface: imports, keyword-only params
        self.glob: set[str] = set()
        self.nonloc: set[str] = set()
        self.names: dict[str, str] = {}
        self.seen: list[tuple[str, int]] = []  # (name, index of its token), in order

    def finish(self, out: list[str]) -> None:
        up = self.up
        while up is not None and up.kind == "class":  # class bodies are invisible from inside
            up = up.up
        forward = up.seen.append if up is not None and up.kind != "module" else None
        bound, names = self.bound, self.names
        if self.kind == "class":  # class attributes and methods: interface, kept
            for name, i in self.seen:
                if name not in bound and forward:
                    forward((name, i))
            return
        glob, nonloc = self.glob, self.nonloc
        for name, i in self.seen:
            if name in bound and name not in nonloc and name not in glob:
                c = names.get(name)
                if c is None:
                    c = name if name in self.keep else f"%{self.depth}.{len(names)}"
                    names[name] = c
                out[i] = c
            elif forward and name not in glob:
                forward((name, i))


class _Canon:
    """Serialises a tree to a flat token list. Every node type has a fixed
    number of fields and lists are bracketed, so the stream is unambiguous."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.scope = _Scope("module", None)
        self.special = {
            ast.Name: self._name, ast.Constant: self._constant, ast.FunctionDef: self._function,
            ast.AsyncFunctionDef: self._function, ast.Lambda: self._lambda, ast.ClassDef: self._class,
            ast.ListComp: self._comp, ast.SetComp: self._comp, ast.GeneratorExp: self._comp,
            ast.DictComp: self._comp, ast.AnnAssign: self._annassign, ast.ExceptHandler: self._named,
            ast.MatchAs: self._named, ast.MatchStar: self._named, ast.MatchMapping: self._named,
            ast.Global: self._declare, ast.Nonlocal: self._declare, ast.NamedExpr: self._walrus,
            ast.Import: self._import, ast.ImportFrom: self._import,
        }

    def node(self, n: ast.AST) -> None:
        t = type(n)
        h = self.special.get(t)
        if h is not None:
            h(n)
            return
        out = self.out
        out.append(t.__name__)
        fields = _FIELDS.get(t)
        if fields is None:  # a node type this Python added after import time
            fields = _FIELDS[t] = tuple(f for f in t._fields if f not in _SKIP_FIELDS)
        for f in fields:
            v = getattr(n, f, None)
            if type(v) is list:
                self.seq(v)
            elif isinstance(v, ast.AST):
                self.node(v)
            else:
                out.append(repr(v))

    def seq(self, items: list) -> None:
        """A bracketed list; statements with no effect (`pass`, docstrings,
        other bare constants) are left out."""
        out = self.out
        out.append("[")
        for x in items:
            t = type(x)
            if t is ast.Pass or (t is ast.Expr and type(x.value) is ast.Constant):
                continue
            if isinstance(x, ast.AST):
                self.node(x)
            else:  # None (dict unpacking, missing defaults) or str (Global, MatchClass)
                out.append(repr(x))
        out.append("]")

    def bind(self, name: str, *, store: bool = True) -> None:
        """Emit a name token; it is resolved when its scope finishes."""
        s = self.scope
        self.out.append(name)
        if s.kind != "module":
            s.seen.append((name, len(self.out) - 1))
            if store:
                s.bound.add(name)

    def enter(self, scope: _Scope) -> _Scope:
        saved, self.scope = self.scope, scope
        return saved

    def leave(self, saved: _Scope) -> None:
        self.scope.finish(self.out)
        self.scope = saved

    # -- names and constants
    def _name(self, n: ast.Name) -> None:
        self.out.append("Name")
        self.bind(n.id, store=type(n.ctx) is not ast.Load)

    def _walrus(self, n: ast.NamedExpr) -> None:
        """`(x := ...)` in a comprehension binds x in the enclosing function."""
        self.out.append("NamedExpr")
        s = self.scope
        while s.kind == "comp":
            s = s.up
        if s.kind != "module":
            s.bound.add(n.target.id)
        self.out.append("Name")
        self.bind(n.target.id, store=s is self.scope)
        self.node(n.value)

    def _constant(self, n: ast.Constant) -> None:
        v = n.value
        self.out.append("Constant")
        self.out.append(type(v).__name__)
        self.out.append(hex(v) if type(v) is int else repr(v))  # hex: no 4300-digit limit

    def _import(self, n: ast.Import | ast.ImportFrom) -> None:
        """Imported names are kept as written, even inside a function."""
        out = self.out
        out.append(f"{type(n).__name__}{len(n.names)}")
        if type(n) is ast.ImportFrom:
            out.append(f"{n.module}:{n.level}")
        for a in n.names:
            out.append(f"{a.name}:{a.asname}")
            name = a.asname or a.name.split(".")[0]
            if self.scope.kind != "module" and name != "*":
                self.scope.bound.add(name)
                self.scope.keep.add(name)

    def _named(self, n: ast.AST) -> None:
        """Nodes that bind a bare string: except ... as NAME, match captures."""
        t = type(n)
        self.out.append(t.__name__)
        for f in _FIELDS[t]:
            v = getattr(n, f, None)
            if f in ("name", "rest"):
                if v is None:
                    self.out.append("None")
                else:
                    self.bind(v)
            elif type(v) is list:
                self.seq(v)
            elif v is None:
                self.out.append("None")
            else:
                self.node(v)

    def _declare(self, n: ast.Global | ast.Nonlocal) -> None:
        s = self.scope
        self.out.append(f"{type(n).__name__}{len(n.names)}")
        (s.glob if type(n) is ast.Global else s.nonloc).update(n.names)
        for x in n.names:
            self.bind(x, store=False)

    def _annassign(self, n: ast.AnnAssign) -> None:
        if self.scope.kind == "class":  # class-body annotations declare fields (dataclass, NamedTuple)
            self.out.append("AnnAssign")
            self.node(n.target)
            self.node(n.annotation)
            self.seq([n.value])
        elif n.value is not None:  # elsewhere the annotation is dropped: a plain assignment
            self.out.append("Assign")
            self.seq([n.target])
            self.node(n.value)
        elif type(n.target) is ast.Name and self.scope.kind != "module":
            self.scope.bound.add(n.target.id)  # `x: int` alone still makes x local

    # -- scopes
    def _arguments(self, a: ast.arguments, inner: _Scope) -> _Scope:
        """Defaults belong to the enclosing scope, parameter names to `inner`.
        Keyword-only parameters keep their names: callers must spell them."""
        self.seq(a.defaults)
        self.seq(a.kw_defaults)
        self.out.append(f"args{len(a.posonlyargs)},{len(a.args)},{int(a.vararg is not None)},"
                        f"{len(a.kwonlyargs)},{int(a.kwarg is not None)}")
        saved = self.enter(inner)
        inner.keep.update(p.arg for p in a.kwonlyargs)
        for p in (*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg):
            if p is not None:
                self.bind(p.arg)
        return saved

    def _function(self, n: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.out.append(type(n).__name__)
        self.seq(n.decorator_list)
        self.bind(n.name)
        saved = self._arguments(n.args, _Scope("function", self.scope))
        self.seq(n.body)
        self.leave(saved)

    def _lambda(self, n: ast.Lambda) -> None:
        self.out.append("Lambda")
        saved = self._arguments(n.args, _Scope("function", self.scope))
        self.node(n.body)
        self.leave(saved)

    def _class(self, n: ast.ClassDef) -> None:
        self.out.append("ClassDef")
        self.seq(n.decorator_list)
        self.seq(n.bases)
        self.seq(n.keywords)
        self.bind(n.name)
        saved = self.enter(_Scope("class", self.scope))
        self.seq(n.body)
        self.leave(saved)

    def _comp(self, n: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        """The first iterable is evaluated outside; the rest in the comprehension's scope."""
        out = self.out
        out.append(f"{type(n).__name__}{len(n.generators)}")
        self.node(n.generators[0].iter)
        saved = self.enter(_Scope("comp", self.scope))
        for i, g in enumerate(n.generators):
            self.node(g.target)
            if i:
                self.node(g.iter)
            self.seq(g.ifs)
            out.append(str(g.is_async))
        if type(n) is ast.DictComp:
            self.node(n.key)
            self.node(n.value)
        else:
            self.node(n.elt)
        self.leave(saved)


def ast_hash(code: str) -> str:
    """sha256 of the canonical AST dump (see the module docstring). Raises
    ValueError when the code does not parse, so callers can reject it."""
    return hashlib.sha256("\x1f".join(canonical_tokens(code)).encode("utf-8", "surrogatepass")).hexdigest()


@lru_cache(maxsize=64)
def canonical_tokens(code: str) -> tuple[str, ...]:
    """The canonical AST as a token stream. Cached: the gate's embedding layer
    vectorises the same stream right after the hash, and parsing is most of the cost."""
    try:
        with warnings.catch_warnings():  # e.g. invalid escape sequences: not ours to report
            warnings.simplefilter("ignore")
            tree = parse_python(code)
    except SyntaxError as exc:
        raise ValueError(f"code does not parse: {exc.msg} (line {exc.lineno})") from exc
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise ValueError(f"code does not parse: {type(exc).__name__}: {exc}") from exc
    c = _Canon()
    try:
        c.seq(tree.body)
    except RecursionError as exc:
        raise ValueError("code is nested too deeply to fingerprint") from exc
    return tuple(c.out)
