"""FlashAttention-2 in plain PyTorch: the tiled algorithm written out readably, and attention's CPU path.

Q (..., Tq, d), K and V (..., Tk, d) -> O (..., Tq, d); L (..., Tq) is the float32 logsumexp of each score row.
Forward: for each query tile, walk the key tiles keeping a running row max m, a running denominator l and an
unnormalised output, rescaled whenever m grows (the online softmax); the T x T score matrix never exists whole.
Backward: recompute each tile's P = exp(S - L) from the saved L, with D = rowsum(dO * O) in place of rowsum(dP * P).
Causal is top-left aligned like SDPA's is_causal: key j is visible to query i iff j <= i. Tiles wholly above the
diagonal are skipped; only tiles that cross it are masked. Arithmetic is float32 whatever the input dtype.
"""

import math

import torch

Q_TILE = 64  # query rows per tile
K_TILE = 64  # key rows per tile


def _causal_tile_mask(i0: int, i1: int, j0: int, j1: int, device) -> torch.Tensor:
    """True where query i may see key j, for queries [i0, i1) and keys [j0, j1)."""
    return torch.arange(j0, j1, device=device)[None, :] <= torch.arange(i0, i1, device=device)[:, None]  # (tq, tk)


def _crosses_diagonal(i0: int, j1: int) -> bool:
    """A tile whose last key j1 - 1 lies beyond its first query i0 has some hidden entries."""
    return j1 - 1 > i0


def flash_forward(Q, K, V, is_causal=False, q_tile=Q_TILE, k_tile=K_TILE):
    """-> (O like Q, L of shape Q.shape[:-1] in float32)."""
    Tq, Tk, d = Q.shape[-2], K.shape[-2], Q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    O = torch.empty(Q.shape, dtype=torch.float32, device=Q.device)
    L = torch.empty(Q.shape[:-1], dtype=torch.float32, device=Q.device)
    for i0 in range(0, Tq, q_tile):
        i1 = min(i0 + q_tile, Tq)
        q = Q[..., i0:i1, :].float()  # (..., tq, d)
        m = torch.full(q.shape[:-1], float("-inf"), device=Q.device)  # (..., tq) running row max
        l = torch.zeros(q.shape[:-1], device=Q.device)  # (..., tq) running sum of exp(S - m)
        acc = torch.zeros(q.shape, device=Q.device)  # (..., tq, d) running unnormalised output
        k_end = min(i1, Tk) if is_causal else Tk  # keys past the tile's last query are hidden from all of it
        for j0 in range(0, k_end, k_tile):
            j1 = min(j0 + k_tile, Tk)
            k, v = K[..., j0:j1, :].float(), V[..., j0:j1, :].float()  # (..., tk, d)
            s = q @ k.transpose(-2, -1) * scale  # (..., tq, tk)
            if is_causal and _crosses_diagonal(i0, j1):
                s = s.masked_fill(~_causal_tile_mask(i0, i1, j0, j1, Q.device), float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1))  # finite: key 0 is in the first tile and visible to all
            p = torch.exp(s - m_new[..., None])  # (..., tq, tk)
            alpha = torch.exp(m - m_new)  # rescales what was summed under the old max
            l = alpha * l + p.sum(dim=-1)
            acc = alpha[..., None] * acc + p @ v
            m = m_new
        O[..., i0:i1, :] = acc / l[..., None]
        L[..., i0:i1] = m + torch.log(l)
    return O.to(Q.dtype), L


def flash_backward(Q, K, V, O, L, dO, is_causal=False, q_tile=Q_TILE, k_tile=K_TILE):
    """-> (dQ, dK, dV), each like its input; P is recomputed tile by tile from L."""
    Tq, Tk, d = Q.shape[-2], K.shape[-2], Q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    D = (dO.float() * O.float()).sum(dim=-1)  # (..., Tq) = rowsum(P * dP), without P or dP
    dQ = torch.zeros(Q.shape, dtype=torch.float32, device=Q.device)
    dK = torch.zeros(K.shape, dtype=torch.float32, device=K.device)
    dV = torch.zeros(V.shape, dtype=torch.float32, device=V.device)
    for j0 in range(0, Tk, k_tile):
        j1 = min(j0 + k_tile, Tk)
        k, v = K[..., j0:j1, :].float(), V[..., j0:j1, :].float()  # (..., tk, d)
        i_start = (j0 // q_tile) * q_tile if is_causal else 0  # queries before key j0 see none of this tile
        for i0 in range(i_start, Tq, q_tile):
            i1 = min(i0 + q_tile, Tq)
            q, do = Q[..., i0:i1, :].float(), dO[..., i0:i1, :].float()  # (..., tq, d)
            s = q @ k.transpose(-2, -1) * scale  # (..., tq, tk)
            p = torch.exp(s - L[..., i0:i1, None])
            if is_causal and _crosses_diagonal(i0, j1):
                p = p.masked_fill(~_causal_tile_mask(i0, i1, j0, j1, Q.device), 0.0)
            dV[..., j0:j1, :] += p.transpose(-2, -1) @ do
            dp = do @ v.transpose(-2, -1)  # (..., tq, tk)
            ds = p * (dp - D[..., i0:i1, None]) * scale  # gradient of the scaled scores, times the scale
            dQ[..., i0:i1, :] += ds @ k
            dK[..., j0:j1, :] += ds.transpose(-2, -1) @ q
    return dQ.to(Q.dtype), dK.to(K.dtype), dV.to(V.dtype)


class FlashAttentionPytorch(torch.autograd.Function):
    """apply(Q, K, V, is_causal=False) -> O. Saves L (Q.shape[:-1], float32) for backward beside Q, K, V and O."""

    @staticmethod
    def forward(ctx, Q, K, V, is_causal=False):
        O, L = flash_forward(Q, K, V, is_causal)
        ctx.save_for_backward(L, Q, K, V, O)
        ctx.is_causal = is_causal
        return O

    @staticmethod
    def backward(ctx, dO):
        L, Q, K, V, O = ctx.saved_tensors
        dQ, dK, dV = flash_backward(Q, K, V, O, L, dO, ctx.is_causal)
        return dQ, dK, dV, None

