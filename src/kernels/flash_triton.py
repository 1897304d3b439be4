"""FlashAttention-2 forward and backward in Triton: tiled online softmax, logsumexp saved, P recomputed in backward.

Q (B, [nh,] Tq, d), K and V (B, [nh,] Tk, d) -> O like Q; L (B, [nh,] Tq) is the float32 natural-log logsumexp of
each score row, saved for backward. Any Tq >= 1 and Tk >= 1 (not only tile multiples, Tq != Tk allowed), head dims
16..128 (a non-power-of-two d is padded to the next power of two inside the kernel), float32 / float16 / bfloat16.
Causal is top-left aligned like SDPA's is_causal: key j is visible to query i iff j <= i.

Scores run in base 2: exp2(s * log2(e)) == exp(s), with 1/sqrt(d) and log2(e) folded into one multiply-add.
Key tiles wholly above the diagonal are never visited, and only tiles that cross it (or hold the ragged end of the
keys) are masked: each loop runs twice, once unmasked over the tiles that need no mask and once masked.
Programs run heads in groups that fit in L2, the longest causal tiles of a group first (see _place).
Backward, two launches: a dQ pass over key tiles per query tile, which also leaves D = rowsum(dO * O) for its rows,
then a dK/dV pass over query tiles per key tile. That recomputes S and dP twice, 7 matrix products instead of 5,
but needs no atomics: one pass adding dQ from the dK/dV programs, by pointer atomics or by TMA bulk reductions,
was slower at its best of 5 tile shapes: 0.81x the two passes' speed at T 4096, d 64, up to 0.95x at 16384, 128
(H200, batch 8 x 16 heads, bf16 causal; scripts/flash_backward_dq_atomics.py at commit bba44e14894e).
float32 inputs use IEEE float32 dot products (torch's default for float32 matmuls), not TF32.
Tiles move by pointer loads, or by TMA (tensor descriptors, Hopper's bulk copies) where the tile table asks for it
and the tensors allow it (tma_ready); descriptors zero-fill past a ragged end and clip stores there.
On CPU the kernels run under Triton's interpreter when TRITON_INTERPRET=1 is set before this module is imported.
"""

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from src.kernels.triton_interpreter import interpreted

_INTERPRET = interpreted()
_LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) == exp2(x * log2(e))
_LN2 = tl.constexpr(0.6931471805599453)  # ln(2): turns a base-2 logsumexp back into a natural one
EVEN_MULTIPLE = 128  # every tile size divides this: a length that is a multiple of it never ends inside a tile
SHORT_SEQ = 512  # up to this length one fixed tile shape is used: tuning there is all launch overhead
MID_SEQ = 8192  # the Hopper table's two length classes: tuned at T 4096 ("mid") and 16384 ("long")
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 128


@triton.jit
def _load_tile(ptrs, offs_r, n_r, offs_c, n_c, CHECK_R: tl.constexpr, CHECK_C: tl.constexpr):
    """A (R, C) tile, zero outside rows [0, n_r) and columns [0, n_c); a bound known to hold is not checked."""
    if CHECK_R and CHECK_C:
        tile = tl.load(ptrs, mask=(offs_r[:, None] < n_r) & (offs_c[None, :] < n_c), other=0.0)
    elif CHECK_R:
        tile = tl.load(ptrs, mask=offs_r[:, None] < n_r, other=0.0)
    elif CHECK_C:
        tile = tl.load(ptrs, mask=offs_c[None, :] < n_c, other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def _store_tile(ptrs, tile, offs_r, n_r, offs_c, n_c, CHECK_R: tl.constexpr, CHECK_C: tl.constexpr):
    if CHECK_R and CHECK_C:
        tl.store(ptrs, tile, mask=(offs_r[:, None] < n_r) & (offs_c[None, :] < n_c))
    elif CHECK_R:
        tl.store(ptrs, tile, mask=offs_r[:, None] < n_r)
    elif CHECK_C:
        tl.store(ptrs, tile, mask=offs_c[None, :] < n_c)
    else:
        tl.store(ptrs, tile)


@triton.jit
def _load_row(ptrs, offs, n, CHECK: tl.constexpr):
    """A per-row float32 vector (L or D), zero past row n."""
    if CHECK:
        row = tl.load(ptrs, mask=offs < n, other=0.0)
    else:
        row = tl.load(ptrs)
    return row


@triton.jit
def _store_row(ptrs, row, offs, n, CHECK: tl.constexpr):
    if CHECK:
        tl.store(ptrs, row, mask=offs < n)
    else:
        tl.store(ptrs, row)


@triton.jit
def _place(H, N_Q, N_TILES, GROUP, stride_qb, stride_qh, stride_kb, stride_kh, LONGEST_LAST: tl.constexpr):
    """Where this program works: (offset of its (batch, head) in Q-like and in K-like tensors, in per-row vectors
    like L, its tile index, its batch and head indices for tensor descriptors). The grid is one axis of (B * nh) x N_TILES programs, in groups of GROUP heads: a
    group's programs run together, so the K/V (or Q/dO) they sweep is read from DRAM about once per group if a
    group fits in L2 (see group_size). Inside a group, tile by tile across its heads; LONGEST_LAST reverses the
    tile order for causal query tiles, whose last tiles see the most keys, so that the grid's tail is short work."""
    pid = tl.program_id(0)
    n_bh = tl.num_programs(0) // N_TILES
    first = (pid // (GROUP * N_TILES)) * GROUP  # the group's first (batch, head)
    size = tl.minimum(GROUP, n_bh - first)  # the last group may be smaller
    r = pid - first * N_TILES
    bh = first + r % size
    tile = r // size
    if LONGEST_LAST:
        tile = N_TILES - 1 - tile
    b32, h32 = bh // H, bh % H
    b, h = b32.to(tl.int64), h32.to(tl.int64)
    return b * stride_qb + h * stride_qh, b * stride_kb + h * stride_kh, bh.to(tl.int64) * N_Q, tile, b32, h32


@triton.jit
def _rows(desc, b, h, start, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Rows [start, start + ROWS) of head h of batch b of a (B, nh, T, d) tensor, by TMA (a tensor descriptor of
    block (1, 1, ROWS, COLS)): rows past T load as zeros, so no bound is checked here."""
    return desc.load([b, h, start, 0]).reshape(ROWS, COLS)


@triton.jit
def _store_rows(desc, tile, b, h, start, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Store a (ROWS, COLS) tile at rows [start, start + ROWS) by TMA; rows past T are not written."""
    desc.store([b, h, start, 0], tile.reshape(1, 1, ROWS, COLS))


# ---------------------------------------------------------------------------------------------------------- forward
@triton.jit
def _fwd_tiles(acc, l_i, m_i, q, kT_ptrs, v_ptrs, desc_k, desc_v, b, h, stride_kt, offs_m, offs_d, lo, hi, N_K,
               QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               CHECK_D: tl.constexpr, MASK_CAUSAL: tl.constexpr, MASK_KEYS: tl.constexpr, DOT_PRECISION: tl.constexpr,
               TMA: tl.constexpr):
    """Fold key tiles [lo, hi) into the running (acc, l, m) of one query tile; m and the scores are in base 2."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if TMA:
            kT = _rows(desc_k, b, h, start_n, BLOCK_N, BLOCK_D).T
        else:
            kT = _load_tile(kT_ptrs + start_n * stride_kt, offs_d, HEAD_DIM, offs_n, N_K, CHECK_D, MASK_KEYS)  # (D, BN)
        qk = tl.dot(q, kT, input_precision=DOT_PRECISION)  # (BM, BN), unscaled
        if MASK_CAUSAL:
            qk = tl.where(offs_m[:, None] >= offs_n[None, :], qk, float("-inf"))
        if MASK_KEYS:
            qk = tl.where(offs_n[None, :] < N_K, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * QK_SCALE)  # finite: every row sees key 0, in the first tile
        p = tl.math.exp2(qk * QK_SCALE - m_new[:, None])  # (BM, BN)
        alpha = tl.math.exp2(m_i - m_new)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        if TMA:
            v = _rows(desc_v, b, h, start_n, BLOCK_N, BLOCK_D)
        else:
            v = _load_tile(v_ptrs + start_n * stride_kt, offs_n, N_K, offs_d, HEAD_DIM, MASK_KEYS, CHECK_D)  # (BN, D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["GROUP"])  # one compile whatever the group size
def _attn_fwd(Q, K, V, O, L, stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, H, N_Q, N_K, GROUP,
              desc_q, desc_k, desc_v, desc_o,
              QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_CAUSAL: tl.constexpr,
              CHECK_M: tl.constexpr, CHECK_N: tl.constexpr, CHECK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
              TMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program: one query tile of one (batch, head). O is laid out like Q, V like K. With TMA, tiles of Q, K, V
    and O move by tensor descriptor (desc_*, else None) instead of by pointer."""
    q_at, k_at, row_at, pid_m, b, h = _place(H, N_Q, tl.cdiv(N_Q, BLOCK_M), GROUP, stride_qb, stride_qh, stride_kb,
                                       stride_kh, IS_CAUSAL)
    Q += q_at
    K += k_at
    V += k_at
    O += q_at
    L += row_at
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)

    if TMA:
        q = _rows(desc_q, b, h, start_m, BLOCK_M, BLOCK_D)
    else:
        q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M,
                       CHECK_D)
    kT_ptrs = K + offs_n[None, :] * stride_kt + offs_d[:, None]  # (D, BN): K^T at key tile 0
    v_ptrs = V + offs_n[:, None] * stride_kt + offs_d[None, :]  # (BN, D)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    # Keys [0, free) are whole tiles every row here sees; [free, hi) need a mask. Causal: nothing past hi is seen.
    if CHECK_N:
        whole = (N_K // BLOCK_N) * BLOCK_N
    else:
        whole = N_K
    if IS_CAUSAL:
        free = tl.minimum(((start_m + 1) // BLOCK_N) * BLOCK_N, whole)
        hi = tl.minimum(start_m + BLOCK_M, N_K)
    else:
        free = whole
        hi = N_K
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, kT_ptrs, v_ptrs, desc_k, desc_v, b, h, stride_kt, offs_m, offs_d,
                               0, free, N_K, QK_SCALE, HEAD_DIM, BLOCK_N, BLOCK_D, CHECK_D, False, False,
                               DOT_PRECISION, TMA)
    if IS_CAUSAL or CHECK_N:
        acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, kT_ptrs, v_ptrs, desc_k, desc_v, b, h, stride_kt, offs_m,
                                   offs_d, free, hi, N_K, QK_SCALE, HEAD_DIM, BLOCK_N, BLOCK_D, CHECK_D, IS_CAUSAL,
                                   CHECK_N, DOT_PRECISION, TMA)

    out = (acc / l_i[:, None]).to(O.dtype.element_ty)
    if TMA:
        _store_rows(desc_o, out, b, h, start_m, BLOCK_M, BLOCK_D)
    else:
        _store_tile(O + offs_m[:, None] * stride_qt + offs_d[None, :], out, offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M,
                    CHECK_D)
    _store_row(L + offs_m, (m_i + tl.math.log2(l_i)) * _LN2, offs_m, N_Q, CHECK_M)


# --------------------------------------------------------------------------------------------------------- backward
@triton.jit
def _dq_tiles(dq, q, do, lse2, delta, kT_ptrs, vT_ptrs, desc_k, desc_v, b, h, stride_kt, offs_m, offs_d, lo, hi,
              N_K, QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              CHECK_N: tl.constexpr, CHECK_D: tl.constexpr, MASK_CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
              TMA: tl.constexpr):
    """Add key tiles [lo, hi) into one query tile's dQ (unscaled)."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if TMA:
            kT = _rows(desc_k, b, h, start_n, BLOCK_N, BLOCK_D).T
            vT = _rows(desc_v, b, h, start_n, BLOCK_N, BLOCK_D).T
        else:
            kT = _load_tile(kT_ptrs + start_n * stride_kt, offs_d, HEAD_DIM, offs_n, N_K, CHECK_D, CHECK_N)  # (D, BN)
            vT = _load_tile(vT_ptrs + start_n * stride_kt, offs_d, HEAD_DIM, offs_n, N_K, CHECK_D, CHECK_N)  # (D, BN)
        p = tl.math.exp2(tl.dot(q, kT, input_precision=DOT_PRECISION) * QK_SCALE - lse2[:, None])  # (BM, BN)
        if MASK_CAUSAL:
            p = tl.where(offs_m[:, None] >= offs_n[None, :], p, 0.0)
        if CHECK_N:  # keys past Tk load as zeros, but exp2(0 - L) may overflow where L is very negative
            p = tl.where(offs_n[None, :] < N_K, p, 0.0)
        dp = tl.dot(do, vT, input_precision=DOT_PRECISION)  # (BM, BN)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq, input_precision=DOT_PRECISION)
    return dq


@triton.jit(do_not_specialize=["GROUP"])  # one compile whatever the group size
def _attn_bwd_dq(Q, K, V, O, DO, L, Delta, DQ, stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                 H, N_Q, N_K, GROUP, desc_q, desc_k, desc_v, desc_o, desc_do, desc_dq,
                 QK_SCALE: tl.constexpr, SM_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                 IS_CAUSAL: tl.constexpr, CHECK_M: tl.constexpr, CHECK_N: tl.constexpr, CHECK_D: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, TMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program: dQ of one query tile of one (batch, head), and D = rowsum(dO * O) of its rows for the dK/dV
    pass. O, dO and dQ are laid out like Q; V like K. With TMA, their tiles move by tensor descriptor."""
    q_at, k_at, row_at, pid_m, b, h = _place(H, N_Q, tl.cdiv(N_Q, BLOCK_M), GROUP, stride_qb, stride_qh, stride_kb,
                                       stride_kh, IS_CAUSAL)
    Q += q_at
    K += k_at
    V += k_at
    O += q_at
    DO += q_at
    DQ += q_at
    L += row_at
    Delta += row_at
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)

    if TMA:
        q = _rows(desc_q, b, h, start_m, BLOCK_M, BLOCK_D)
        do = _rows(desc_do, b, h, start_m, BLOCK_M, BLOCK_D)
        o = _rows(desc_o, b, h, start_m, BLOCK_M, BLOCK_D)
    else:
        row_ptrs = offs_m[:, None] * stride_qt + offs_d[None, :]
        q = _load_tile(Q + row_ptrs, offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)
        do = _load_tile(DO + row_ptrs, offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)
        o = _load_tile(O + row_ptrs, offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # (BM,) = rowsum(dP * P), without P or dP
    _store_row(Delta + offs_m, delta, offs_m, N_Q, CHECK_M)
    lse2 = _load_row(L + offs_m, offs_m, N_Q, CHECK_M) * _LOG2E
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    kT_ptrs = K + offs_n[None, :] * stride_kt + offs_d[:, None]  # (D, BN)
    vT_ptrs = V + offs_n[None, :] * stride_kt + offs_d[:, None]  # (D, BN)

    if IS_CAUSAL:
        free = tl.minimum(((start_m + 1) // BLOCK_N) * BLOCK_N, N_K)
        hi = tl.minimum(start_m + BLOCK_M, N_K)
    else:
        free = N_K
        hi = N_K
    dq = _dq_tiles(dq, q, do, lse2, delta, kT_ptrs, vT_ptrs, desc_k, desc_v, b, h, stride_kt, offs_m, offs_d, 0,
                   free, N_K, QK_SCALE, HEAD_DIM, BLOCK_N, BLOCK_D, CHECK_N, CHECK_D, False, DOT_PRECISION, TMA)
    if IS_CAUSAL:
        dq = _dq_tiles(dq, q, do, lse2, delta, kT_ptrs, vT_ptrs, desc_k, desc_v, b, h, stride_kt, offs_m, offs_d,
                       free, hi, N_K, QK_SCALE, HEAD_DIM, BLOCK_N, BLOCK_D, CHECK_N, CHECK_D, True, DOT_PRECISION,
                       TMA)

    dq = (dq * SM_SCALE).to(DQ.dtype.element_ty)
    if TMA:
        _store_rows(desc_dq, dq, b, h, start_m, BLOCK_M, BLOCK_D)
    else:
        _store_tile(DQ + offs_m[:, None] * stride_qt + offs_d[None, :], dq, offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M,
                    CHECK_D)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, desc_q, desc_do, b, h, stride_qt, L, Delta, offs_n, offs_d, lo, hi,
                N_Q, QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                CHECK_M: tl.constexpr, CHECK_D: tl.constexpr, MASK_CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
                TMA: tl.constexpr):
    """Add query tiles [lo, hi) into one key tile's dK (unscaled) and dV. Rows past Tq load as zeros (L too) and
    add exactly nothing: their P is 1 but their dO and D are 0."""
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        if TMA:
            qT = _rows(desc_q, b, h, start_m, BLOCK_M, BLOCK_D).T
        else:
            qT = _load_tile(qT_ptrs + start_m * stride_qt, offs_d, HEAD_DIM, offs_m, N_Q, CHECK_D, CHECK_M)  # (D, BM)
        lse2 = _load_row(L + offs_m, offs_m, N_Q, CHECK_M) * _LOG2E
        pT = tl.math.exp2(tl.dot(k, qT, input_precision=DOT_PRECISION) * QK_SCALE - lse2[None, :])  # (BN, BM)
        if MASK_CAUSAL:
            pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
        if TMA:
            do = _rows(desc_do, b, h, start_m, BLOCK_M, BLOCK_D)
        else:
            do = _load_tile(do_ptrs + start_m * stride_qt, offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)  # (BM, D)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        delta = _load_row(Delta + offs_m, offs_m, N_Q, CHECK_M)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # (BN, BM)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=["GROUP"])  # one compile whatever the group size
def _attn_bwd_dkdv(Q, K, V, DO, L, Delta, DK, DV, stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                   H, N_Q, N_K, GROUP, desc_q, desc_k, desc_v, desc_do, desc_dk, desc_dv,
                   QK_SCALE: tl.constexpr, SM_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                   IS_CAUSAL: tl.constexpr, CHECK_M: tl.constexpr, CHECK_N: tl.constexpr, CHECK_D: tl.constexpr,
                   DOT_PRECISION: tl.constexpr, TMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program: dK and dV of one key tile of one (batch, head). dO is laid out like Q; V, dK and dV like K.
    Causal, the first key tiles are seen by the most queries and already come first. With TMA, tiles move by
    tensor descriptor."""
    q_at, k_at, row_at, pid_n, b, h = _place(H, N_Q, tl.cdiv(N_K, BLOCK_N), GROUP, stride_qb, stride_qh, stride_kb,
                                       stride_kh, False)
    Q += q_at
    K += k_at
    V += k_at
    DO += q_at
    DK += k_at
    DV += k_at
    L += row_at
    Delta += row_at
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)

    if TMA:
        k = _rows(desc_k, b, h, start_n, BLOCK_N, BLOCK_D)
        v = _rows(desc_v, b, h, start_n, BLOCK_N, BLOCK_D)
    else:
        k = _load_tile(K + offs_n[:, None] * stride_kt + offs_d[None, :], offs_n, N_K, offs_d, HEAD_DIM, CHECK_N,
                       CHECK_D)
        v = _load_tile(V + offs_n[:, None] * stride_kt + offs_d[None, :], offs_n, N_K, offs_d, HEAD_DIM, CHECK_N,
                       CHECK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    qT_ptrs = Q + offs_m[None, :] * stride_qt + offs_d[:, None]  # (D, BM): Q^T at query tile 0
    do_ptrs = DO + offs_m[:, None] * stride_qt + offs_d[None, :]  # (BM, D)

    if IS_CAUSAL:
        # Query tiles before the one holding row start_n see none of these keys; those up to the first tile whose
        # first row is at or past the last key (row start_n + BLOCK_N - 1) cross the diagonal and are masked.
        lo = (start_n // BLOCK_M) * BLOCK_M
        free = tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M
        dk, dv = _dkdv_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, desc_q, desc_do, b, h, stride_qt, L, Delta, offs_n,
                             offs_d, lo, tl.minimum(free, N_Q), N_Q, QK_SCALE, HEAD_DIM, BLOCK_M, BLOCK_D, CHECK_M,
                             CHECK_D, True, DOT_PRECISION, TMA)
    else:
        free = 0
    dk, dv = _dkdv_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, desc_q, desc_do, b, h, stride_qt, L, Delta, offs_n, offs_d,
                         free, N_Q, N_Q, QK_SCALE, HEAD_DIM, BLOCK_M, BLOCK_D, CHECK_M, CHECK_D, False,
                         DOT_PRECISION, TMA)

    dk = (dk * SM_SCALE).to(DK.dtype.element_ty)
    dv = dv.to(DV.dtype.element_ty)
    if TMA:
        _store_rows(desc_dk, dk, b, h, start_n, BLOCK_N, BLOCK_D)
        _store_rows(desc_dv, dv, b, h, start_n, BLOCK_N, BLOCK_D)
    else:
        key_ptrs = offs_n[:, None] * stride_kt + offs_d[None, :]
        _store_tile(DK + key_ptrs, dk, offs_n, N_K, offs_d, HEAD_DIM, CHECK_N, CHECK_D)
        _store_tile(DV + key_ptrs, dv, offs_n, N_K, offs_d, HEAD_DIM, CHECK_N, CHECK_D)


# --------------------------------------------------------------------------------------------------------- launchers
class Tiles(NamedTuple):
    """One launch shape: BLOCK_M query rows x BLOCK_N key rows per tile, warps per program, software-pipeline
    stages (tiles of K and V, or of Q and dO, loaded ahead of their use), and whether tiles move by TMA (tensor
    descriptors, Hopper's copy engine) rather than by pointer loads: taken only where the tensors allow it
    (tma_ready), pointers elsewhere, so the flag never costs a problem its support."""
    block_m: int
    block_n: int
    warps: int
    stages: int
    tma: bool = False

    def __str__(self) -> str:
        return f"{self.block_m}x{self.block_n} w{self.warps} s{self.stages}{' tma' if self.tma else ''}"

    @classmethod
    def parse(cls, text: str) -> "Tiles":
        """The inverse of str(): '128x64 w8 s3 tma' -> Tiles(128, 64, 8, 3, True)."""
        shape, warps, stages, *tma = text.split()
        block_m, block_n = shape.split("x")
        if tma not in ([], ["tma"]) or warps[0] != "w" or stages[0] != "s":
            raise ValueError(f"not a tile shape: {text!r}")
        return cls(int(block_m), int(block_n), int(warps[1:]), int(stages[1:]), bool(tma))


KERNELS = ("fwd", "dq", "dkdv")
# The tile shapes, one per kernel and problem class: one table lookup is the whole tuning mechanism, the same
# eager and under torch.compile, with no compile-and-time cost at run time. The Hopper table was chosen by
# timing each kernel alone over a candidate list on an H200 (scripts/attention_h200.py; figures in
# docs/results/attention_h200_2026-12-01.md). Keyed by head-dim class (the padded head dim, 64 and under or 128)
# and length class (SHORT_SEQ < T <= MID_SEQ: "mid", longer: "long"). Against the H100's earlier winners, the
# forward moved to 8 warps (128x128 at d 128, T 4096) and the backward kept them except at d 64.
_SM90_TILES = {
    (64, "mid"): {"fwd": Tiles(128, 64, 8, 3), "dq": Tiles(64, 64, 4, 3), "dkdv": Tiles(64, 64, 4, 3)},
    (64, "long"): {"fwd": Tiles(128, 64, 8, 3), "dq": Tiles(64, 64, 4, 3), "dkdv": Tiles(64, 64, 4, 3)},
    (128, "mid"): {"fwd": Tiles(128, 128, 8, 3, tma=True), "dq": Tiles(128, 64, 8, 3, tma=True), "dkdv": Tiles(64, 128, 8, 3, tma=True)},
    (128, "long"): {"fwd": Tiles(128, 128, 8, 3, tma=True), "dq": Tiles(128, 64, 8, 3), "dkdv": Tiles(64, 128, 8, 3, tma=True)},
}
# 16-bit inputs on other GPUs: the H100's most frequent winners among the earlier autotune lists.
_DEFAULT_TILES = {"fwd": Tiles(128, 64, 4, 3), "dq": Tiles(64, 64, 4, 3), "dkdv": Tiles(64, 64, 4, 3)}
# Up to SHORT_SEQ the time is launch overhead whatever the tiles.
_SHORT_TILES = {"fwd": Tiles(64, 64, 4, 3), "dq": Tiles(64, 64, 4, 3), "dkdv": Tiles(64, 64, 4, 3)}
# float32: IEEE float32 dots on CUDA cores, small tiles.
_FP32_TILES = {"fwd": Tiles(64, 32, 4, 2), "dq": Tiles(64, 32, 4, 2), "dkdv": Tiles(32, 64, 4, 2)}
# Under the interpreter: small, unequal tiles, so that short test sequences still span several of them.
_INTERPRETER_TILES = {"fwd": Tiles(32, 16, 4, 1), "dq": Tiles(32, 16, 4, 1), "dkdv": Tiles(16, 32, 4, 1)}
_KERNELS = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}
# Program order (see _place): heads go in groups whose swept tensors take at most half of L2, the rest being left
# to what the programs in flight hold. Before, (batch, head) ran fastest, and at batch 8 x 16 heads, T 16384,
# d 128 no two programs in flight shared K and V: every query tile read them from DRAM. H200, (8, 16, 16384, 128)
# bf16 causal: forward 21.3 -> 18.1 ms, backward 60.5 -> 52.7 ms; one head at a time was within 1% at T 16384
# but 7% slower in the forward at T 4096, d 128.
L2_BYTES = 50 * 2**20  # the H100's L2 (the H200 has 60 MB)


def tile_table(device: torch.device, dtype: torch.dtype, seq_len: int, head_dim: int) -> dict[str, Tiles]:
    """The tiles each kernel runs with for this problem: {"fwd": Tiles, "dq": Tiles, "dkdv": Tiles}."""
    if _INTERPRET:
        return _INTERPRETER_TILES
    if dtype == torch.float32:
        return _FP32_TILES
    if seq_len <= SHORT_SEQ:
        return _SHORT_TILES
    if torch.cuda.get_device_properties(device).major == 9:
        d_class = 64 if head_dim <= 64 else 128
        return _SM90_TILES[(d_class, "mid" if seq_len <= MID_SEQ else "long")]
    return _DEFAULT_TILES


def chosen_tiles(dtype: torch.dtype, seq_len: int, head_dim: int, device=None) -> str:
    """The tiles of this problem as text, e.g. 'fwd 128x64 w4 s3; dq 64x64 w4 s3; dkdv 64x64 w4 s3'."""
    device = torch.device("cuda") if device is None else torch.device(device)
    table = tile_table(device, dtype, seq_len, head_dim)
    return "; ".join(f"{name} {table[name]}" for name in KERNELS)


def group_size(n_bh: int, swept_bytes_per_head: int) -> int:
    """Heads per program group: as many as keep what the group's programs sweep within half of L2."""
    return max(1, min(n_bh, (L2_BYTES // 2) // max(1, swept_bytes_per_head)))


# Which tensors each kernel moves by descriptor when its tiles say tma, in its argument order, and whether their
# tiles are query rows ("m": Q, O, dO, dQ) or key rows ("n": K, V, dK, dV).
_DESCRIBED = {"fwd": "mnnm", "dq": "mnnmmm", "dkdv": "mnnmnn"}


def tma_ready(*tensors: torch.Tensor, head_dim_padded: bool = False) -> bool:
    """Whether TMA can move these (B, nh, T, d) tensors' tiles: on a Hopper-or-later GPU (or the interpreter),
    16-byte aligned starts and strides, the last stride 1, and no padded head dim (a descriptor's zero fill past d
    would be right, but pointer loads keep the one path that d 80 or 96 have always run)."""
    if head_dim_padded:
        return False
    if not _INTERPRET and (not tensors[0].is_cuda or torch.cuda.get_device_properties(tensors[0].device).major < 9):
        return False
    return all(t.stride(-1) == 1 and _aligned(t) and all(s * t.element_size() % 16 == 0 for s in t.stride()[:-1])
               for t in tensors)


def _aligned(t: torch.Tensor) -> bool:
    """t starts on a 16-byte boundary. While torch.compile traces there is no address (fake tensors): the offset
    into its storage must be aligned, and the storage is, as the caching allocator hands out 512-byte blocks."""
    if torch.compiler.is_compiling():
        return t.storage_offset() * t.element_size() % 16 == 0
    return t.data_ptr() % 16 == 0


def _descriptors(name: str, tiles: Tiles, tensors: tuple, block_d: int) -> tuple:
    """The kernel's tensor descriptors (block: one head's tile of rows), or Nones where tiles move by pointer."""
    if not tiles.tma or not tma_ready(*tensors, head_dim_padded=block_d != tensors[0].shape[-1]):
        return (None,) * len(tensors)
    from triton.tools.tensor_descriptor import TensorDescriptor

    rows = {"m": tiles.block_m, "n": tiles.block_n}
    return tuple(TensorDescriptor.from_tensor(t, [1, 1, rows[family], block_d])
                 for t, family in zip(tensors, _DESCRIBED[name]))


def _launch(name: str, tiles: Tiles, n_bh: int, length: int, group: int, args: tuple, described: tuple,
            meta: dict) -> None:
    """Run kernel `name` over n_bh (batch, head) pairs x the tiles of `length` rows (keys for dK/dV); `described`:
    the 4-d tensors it may move by TMA, in _DESCRIBED's order."""
    n_tiles = triton.cdiv(length, tiles.block_n if name == "dkdv" else tiles.block_m)
    descriptors = _descriptors(name, tiles, described, meta["BLOCK_D"])
    _KERNELS[name][(n_bh * n_tiles,)](*args, group, *descriptors, **meta, TMA=descriptors[0] is not None,
                                      BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, num_warps=tiles.warps,
                                      num_stages=tiles.stages)


def _as_4d(x: torch.Tensor) -> torch.Tensor:
    """(B, T, d) -> (B, 1, T, d), a view; (B, nh, T, d) as it is."""
    return x.unsqueeze(1) if x.dim() == 3 else x


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x if torch.empty_like reproduces its strides and its last one is 1 (contiguous, or a permutation of it),
    else a contiguous copy: outputs and gradients are then allocated with x's strides."""
    if x.is_contiguous() or (x.stride(-1) == 1 and torch.empty_like(x).stride() == x.stride()):
        return x
    return x.contiguous()


def _laid_out_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x with like's strides, copied if need be: the kernels index each family of tensors with one set of strides
    (Q, O, dO, dQ with Q's; K, V, dK, dV with K's), which keeps launches short of arguments."""
    return x if x.stride() == like.stride() else torch.empty_like(like).copy_(x)


def check_inputs(Q, K, V) -> None:
    """Raise ValueError naming the problem if the kernels cannot take these tensors."""
    if Q.dim() not in (3, 4) or K.dim() != Q.dim() or V.dim() != Q.dim():
        raise ValueError(f"Q, K, V must all be (batch, seq, d) or (batch, heads, seq, d); got shapes "
                         f"{tuple(Q.shape)}, {tuple(K.shape)}, {tuple(V.shape)}")
    if K.shape != V.shape or Q.shape[:-2] != K.shape[:-2] or Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"K and V must match, and share batch, heads and head dim with Q; got shapes "
                         f"{tuple(Q.shape)}, {tuple(K.shape)}, {tuple(V.shape)}")
    d = Q.shape[-1]
    if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
        raise ValueError(f"head dim must be in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], got {d}")
    if Q.shape[-2] < 1 or K.shape[-2] < 1:
        raise ValueError(f"sequence lengths must be at least 1, got Tq={Q.shape[-2]}, Tk={K.shape[-2]}")
    if Q.dtype not in (torch.float32, torch.float16, torch.bfloat16) or K.dtype != Q.dtype or V.dtype != Q.dtype:
        raise ValueError(f"Q, K, V must share one dtype of float32, float16, bfloat16; got {Q.dtype}, {K.dtype}, "
                         f"{V.dtype}")
    if K.device != Q.device or V.device != Q.device:
        raise ValueError(f"Q, K, V must be on one device; got {Q.device}, {K.device}, {V.device}")
    if Q.device.type != "cuda" and not _INTERPRET:
        raise ValueError(f"FlashAttentionTriton needs CUDA tensors (got {Q.device.type}); on CPU use "
                         "FlashAttentionPytorch, or set TRITON_INTERPRET=1 before importing this module")


def _problem(Q, K, is_causal):
    """(meta-parameters shared by every kernel of one call, softmax scale)."""
    Tq, Tk, d = Q.shape[-2], K.shape[-2], Q.shape[-1]
    block_d = max(16, triton.next_power_of_2(d))
    sm_scale = 1.0 / math.sqrt(d)
    meta = dict(
        QK_SCALE=sm_scale * 1.4426950408889634, HEAD_DIM=d, BLOCK_D=block_d, IS_CAUSAL=bool(is_causal),
        CHECK_M=Tq % EVEN_MULTIPLE != 0, CHECK_N=Tk % EVEN_MULTIPLE != 0, CHECK_D=block_d != d,
        DOT_PRECISION="ieee" if Q.dtype == torch.float32 else "tf32",
    )
    return meta, sm_scale


def _tiles(Q, K, override: dict | None) -> dict[str, Tiles]:
    """This call's tiles: the table's, with `override` ({kernel name: Tiles}, for tests and tuning) on top."""
    table = tile_table(Q.device, Q.dtype, max(Q.shape[-2], K.shape[-2]), Q.shape[-1])
    return {**table, **override} if override else table


def _swept_bytes(x: torch.Tensor) -> int:
    """Bytes of one (batch, head) of x and one more tensor like it: what each program of a head sweeps."""
    return 2 * x.shape[-2] * x.shape[-1] * x.element_size()


def flash_forward(Q, K, V, is_causal=False, tiles: dict | None = None, group: int | None = None):
    """-> (O like Q, L of shape Q.shape[:-1] in float32). Q (B, [nh,] Tq, d), K and V (B, [nh,] Tk, d).
    tiles ({"fwd": Tiles}) and group (heads per program group) override the defaults, for tests and tuning."""
    check_inputs(Q, K, V)
    Q, K = _dense(Q), _dense(K)
    V = _laid_out_like(V, K)
    O = torch.empty_like(Q)
    L = torch.empty(Q.shape[:-1], dtype=torch.float32, device=Q.device)
    q4, k4, v4, o4 = (_as_4d(x) for x in (Q, K, V, O))
    B, H, Tq, _ = q4.shape
    Tk = k4.shape[2]
    meta, _ = _problem(Q, K, is_causal)
    group = group or group_size(B * H, _swept_bytes(K))  # each query tile sweeps K and V
    args = (q4, k4, v4, o4, L, *q4.stride()[:3], *k4.stride()[:3], H, Tq, Tk)
    _launch("fwd", _tiles(Q, K, tiles)["fwd"], B * H, Tq, group, args, (q4, k4, v4, o4), meta)
    return O, L


def flash_backward(Q, K, V, O, L, dO, is_causal=False, tiles: dict | None = None, group: int | None = None):
    """-> (dQ, dK, dV), each shaped like its input. Recomputes P tile by tile from L. tiles ({"dq": Tiles,
    "dkdv": Tiles}) and group override the defaults, for tests and tuning."""
    Q, K = _dense(Q), _dense(K)  # as in flash_forward, so O has Q's strides
    V = _laid_out_like(V, K)
    dO = _laid_out_like(dO, Q)  # the gradient of o.sum() is an expanded tensor with stride 0
    O = _laid_out_like(O, Q)
    dQ, dK, dV = torch.empty_like(Q), torch.empty_like(K), torch.empty_like(K)
    delta = torch.empty_like(L)
    q4, k4, v4, o4, do4, dq4, dk4, dv4 = (_as_4d(x) for x in (Q, K, V, O, dO, dQ, dK, dV))
    B, H, Tq, _ = q4.shape
    Tk = k4.shape[2]
    meta, sm_scale = _problem(Q, K, is_causal)
    meta["SM_SCALE"] = sm_scale
    chosen = _tiles(Q, K, tiles)
    strides = (*q4.stride()[:3], *k4.stride()[:3], H, Tq, Tk)
    # dQ first: it leaves D = rowsum(dO * O) for the dK/dV pass. dQ programs sweep K and V, dK/dV ones Q and dO.
    _launch("dq", chosen["dq"], B * H, Tq, group or group_size(B * H, _swept_bytes(K)),
            (q4, k4, v4, o4, do4, L, delta, dq4, *strides), (q4, k4, v4, o4, do4, dq4), meta)
    _launch("dkdv", chosen["dkdv"], B * H, Tk, group or group_size(B * H, _swept_bytes(Q)),
            (q4, k4, v4, do4, L, delta, dk4, dv4, *strides), (q4, k4, v4, do4, dk4, dv4), meta)
    return dQ, dK, dV


# ---------------------------------------------------------------------------------------------------------- autograd
class FlashAttentionTriton(torch.autograd.Function):
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

