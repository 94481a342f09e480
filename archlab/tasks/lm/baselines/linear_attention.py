"""Linear attention (Katharopoulos et al., 2020): feature map elu(x) + 1, causal
normaliser, computed in chunks. Inside a chunk of C tokens the masked C x C
scores are used directly; across chunks each query reads the running key-value
state summed over the earlier chunks. Memory O(T/C * d^2), not O(T * d^2)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def chunked_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = 64,
                             eps: float = 1e-6) -> torch.Tensor:
    """Causal sum_j<=t (q_t . k_j) v_j / sum_j<=t (q_t . k_j). q, k, v: (B, H, T, D), q/k >= 0."""
    B, H, T, D = q.shape
    pad = -T % chunk
    if pad:  # zero keys and values at the end change nothing before them
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    n = q.shape[2] // chunk
    q, k, v = (t.reshape(B, H, n, chunk, -1) for t in (q, k, v))
    kv = k.transpose(-1, -2) @ v                                  # (B, H, n, D, Dv): each chunk's state
    state = kv.cumsum(2) - kv                                     # the sum over earlier chunks only
    ksum = k.sum(3, keepdim=True)                                 # (B, H, n, 1, D)
    kprev = ksum.cumsum(2) - ksum
    mask = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)    # (B, H, n, C, C)
    num = scores @ v + q @ state
    den = scores.sum(-1, keepdim=True) + (q * kprev).sum(-1, keepdim=True)
    out = num / (den + eps)
    return out.reshape(B, H, n * chunk, -1)[:, :, :T]


class TokenMixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, chunk: int = 64, **kwargs):
        super().__init__()
        self.n_heads, self.chunk = n_heads, chunk
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        with torch.autocast(x.device.type, enabled=False):  # sums over T want float32
            o = chunked_linear_attention(q.float(), k.float(), v.float(), self.chunk)
        return self.out(o.to(x.dtype).transpose(1, 2).reshape(B, T, D))
