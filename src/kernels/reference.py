"""The naive attention softmax(Q K^T / sqrt(d)) V: the original model's attention and the reference for every kernel."""

import math

import torch

from src import nvtx


def causal_mask(n_queries: int, n_keys: int, device=None) -> torch.Tensor:
    """True where query i may see key j: j <= i (top-left aligned, as torch's SDPA is_causal)."""
    q_idx = torch.arange(n_queries, device=device)[:, None]
    k_idx = torch.arange(n_keys, device=device)[None, :]
    return k_idx <= q_idx  # (Tq, Tk)


def naive_attention(q, k, v, is_causal: bool = False, return_lse: bool = False):
    """q: (..., Tq, d), k and v: (..., Tk, d) -> out (..., Tq, d) [and logsumexp L (..., Tq)].

    Materialises the full (..., Tq, Tk) score matrix: memory grows with T^2.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    with nvtx.model_range("attention scores"):
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (..., Tq, Tk)
        if is_causal:
            scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    with nvtx.model_range("softmax"):
        probs = torch.softmax(scores, dim=-1)
    with nvtx.model_range("weighted sum"):
        out = torch.matmul(probs.to(v.dtype), v)  # (..., Tq, d)
    if return_lse:
        return out, torch.logsumexp(scores.float(), dim=-1)
    return out


def attention_reference(q, k, v, is_causal: bool = False):
    """The float64 reference the tests compare every implementation against: (out, L), both float64."""
    return naive_attention(q.double(), k.double(), v.double(), is_causal=is_causal, return_lse=True)
