"""Labelled pairs of lm TokenMixer candidates for the tolerance-aware behaviour
layer (the data of benchmarks/dedup_rewrites.py): pairs that compute the same
function through different float operations (equal to ~1e-7, not bit-equal, so
a hash of outputs rounded to 4 decimals splits them), and pairs that differ on
purpose but only slightly (an epsilon, a decay, a mask off by one, a
near-identical activation), which must stay apart.

Every pair keeps the parameter layout and creation order of its base, so the
same torch.manual_seed gives both sides the same weights.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

HEADER = "import math\n\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\n"


@dataclass(frozen=True)
class Pair:
    name: str
    a: str       # complete candidate module source
    b: str
    same: bool   # True: numerically the same mixer; False: must stay apart
    kind: str


def render(template: str, slots: dict[str, str]) -> str:
    """Fill <<NAME>> slots; a slot alone on its line takes a (multi-line) block at that indent."""
    for _ in range(8):  # snippets may contain slots of their own
        lines = []
        for line in template.splitlines():
            m = re.fullmatch(r"( *)<<(\w+)>>", line)
            if m:
                block = textwrap.dedent(slots[m.group(2)]).strip("\n")
                lines += [m.group(1) + ln if ln else ln for ln in block.splitlines()]
            else:
                lines.append(re.sub(r"<<(\w+)>>", lambda t: slots[t.group(1)], line))
        template = "\n".join(lines)
        if "<<" not in template:  # two blank lines before each top-level def / class, as PEP 8 has it
            return HEADER + re.sub(r"\n+(?=(class|def) )", "\n\n\n", template).strip("\n") + "\n"
    raise ValueError("unfilled slot")


def in_helper(src: str) -> str:
    """The whole mixer moved into a helper nn.Module that TokenMixer holds: parameters are
    created in the same order with the same shapes, so seeded init is unchanged."""
    body = src.replace("class TokenMixer(nn.Module):", "class Core(nn.Module):")
    return body + textwrap.dedent("""

        class TokenMixer(nn.Module):
            def __init__(self, d_model: int, n_heads: int, **kwargs):
                super().__init__()
                self.core = Core(d_model, n_heads)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.core(x)
        """)


class Base:
    def __init__(self, template: str, **defaults: str) -> None:
        self.template, self.defaults = template, defaults

    def __call__(self, **over: str) -> str:
        return render(self.template, {**self.defaults, **over})


# -- 1-3. attention-style mixers sharing one qkv projection --------------------------------

QKV = '''
<<HELPER>>
class TokenMixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **kwargs):
        super().__init__()
        self.h = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        <<GATE_INIT>>
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H = <<HEADS>>
        E = D // H
        q, k, v = self.qkv(x).view(B, T, 3, H, E).<<LAYOUT>>
        <<BODY>>
'''
QKV_SLOTS = {"HELPER": "", "GATE_INIT": "", "HEADS": "self.h"}
BHTE = "permute(2, 0, 3, 1, 4)  # each (B, H, T, E)"

# 1. causal linear attention, elu+1 features, einsum state form
LIN = Base(QKV, **QKV_SLOTS, LAYOUT="unbind(2)  # each (B, T, H, E)", EPS="1e-6",
           BODY="<<FEAT>>\n<<MIX>>\nreturn self.out(o.reshape(B, T, D))",
           FEAT="q, k = F.elu(q) + 1, F.elu(k) + 1", MIX='''
    kv = torch.einsum("bthd,bthe->bthde", k, v).cumsum(1)
    num = torch.einsum("bthd,bthde->bthe", q, kv)
    den = torch.einsum("bthd,bthd->bth", q, k.cumsum(1))[..., None]
    o = num / (den + <<EPS>>)
''')
LIN_BCAST = '''
    kv = (k[..., :, None] * v[..., None, :]).cumsum(1)
    num = (q[..., :, None] * kv).sum(-2)
    o = num / ((q * k.cumsum(1)).sum(-1, keepdim=True) + <<EPS>>)
'''
LIN_QUAD = '''
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    s = (qh @ kh.transpose(-1, -2)).tril(<<DIAG>>)
    o = ((s @ vh) / (s.sum(-1, keepdim=True) + <<EPS>>)).transpose(1, 2)
'''
LIN_QUAD_EINSUM = '''
    s = torch.einsum("bthd,bshd->bhts", q, k).tril()
    o = torch.einsum("bhts,bshe->bthe", s, v) / ((q * k.cumsum(1)).sum(-1, keepdim=True) + <<EPS>>)
'''
LIN_CHUNKED = '''
    S, z, outs = q.new_zeros(B, H, E, E), q.new_zeros(B, H, E), []
    for i in range(0, T, 32):  # running state carried across chunks of 32
        qc, kc, vc = q[:, i:i + 32], k[:, i:i + 32], v[:, i:i + 32]
        kv = torch.einsum("bthd,bthe->bthde", kc, vc).cumsum(1) + S[:, None]
        kz = kc.cumsum(1) + z[:, None]
        den = torch.einsum("bthd,bthd->bth", qc, kz)[..., None]
        outs.append(torch.einsum("bthd,bthde->bthe", qc, kv) / (den + <<EPS>>))
        S, z = kv[:, -1], kz[:, -1]
    o = torch.cat(outs, 1)
'''
LIN_F64 = '''
    qd, kd, vd = q.double(), k.double(), v.double()
    kv = torch.einsum("bthd,bthe->bthde", kd, vd).cumsum(1)
    den = torch.einsum("bthd,bthd->bth", qd, kd.cumsum(1))[..., None]
    o = (torch.einsum("bthd,bthde->bthe", qd, kv) / (den + <<EPS>>)).float()
'''
PHI_WHERE = ('def phi(t: torch.Tensor) -> torch.Tensor:\n    """elu(t) + 1 without the -1 +1 round trip."""\n'
             '    return torch.where(t > 0, t + 1, t.exp())\n\n')

# 2. retention: linear attention with a fixed per-head decay, swish output gate
GATE_INIT = "self.gate = nn.Linear(d_model, d_model, bias=False)"
RET = Base(QKV, **{**QKV_SLOTS, "GATE_INIT": GATE_INIT}, LAYOUT=BHTE, BODY='''
    gam = 1 - (1 - <<DECAY>>) * 0.5 ** torch.arange(H, device=x.device, dtype=x.dtype)  # per-head decay
    q = q * ((1 - gam)[:, None, None] / <<TEMP>>)  # (1 - gam): the decay weights sum to < 1
    <<RET>>
    o = o.transpose(1, 2).reshape(B, T, D)
    <<GATE>>
    return self.out(y)
''', DECAY="0.9", TEMP="math.sqrt(E)", CMP=">=", GATE="y = o * F.silu(self.gate(x))", RET='''
    idx = torch.arange(T, device=x.device, dtype=q.dtype)
    dif = idx[:, None] - idx[None, :]
    dm = gam[:, None, None] ** dif.clamp(min=0) * (dif <<CMP>> 0)
    o = ((q @ k.transpose(-1, -2)) * dm) @ v
''')
RET_EXP = '''
    idx = torch.arange(T, device=x.device, dtype=q.dtype)
    dif = idx[:, None] - idx[None, :]
    dm = torch.exp(dif.clamp(min=0) * gam.log()[:, None, None]).masked_fill(dif < 0, 0.0)
    o = ((q @ k.transpose(-1, -2)) * dm) @ v
'''
RET_LOOP = '''
    S, outs = q.new_zeros(B, H, E, E), []
    for t in range(T):  # S_t = gam S_{t-1} + k_t^T v_t, o_t = q_t S_t
        S = gam[:, None, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, :, None] * S).sum(-2))
    o = torch.stack(outs, 2)
'''
RET_CHUNKED = '''
    S, outs, g = q.new_zeros(B, H, E, E), [], gam[:, None, None]
    for i in range(0, T, 32):
        qc, kc, vc = q[:, :, i:i + 32], k[:, :, i:i + 32], v[:, :, i:i + 32]
        n = qc.shape[2]
        idx = torch.arange(n, device=x.device, dtype=q.dtype)
        dif = idx[:, None] - idx[None, :]
        inner = ((qc @ kc.transpose(-1, -2)) * (g ** dif.clamp(min=0) * (dif >= 0))) @ vc
        outs.append(inner + (qc * g ** (idx + 1)[:, None]) @ S)
        S = g ** n * S + (kc * g ** (n - 1 - idx)[:, None]).transpose(-1, -2) @ vc
    o = torch.cat(outs, 2)
'''
RET_F64 = ("q, k, v, gam = q.double(), k.double(), v.double(), gam.double()\n"
           + textwrap.dedent(RET.defaults["RET"]).strip() + "\no = o.float()")

# 3. softmax attention with a causal mask
SM = Base(QKV, **QKV_SLOTS, LAYOUT=BHTE, BODY="<<ATT>>\nreturn self.out(o.transpose(1, 2).reshape(B, T, D))",
          TEMP="math.sqrt(E)", MASK="mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()", ATT='''
    <<MASK>>
    s = (q @ k.transpose(-1, -2)) / <<TEMP>>
    o = s.masked_fill(~mask, float("-inf")).softmax(-1) @ v
''')
SM_SDPA = "o = F.scaled_dot_product_attention(q, k, v, is_causal=True)"
SM_SDPA_MASK = "<<MASK>>\no = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / <<TEMP>>)"
SM_MANUAL = '''
    <<MASK>>
    s = (q * (1 / <<TEMP>>)) @ k.transpose(-1, -2)
    p = torch.exp(s - s.amax(-1, keepdim=True)) * mask  # softmax by hand, max over the full row
    o = (p / p.sum(-1, keepdim=True)) @ v
'''
SM_LOGSOFTMAX = '''
    <<MASK>>
    s = (q @ k.transpose(-1, -2)) / <<TEMP>>
    o = s.masked_fill(~mask, float("-inf")).log_softmax(-1).exp() @ v
'''
SM_ADDITIVE = '''
    s = (q @ k.transpose(-1, -2)) / <<TEMP>> + torch.full((T, T), float("-inf"), device=x.device).triu(1)
    o = s.softmax(-1) @ v
'''
SM_SOFTCAP = '''
    <<MASK>>
    s = 30 * torch.tanh((q @ k.transpose(-1, -2)) / <<TEMP>> / 30)  # soft-capped logits, as in Gemma 2
    o = s.masked_fill(~mask, float("-inf")).softmax(-1) @ v
'''
SM_EINSUM = '''
    <<MASK>>
    s = torch.einsum("bhtd,bhsd->bhts", q, k) / <<TEMP>>
    p = s.masked_fill(~mask, float("-inf")).softmax(-1)
    o = (p[..., None] * v[:, :, None]).sum(-2)  # (B, H, T, S, E) summed over S
'''
SM_LOOP = '''
    o = torch.cat([(q[:, :, t:t + 1] @ k[:, :, :t + 1].transpose(-1, -2) / <<TEMP>>).softmax(-1)
                   @ v[:, :, :t + 1] for t in range(T)], 2)  # one query at a time over its prefix
'''
SM_F64 = '''
    <<MASK>>
    s = (q.double() @ k.double().transpose(-1, -2)) / <<TEMP>>
    o = (s.masked_fill(~mask, float("-inf")).softmax(-1) @ v.double()).float()
'''
ONES = "torch.ones(T, T, dtype=torch.bool, device=x.device)"
SM_STRICT = f"mask = {ONES}.tril(-1)\nmask[0, 0] = True  # the first token has nothing before it"
SM_WINDOW = f"mask = {ONES}.tril() & ~{ONES}.tril(-<<W>>)  # the last <<W>> tokens"

# -- 4. pre-normalised running-mean mixer with a swish gate and a residual ----------------

NRM = Base('''
<<HELPER>>
class TokenMixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **kwargs):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.inp = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        <<INIT>>

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        <<NORM>>
        <<MIX>>
        y = self.out(<<M>> * <<ACT>>)
        return <<RES>> + y
''', HELPER="", INIT="", EPS="1e-6", ACT="F.silu(g)", M="m", RES="x", START="1",
    NORM="h = F.rms_norm(x, (D,), self.w, eps=<<EPS>>)", MIX='''
    u, g = self.inp(h).chunk(2, -1)
    m = u.cumsum(1) / torch.arange(<<START>>, T + <<START>>, device=x.device, dtype=x.dtype)[:, None]
''')
RMS_RSQRT = "h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + <<EPS>>) * self.w"
RMS_EINSUM = 'h = x * torch.rsqrt(torch.einsum("btd,btd->bt", x, x)[..., None] / D + <<EPS>>) * self.w'
RMS_DIV = "h = self.w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + <<EPS>>)"
RMS_L2 = "h = x / torch.sqrt(x.norm(dim=-1, keepdim=True) ** 2 / D + <<EPS>>) * self.w"
RMS_F64 = "xd = x.double()\nh = (xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + <<EPS>>)).float() * self.w"
RMS_FN = ("def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:\n"
          "    return w * x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()\n\n")
RMS_MODULE = "self.norm = nn.RMSNorm(d_model, eps=<<EPS>>)  # weight starts at ones: no draw from the RNG"
LN_F = "h = F.layer_norm(x, (D,), self.w, self.b, eps=<<EPS>>)"
LN_EXPLICIT = '''
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    h = (x - mu) / torch.sqrt(var + <<EPS>>) * self.w + self.b
'''
LN_VAR = ("h = (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + <<EPS>>)"
          " * self.w + self.b")
NRM_MAT = '''
    u, g = self.inp(h).chunk(2, -1)
    M = torch.ones(T, T, device=x.device, dtype=x.dtype).tril()
    m = (M / M.sum(-1, keepdim=True)) @ u
'''
NRM_REASSOC = '''
    M = torch.ones(T, T, device=x.device, dtype=x.dtype).tril()
    W, c = self.inp.weight.chunk(2, 0), self.inp.bias.chunk(2, 0)
    m = F.linear((M / M.sum(-1, keepdim=True)) @ h, W[0], c[0])  # (M h) W^T + b = M (h W^T + b): rows sum to 1
    g = F.linear(h, W[1], c[1])
'''

# -- 5. gated short causal convolution (activation and gating) ----------------------------

GC = Base('''
class TokenMixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **kwargs):
        super().__init__()
        self.inp = nn.Linear(d_model, 2 * d_model)
        self.conv = nn.Conv1d(d_model, d_model, 4, groups=d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        u, g = self.inp(x).chunk(2, -1)
        <<CONV>>
        return self.out(<<ACT>>)
''', PAD="3", ACT="F.silu(c) * torch.sigmoid(g)",
    CONV="c = self.conv(F.pad(u.transpose(1, 2), (<<PAD>>, 0)))[..., :T].transpose(1, 2)")
GC_SHIFTS = '''
    w, up = self.conv.weight[:, 0], F.pad(u, (0, 0, 3, 0))  # w: (D, 4)
    c = sum(up[:, i:i + T] * w[:, i] for i in range(4))
'''
GC_UNFOLD = "c = (F.pad(u, (0, 0, 3, 0)).unfold(1, 4, 1) * self.conv.weight[:, 0]).sum(-1)  # windows (B, T, D, 4)"
GC_SHIFTS_REV = GC_SHIFTS.replace("range(4)", "(3, 2, 1, 0)")  # the newest token first
GC_F64 = ("c = F.conv1d(F.pad(u.transpose(1, 2).double(), (3, 0)), self.conv.weight.double(), groups=D)"
          ".float().transpose(1, 2)")


def _pairs() -> list[Pair]:
    S, A = True, False
    rows: list[tuple[str, str, str, bool, str]] = [
        # linear attention
        ("lin/einsum-vs-broadcast", LIN(), LIN(MIX=LIN_BCAST), S, "einsum-vs-broadcast"),
        ("lin/state-vs-quadratic", LIN(), LIN(MIX=LIN_QUAD, DIAG=""), S, "reduction-order"),
        ("lin/quadratic-matmul-vs-einsum", LIN(MIX=LIN_QUAD, DIAG=""), LIN(MIX=LIN_QUAD_EINSUM), S, "einsum-vs-matmul"),
        ("lin/cumsum-vs-chunked", LIN(), LIN(MIX=LIN_CHUNKED), S, "reduction-order"),
        ("lin/float64", LIN(MIX=LIN_BCAST), LIN(MIX=LIN_F64), S, "float64"),
        ("lin/elu-vs-where-helper", LIN(), LIN(HELPER=PHI_WHERE, FEAT="q, k = phi(q), phi(k)"), S, "helper-fn+fused"),
        ("lin/helper-module", LIN(), in_helper(LIN(MIX=LIN_CHUNKED)), S, "helper-module"),
        ("lin/eps", LIN(), LIN(EPS="1e-2"), A, "epsilon"),
        ("lin/strict-past", LIN(MIX=LIN_QUAD, DIAG=""), LIN(MIX=LIN_QUAD, DIAG="-1"), A, "mask-off-by-one"),
        ("lin/elu-vs-rational", LIN(), LIN(FEAT="q, k = (torch.where(t > 0, t + 1, 1 / (1 - t)) for t in (q, k))"), A,
         "activation"),
        ("lin/feature-offset", LIN(), LIN(FEAT="q, k = F.elu(q) + 1.05, F.elu(k) + 1.05"), A, "constant"),
        ("lin/2x-heads", LIN(), LIN(HEADS="2 * self.h"), A, "heads"),
        # retention
        ("ret/power-vs-exp", RET(), RET(RET=RET_EXP), S, "fused-vs-unfused"),
        ("ret/parallel-vs-recurrent", RET(), RET(RET=RET_LOOP), S, "reduction-order"),
        ("ret/parallel-vs-chunked", RET(), RET(RET=RET_CHUNKED), S, "reduction-order"),
        ("ret/recurrent-vs-chunked", RET(RET=RET_LOOP), RET(RET=RET_CHUNKED), S, "reduction-order"),
        ("ret/float64", RET(), RET(RET=RET_F64), S, "float64"),
        ("ret/silu-vs-x-sigmoid", RET(), RET(GATE="g = self.gate(x)\ny = o * (g * torch.sigmoid(g))"), S,
         "fused-vs-unfused"),
        ("ret/helper-module", RET(RET=RET_LOOP), in_helper(RET(RET=RET_EXP)), S, "helper-module"),
        ("ret/decay", RET(), RET(DECAY="0.91"), A, "decay"),
        ("ret/strict-past", RET(), RET(CMP=">"), A, "mask-off-by-one"),
        ("ret/silu-vs-gelu-gate", RET(), RET(GATE="y = o * F.gelu(self.gate(x))"), A, "activation"),
        ("ret/temperature", RET(), RET(TEMP="math.sqrt(E + 1)"), A, "temperature"),
        ("ret/2x-heads", RET(), RET(HEADS="2 * self.h"), A, "heads"),
        # softmax attention
        ("sm/sdpa-vs-explicit", SM(ATT=SM_SDPA), SM(), S, "fused-vs-unfused"),
        ("sm/sdpa-vs-manual-softmax", SM(ATT=SM_SDPA), SM(ATT=SM_MANUAL), S, "fused-vs-unfused"),
        ("sm/sdpa-mask-vs-additive", SM(ATT=SM_SDPA_MASK), SM(ATT=SM_ADDITIVE), S, "fused-vs-unfused"),
        ("sm/matmul-vs-einsum", SM(), SM(ATT=SM_EINSUM), S, "einsum-vs-broadcast"),
        ("sm/softmax-vs-log-softmax", SM(), SM(ATT=SM_LOGSOFTMAX), S, "fused-vs-unfused"),
        ("sm/masked-vs-prefix-loop", SM(), SM(ATT=SM_LOOP), S, "reduction-order"),
        ("sm/float64", SM(), SM(ATT=SM_F64), S, "float64"),
        ("sm/helper-module", SM(ATT=SM_SDPA), in_helper(SM(ATT=SM_EINSUM)), S, "helper-module"),
        ("sm/temperature", SM(), SM(TEMP="math.sqrt(E + 1)"), A, "temperature"),
        ("sm/strict-past", SM(), SM(MASK=SM_STRICT), A, "mask-off-by-one"),
        ("sm/window-48-vs-47", SM(MASK=SM_WINDOW, W="48"), SM(MASK=SM_WINDOW, W="47"), A, "mask-off-by-one"),
        ("sm/logit-softcap", SM(), SM(ATT=SM_SOFTCAP), A, "activation"),
        ("sm/2x-heads", SM(), SM(HEADS="2 * self.h"), A, "heads"),
        # normalised mixer
        ("nrm/rms-F-vs-einsum", NRM(), NRM(NORM=RMS_EINSUM), S, "fused-vs-unfused"),
        ("nrm/rms-rsqrt-vs-div", NRM(NORM=RMS_RSQRT), NRM(NORM=RMS_DIV), S, "norm-formula"),
        ("nrm/rms-vs-l2norm", NRM(), NRM(NORM=RMS_L2), S, "norm-formula"),
        ("nrm/rms-float64", NRM(NORM=RMS_DIV), NRM(NORM=RMS_F64), S, "float64"),
        ("nrm/rms-helper-fn", NRM(NORM=RMS_RSQRT), NRM(HELPER=RMS_FN, NORM="h = rms_norm(x, self.w, <<EPS>>)"), S,
         "helper-fn"),
        ("nrm/nn-rmsnorm-vs-explicit", NRM(INIT=RMS_MODULE, NORM="h = self.norm(x)"),
         NRM(INIT=RMS_MODULE, NORM=RMS_DIV), S, "fused-vs-unfused"),
        ("nrm/ln-F-vs-explicit", NRM(NORM=LN_F), NRM(NORM=LN_EXPLICIT), S, "fused-vs-unfused"),
        ("nrm/ln-explicit-vs-var", NRM(NORM=LN_EXPLICIT), NRM(NORM=LN_VAR), S, "norm-formula"),
        ("nrm/cumsum-vs-matrix", NRM(), NRM(MIX=NRM_MAT), S, "reduction-order"),
        ("nrm/reassociated", NRM(MIX=NRM_MAT), NRM(MIX=NRM_REASSOC), S, "reassociation"),
        ("nrm/silu-vs-x-sigmoid", NRM(), NRM(ACT="(g * torch.sigmoid(g))"), S, "fused-vs-unfused"),
        ("nrm/rms-eps", NRM(), NRM(EPS="1e-3"), A, "epsilon"),
        ("nrm/ln-eps", NRM(NORM=LN_F), NRM(NORM=LN_F, EPS="1e-3"), A, "epsilon"),
        ("nrm/rms-vs-ln", NRM(NORM=LN_F), NRM(), A, "norm-type"),
        ("nrm/residual-scale", NRM(), NRM(RES="1.001 * x"), A, "residual-scale"),
        ("nrm/silu-vs-gelu", NRM(), NRM(ACT="F.gelu(g)"), A, "activation"),
        ("nrm/tanh-vs-identity", NRM(), NRM(M="torch.tanh(m)"), A, "activation"),
        ("nrm/count-off-by-one", NRM(), NRM(START="2"), A, "count-off-by-one"),
        # gated convolution
        ("gc/conv-vs-shifts", GC(), GC(CONV=GC_SHIFTS), S, "reduction-order"),
        ("gc/conv-vs-unfold", GC(), GC(CONV=GC_UNFOLD), S, "broadcast-vs-conv"),
        ("gc/shifts-reversed", GC(CONV=GC_SHIFTS), GC(CONV=GC_SHIFTS_REV), S, "reduction-order"),
        ("gc/float64", GC(), GC(CONV=GC_F64), S, "float64"),
        ("gc/silu-vs-x-sigmoid", GC(), GC(ACT="c * torch.sigmoid(c) * torch.sigmoid(g)"), S, "fused-vs-unfused"),
        ("gc/sigmoid-vs-tanh", GC(), GC(ACT="F.silu(c) * (0.5 + 0.5 * torch.tanh(0.5 * g))"), S, "fused-vs-unfused"),
        ("gc/helper-module", GC(CONV=GC_SHIFTS), in_helper(GC()), S, "helper-module"),
        ("gc/silu-vs-gelu", GC(), GC(ACT="F.gelu(c) * torch.sigmoid(g)"), A, "activation"),
        ("gc/silu-vs-hardswish", GC(), GC(ACT="F.hardswish(c) * torch.sigmoid(g)"), A, "activation"),
        ("gc/shifted-past", GC(), GC(PAD="4"), A, "mask-off-by-one"),
    ]
    return [Pair(*r) for r in rows]


PAIRS: list[Pair] = _pairs()
