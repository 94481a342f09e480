"""DeltaNet (Schlag et al., 2021; Yang et al., 2024): a fast-weight state updated
by the delta rule, S_t = S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T, read as
o_t = S_t q_t. Trained with the chunked parallel form: inside a chunk the
product of the (I - b k k^T) factors is folded into the WY/UT form, one
triangular solve per chunk, and only T/C states are carried across chunks.
Short causal convolutions on q, k, v; SiLU + L2-normalised q and k; RMSNorm out."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def delta_rule_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                       chunk: int = 64) -> torch.Tensor:
    """q, k: (B, H, T, D) with unit-norm k; v: (B, H, T, Dv); beta: (B, H, T) in (0, 1).
    chunk=1 is the plain recurrence; every chunk size gives the same result."""
    B, H, T, D = q.shape
    pad = -T % chunk
    if pad:  # padded steps have beta = 0: they leave the state alone
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        beta = F.pad(beta, (0, pad))
    n = q.shape[2] // chunk
    q, k, v = (t.reshape(B, H, n, chunk, -1) for t in (q, k, v))
    beta = beta.reshape(B, H, n, chunk, 1)
    k_beta, v_beta = k * beta, v * beta
    eye = torch.eye(chunk, device=q.device, dtype=q.dtype)
    strict = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril(-1)
    # UT transform: (I + tril(diag(b) K K^T, -1))^-1 turns the chunk's sequential updates into matmuls.
    lower = (k_beta @ k.transpose(-1, -2)).masked_fill(~strict, 0.0)
    inv = torch.linalg.solve_triangular(eye + lower, eye.expand_as(lower), upper=False)
    u, w = inv @ v_beta, inv @ k_beta          # pseudo-values and WY weights
    causal = strict | torch.eye(chunk, dtype=torch.bool, device=q.device)
    state = q.new_zeros(B, H, D, v.shape[-1])  # S^T: (D, Dv)
    out = []
    for i in range(n):
        qi, ki = q[:, :, i], k[:, :, i]
        new_v = u[:, :, i] - w[:, :, i] @ state
        scores = (qi @ ki.transpose(-1, -2)).masked_fill(~causal, 0.0)
        out.append(qi @ state + scores @ new_v)
        state = state + ki.transpose(-1, -2) @ new_v
    return torch.stack(out, 2).reshape(B, H, n * chunk, -1)[:, :, :T]


class ShortConv(nn.Module):
    """Causal depthwise convolution over time, then SiLU."""

    def __init__(self, dim: int, kernel: int = 4):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim, padding=kernel - 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2))


class TokenMixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, chunk: int = 64, **kwargs):
        super().__init__()
        self.n_heads, self.chunk = n_heads, chunk
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = ShortConv(3 * d_model)  # depthwise: q, k and v each get their own filters
        self.beta = nn.Linear(d_model, n_heads)
        self.norm = nn.RMSNorm(d_model // n_heads)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.conv(self.qkv(x)).chunk(3, dim=-1)
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
        beta = torch.sigmoid(self.beta(x)).transpose(1, 2)  # (B, H, T)
        with torch.autocast(x.device.type, enabled=False):  # the triangular solve wants float32
            q, k = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
            o = delta_rule_chunked(q, k, v.float(), beta.float(), self.chunk)
        o = self.norm(o)
        return self.out(o.to(x.dtype).transpose(1, 2).reshape(B, T, D))
