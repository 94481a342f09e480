"""Gated retention: RetNet's decaying linear-attention state with the decay made
data-dependent (one scalar per head and token, as in GLA / Mamba-2):
S_t = a_t S_{t-1} + k_t^T v_t, o_t = q_t S_t, a_t = sigmoid(w . x_t + b_h), the
biases spread so that heads start with memories from ~10 to ~1000 tokens.
Chunked: decayed C x C scores inside a chunk, a decayed state across chunks.
Per-head RMSNorm and a swish output gate, as in RetNet."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def decayed_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                             chunk: int = 64) -> torch.Tensor:
    """o_t = sum_j<=t exp(sum_{j<s<=t} g_s) (q_t . k_j) v_j. q, k: (B, H, T, D); v: (B, H, T, Dv);
    log_decay g: (B, H, T), <= 0. chunk=1 is the plain recurrence."""
    B, H, T, D = q.shape
    pad = -T % chunk
    if pad:  # padded steps sit after every real one: they cannot reach back
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        log_decay = F.pad(log_decay, (0, pad))
    n = q.shape[2] // chunk
    q, k, v = (t.reshape(B, H, n, chunk, -1) for t in (q, k, v))
    g = log_decay.reshape(B, H, n, chunk).cumsum(-1)          # decay from the chunk's start
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    gap = (g[..., :, None] - g[..., None, :]).masked_fill(~causal, float("-inf"))
    scores = (q @ k.transpose(-1, -2)) * gap.exp()             # (B, H, n, C, C)
    intra = scores @ v
    q_in = q * g.exp()[..., None]                              # decay since the chunk started
    k_out = k * (g[..., -1:] - g).exp()[..., None]             # decay until the chunk ends
    state = q.new_zeros(B, H, D, v.shape[-1])
    out = []
    for i in range(n):
        out.append(intra[:, :, i] + q_in[:, :, i] @ state)
        state = state * g[:, :, i, -1, None, None].exp() + k_out[:, :, i].transpose(-1, -2) @ v[:, :, i]
    return torch.stack(out, 2).reshape(B, H, n * chunk, -1)[:, :, :T]


class TokenMixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, chunk: int = 64, **kwargs):
        super().__init__()
        self.n_heads, self.chunk = n_heads, chunk
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.decay = nn.Linear(d_model, n_heads)
        nn.init.normal_(self.decay.weight, std=0.01)
        with torch.no_grad():  # sigmoid(b) = 1 - 1/memory, memories 10 ... 1000 tokens
            memory = torch.logspace(1, 3, n_heads)
            self.decay.bias.copy_(torch.log(memory - 1.0))
        self.gate = nn.Linear(d_model, d_model, bias=False)
        self.norm = nn.RMSNorm(d_model // n_heads)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        log_decay = F.logsigmoid(self.decay(x).float()).transpose(1, 2)  # (B, H, T)
        with torch.autocast(x.device.type, enabled=False):
            q = q.float() / math.sqrt(D // H)
            o = decayed_linear_attention(q, k.float(), v.float(), log_decay, self.chunk)
        o = self.norm(o).transpose(1, 2).reshape(B, T, D)
        return self.out(o.to(x.dtype) * F.silu(self.gate(x)))
