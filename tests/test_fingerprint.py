"""The first two layers of the dedup gate: text hash and canonical AST hash.
Equal hash = the gate reuses a recorded result, so a false "equal" skips a real
experiment and a false "different" wastes compute on a duplicate."""
import dataclasses

import pytest

from archlab.code_hashes import CodeHashes, ast_hash, hashes, text_hash

MIXER = '''"""Causal token mixer: depthwise conv + gated linear attention."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class TokenMixer(nn.Module):
    """Mixes tokens along time; must stay causal."""

    def __init__(self, dim: int, heads: int = 4, kernel: int = 3) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim, padding=kernel - 1)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        kv = torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=1)
        y = torch.einsum("btd,btde->bte", q, kv)
        c = self.conv(x.transpose(1, 2))[..., :t].transpose(1, 2)
        for _ in range(2):
            c = c + torch.sigmoid(c) * y
        return self.out(c)
'''

# The same module: locals renamed, reformatted, comments and docstrings
# changed, annotations dropped, a `pass` added.
MIXER_RESTYLED = '''import torch
import torch.nn as nn
import torch.nn.functional as F

class TokenMixer(nn.Module):
  """A different docstring."""
  def __init__(me, d_model, n_heads=4, width=3):
    super().__init__()
    me.heads = n_heads   # heads
    me.qkv = nn.Linear(d_model, 3*d_model, bias=False)
    me.conv = nn.Conv1d(d_model, d_model, width,
                        groups=d_model, padding=width-1)
    me.out = nn.Linear(d_model, d_model)
    pass

  def forward(me, inp):
    # unpack the shape
    B, T, D = inp.shape
    qq, kk, vv = me.qkv(inp).chunk(3, dim=-1)
    qq, kk = F.elu(qq)+1.0, F.elu(kk)+1.0
    state = torch.cumsum(kk.unsqueeze(-1)*vv.unsqueeze(-2), dim=1)
    mixed = torch.einsum("btd,btde->bte", qq, state)
    conv = me.conv(inp.transpose(1, 2))[..., :T].transpose(1, 2)
    for step in range(2):
      conv = conv + torch.sigmoid(conv)*mixed
    return me.out(conv)
'''

CELL = '''
def cell(x0, ops):
    x1 = ops.nor_conv_3x3(x0)
    x2 = ops.skip_connect(x0) + ops.nor_conv_1x1(x1)
    x3 = ops.avg_pool_3x3(x0) + ops.none(x1) + ops.nor_conv_3x3(x2)
    return x3
'''


def edit(src: str, old: str, new: str) -> str:
    assert src.count(old) == 1, old
    return src.replace(old, new)


def same(a: str, b: str) -> bool:
    return ast_hash(a) == ast_hash(b)


# -- text hash ---------------------------------------------------------------

def test_text_hash_ignores_whitespace_only_changes():
    messy = "\r\n".join(
        line.replace("    ", "  ").replace(" = ", "  =\t") + "   "
        for line in MIXER.splitlines()
    ) + "\r\n\r\n\n"
    assert text_hash(messy) == text_hash(MIXER)
    assert text_hash(MIXER.replace("\n\n", "\n")) == text_hash(MIXER)


def test_text_hash_sees_a_statement_move_out_of_a_loop():
    # NNGPT/LEMUR delete indentation, which makes these two equal.
    inside = "def f(x):\n    for i in range(3):\n        x = g(x)\n        x = h(x)\n    return x\n"
    after = "def f(x):\n    for i in range(3):\n        x = g(x)\n    x = h(x)\n    return x\n"
    assert text_hash(inside) != text_hash(after)
    assert not same(inside, after)


def test_text_hash_sees_comments_and_renames():
    assert text_hash(MIXER) != text_hash(MIXER_RESTYLED)
    assert text_hash(CELL) != text_hash(CELL + "# note\n")


# -- canonical AST: equal where only form changed ------------------------------

def test_restyled_module_is_equal():
    assert same(MIXER, MIXER_RESTYLED)


def test_nb201_cell_renamed_is_equal():
    renamed = '''
def cell(inp, o):
    """NB201 cell."""
    a = o.nor_conv_3x3(inp)
    b = o.skip_connect(inp) + o.nor_conv_1x1(a)   # node 2
    out = o.avg_pool_3x3(inp) + o.none(a) + o.nor_conv_3x3(b)
    return out
'''
    assert same(CELL, renamed)


def test_noop_statements_and_annotations_do_not_count():
    bodies = ["pass", "...", '"""Doc."""', '"""Doc."""\n    pass']
    assert len({ast_hash(f"def f(x):\n    {b}\n") for b in bodies}) == 1
    assert same("def f(x: int, y: 'T' = 2) -> int:\n    z: int = x + y\n    return z\n",
                "def f(x, y=2):\n    z = x + y\n    return z\n")


def test_comprehension_loop_with_and_except_targets_are_local():
    a = '''
def f(xs, path):
    ys = [v * 2 for v in xs if v]
    for i, x in enumerate(ys):
        ys[i] = x + 1
    with open(path) as fh:
        n = fh.read()
    try:
        n = int(n)
    except ValueError as err:
        raise RuntimeError(err)
    return {k: w for k, w in zip(ys, ys)}, n
'''
    b = '''
def f(items, p):
    out = [e * 2 for e in items if e]
    for j, el in enumerate(out):
        out[j] = el + 1
    with open(p) as handle:
        text = handle.read()
    try:
        text = int(text)
    except ValueError as exc:
        raise RuntimeError(exc)
    return {a: c for a, c in zip(out, out)}, text
'''
    assert a != b and same(a, b)


# -- canonical AST: different where behaviour changed ---------------------------

@pytest.mark.parametrize("old,new", [
    ("k.unsqueeze(-1) * v", "k.unsqueeze(-1) + v"),                                    # one operation
    ("F.elu(q) + 1.0", "F.elu(q) + 2.0"),                                              # one constant
    ("F.elu(k) + 1.0", "F.elu(k) + 1"),                                                # 1.0 vs 1
    ("torch.einsum(\"btd,btde->bte\", q, kv)", "torch.einsum(\"btd,btde->bte\", kv, q)"),  # argument order
    ("self.conv(x.transpose", "self.qkv(x.transpose"),                                  # another attribute
    ("torch.sigmoid(c)", "torch.tanh(c)"),                                             # another function
    ("bias=False)", "bias=True)"),
    ("groups=dim", "stride=dim"),                                                      # call keyword name
    ("class TokenMixer(", "class Mixer("),                                             # interface name
    ("def forward(", "def forward_(")                                                  # method name
])
def test_real_change_is_different(old, new):
    assert not same(MIXER, edit(MIXER, old, new))


def test_statement_moved_into_loop_body_is_different():
    moved = edit(MIXER, "            c = c + torch.sigmoid(c) * y\n        return self.out(c)",
                 "            c = c + torch.sigmoid(c) * y\n            c = self.out(c)\n        return c")
    after = edit(MIXER, "            c = c + torch.sigmoid(c) * y\n        return self.out(c)",
                 "            c = c + torch.sigmoid(c) * y\n        c = self.out(c)\n        return c")
    assert not same(moved, after)


def test_nb201_cells_with_other_ops_or_wiring_are_different():
    assert not same(CELL, edit(CELL, "ops.none(x1)", "ops.skip_connect(x1)"))
    assert not same(CELL, edit(CELL, "ops.nor_conv_1x1(x1)", "ops.nor_conv_1x1(x0)"))
    assert not same(CELL, edit(CELL, "ops.nor_conv_3x3(x2)", "ops.nor_conv_3x3(x1)"))


def test_different_functions_with_the_same_local_names_are_different():
    a = "def f(x, y):\n    z = x * y\n    return z - x\n"
    b = "def f(x, y):\n    z = x * y\n    return z - y\n"
    assert not same(a, b)
    # Locals that swap roles: same names, same statements, other data flow.
    c = "def f(x, y):\n    a = x\n    b = y\n    return a - b\n"
    d = "def f(x, y):\n    b = x\n    a = y\n    return a - b\n"
    assert not same(c, d)


def test_closure_variable_is_not_confused_with_an_inner_local():
    a = "def f(a):\n    def g(b):\n        return a + b\n    return g\n"
    b = "def f(a):\n    def g(b):\n        return b + b\n    return g\n"
    assert not same(a, b)
    assert same(a, "def f(p):\n    def h(q):\n        return p + q\n    return h\n")


def test_globals_builtins_and_keyword_only_parameters_keep_their_names():
    assert not same("def f(x):\n    return relu(x)\n", "def f(x):\n    return gelu(x)\n")
    assert not same("def f(x):\n    return len(x)\n", "def f(x):\n    return abs(x)\n")
    assert not same("def f(x, *, dim):\n    return x + dim\n", "def f(x, *, d):\n    return x + d\n")
    assert not same("def f():\n    global n\n    n = 1\n", "def f():\n    global m\n    m = 1\n")
    assert not same("N = 1\n", "M = 1\n")


def test_class_body_annotations_are_kept():
    # dataclass / NamedTuple fields are declared by their annotations.
    a = "@dataclass\nclass C:\n    x: int = 0\n"
    assert not same(a, "@dataclass\nclass C:\n    x = 0\n")
    assert not same(a, "@dataclass\nclass C:\n    x: float = 0\n")


# -- API ----------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["def f(:\n    pass\n", "x = (", "a\0b = 1\n", "class C\n"])
def test_unparseable_code_raises_value_error(bad):
    with pytest.raises(ValueError, match="does not parse"):
        ast_hash(bad)
    with pytest.raises(ValueError):
        hashes(bad)


def test_hashes_bundles_both():
    h = hashes(CELL)
    assert h == CodeHashes(text=text_hash(CELL), ast=ast_hash(CELL))
    assert len(h.text) == len(h.ast) == 64 and h.text != h.ast
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.text = "x"  # type: ignore[misc]
