"""FlashAttention-2 forward and backward in Triton: tiled online softmax, logsumexp saved, P recomputed in backward.

Q (B, [nh,] Tq, d), K and V (B, [nh,] Tk, d) -> O like Q; L (B, [nh,] Tq) is the float32 natural-log logsumexp of
each score row, saved for backward. Any Tq >= 1 and Tk >= 1 (not only tile multiples, Tq != Tk allowed), head dims
16..128 (a non-power-of-two d is padded to the next power of two inside the kernel), float32 / float16 / bfloat16.
Causal is top-left aligned like SDPA's is_causal: key j is visible to query i iff j <= i.

Scores run in base 2: exp2(s * log2(e)) == exp(s), with 1/sqrt(d) and log2(e) folded into one multiply-add.
Key tiles wholly above the diagonal are never visited, and only tiles that cross it (or hold the ragged end of the
keys) are masked: each loop runs twice, once unmasked over the tiles that need no mask and once masked.
Causal grids start the longest tiles first, so the last programs to start are short (grid order: see L2_BYTES).
Backward, two launches: a dQ pass over key tiles per query tile, which also leaves D = rowsum(dO * O) for its rows,
then a dK/dV pass over query tiles per key tile. That recomputes S and dP twice, 7 matrix products instead of 5,
but needs no atomics: adding dQ with atomics from the dK/dV pass measured 10.2 ms against 4.2 ms for separate
passes (H100, q, k, v (16, 16384, 64) bf16 causal, backward only).
float32 inputs use IEEE float32 dot products (torch's default for float32 matmuls), not TF32.
On CPU the kernels run under Triton's interpreter when TRITON_INTERPRET=1 is set before this module is imported.
"""

import math

import torch
import triton
import triton.language as tl

from src.kernels.triton_interpreter import interpreted

_INTERPRET = interpreted()
_LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) == exp2(x * log2(e))
_LN2 = tl.constexpr(0.6931471805599453)  # ln(2): turns a base-2 logsumexp back into a natural one
EVEN_MULTIPLE = 128  # every tile size divides this: a length that is a multiple of it never ends inside a tile
SHORT_SEQ = 512  # up to this length one fixed tile shape is used: tuning there is all launch overhead
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


# ---------------------------------------------------------------------------------------------------------- forward
@triton.jit
def _fwd_tiles(acc, l_i, m_i, q, kT_ptrs, v_ptrs, stride_kt, offs_m, offs_d, lo, hi, N_K,
               QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CHECK_D: tl.constexpr,
               MASK_CAUSAL: tl.constexpr, MASK_KEYS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold key tiles [lo, hi) into the running (acc, l, m) of one query tile; m and the scores are in base 2."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
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
        v = _load_tile(v_ptrs + start_n * stride_kt, offs_n, N_K, offs_d, HEAD_DIM, MASK_KEYS, CHECK_D)  # (BN, D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, L, stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, H, N_Q, N_K, SEQ_BUCKET,
              QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_CAUSAL: tl.constexpr,
              CHECK_M: tl.constexpr, CHECK_N: tl.constexpr, CHECK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
              TILE_AXIS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program: one query tile of one (batch, head). O is laid out like Q, V like K."""
    bh = tl.program_id(1 - TILE_AXIS)
    pid_m = tl.program_id(TILE_AXIS)
    if IS_CAUSAL:
        pid_m = tl.num_programs(TILE_AXIS) - 1 - pid_m  # the longest rows first, so the grid's tail is short work
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_kb + h * stride_kh
    O += b * stride_qb + h * stride_qh
    L += bh.to(tl.int64) * N_Q
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)

    q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)
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
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, kT_ptrs, v_ptrs, stride_kt, offs_m, offs_d, 0, free,
                               N_K, QK_SCALE, HEAD_DIM, BLOCK_N, CHECK_D, False, False, DOT_PRECISION)
    if IS_CAUSAL or CHECK_N:
        acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, kT_ptrs, v_ptrs, stride_kt, offs_m, offs_d, free, hi,
                                   N_K, QK_SCALE, HEAD_DIM, BLOCK_N, CHECK_D, IS_CAUSAL, CHECK_N, DOT_PRECISION)

    out = acc / l_i[:, None]
    _store_tile(O + offs_m[:, None] * stride_qt + offs_d[None, :], out.to(O.dtype.element_ty),
                offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)
    _store_row(L + offs_m, (m_i + tl.math.log2(l_i)) * _LN2, offs_m, N_Q, CHECK_M)


# --------------------------------------------------------------------------------------------------------- backward
@triton.jit
def _dq_tiles(dq, q, do, lse2, delta, kT_ptrs, vT_ptrs, stride_kt, offs_m, offs_d, lo, hi, N_K,
              QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CHECK_N: tl.constexpr,
              CHECK_D: tl.constexpr, MASK_CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Add key tiles [lo, hi) into one query tile's dQ (unscaled)."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
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


@triton.jit
def _attn_bwd_dq(Q, K, V, O, DO, L, Delta, DQ, stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                 H, N_Q, N_K, SEQ_BUCKET,
                 QK_SCALE: tl.constexpr, SM_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                 IS_CAUSAL: tl.constexpr, CHECK_M: tl.constexpr, CHECK_N: tl.constexpr, CHECK_D: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, TILE_AXIS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program: dQ of one query tile of one (batch, head), and D = rowsum(dO * O) of its rows for the dK/dV
    pass. O, dO and dQ are laid out like Q; V like K."""
    bh = tl.program_id(1 - TILE_AXIS)
    pid_m = tl.program_id(TILE_AXIS)
    if IS_CAUSAL:
        pid_m = tl.num_programs(TILE_AXIS) - 1 - pid_m  # the longest rows first
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_kb + h * stride_kh
    O += b * stride_qb + h * stride_qh
    DO += b * stride_qb + h * stride_qh
    DQ += b * stride_qb + h * stride_qh
    L += bh.to(tl.int64) * N_Q
    Delta += bh.to(tl.int64) * N_Q
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)

    q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)
    do = _load_tile(DO + offs_m[:, None] * stride_qt + offs_d[None, :], offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M,
                    CHECK_D)
    o = _load_tile(O + offs_m[:, None] * stride_qt + offs_d[None, :], offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)
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
    dq = _dq_tiles(dq, q, do, lse2, delta, kT_ptrs, vT_ptrs, stride_kt, offs_m, offs_d, 0, free, N_K,
                   QK_SCALE, HEAD_DIM, BLOCK_N, CHECK_N, CHECK_D, False, DOT_PRECISION)
    if IS_CAUSAL:
        dq = _dq_tiles(dq, q, do, lse2, delta, kT_ptrs, vT_ptrs, stride_kt, offs_m, offs_d, free, hi, N_K,
                       QK_SCALE, HEAD_DIM, BLOCK_N, CHECK_N, CHECK_D, True, DOT_PRECISION)

    _store_tile(DQ + offs_m[:, None] * stride_qt + offs_d[None, :], (dq * SM_SCALE).to(DQ.dtype.element_ty),
                offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, stride_qt, L, Delta, offs_n, offs_d, lo, hi, N_Q,
                QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, CHECK_M: tl.constexpr,
                CHECK_D: tl.constexpr, MASK_CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Add query tiles [lo, hi) into one key tile's dK (unscaled) and dV. Rows past Tq load as zeros (L too) and
    add exactly nothing: their P is 1 but their dO and D are 0."""
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        qT = _load_tile(qT_ptrs + start_m * stride_qt, offs_d, HEAD_DIM, offs_m, N_Q, CHECK_D, CHECK_M)  # (D, BM)
        lse2 = _load_row(L + offs_m, offs_m, N_Q, CHECK_M) * _LOG2E
        pT = tl.math.exp2(tl.dot(k, qT, input_precision=DOT_PRECISION) * QK_SCALE - lse2[None, :])  # (BN, BM)
        if MASK_CAUSAL:
            pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
        do = _load_tile(do_ptrs + start_m * stride_qt, offs_m, N_Q, offs_d, HEAD_DIM, CHECK_M, CHECK_D)  # (BM, D)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        delta = _load_row(Delta + offs_m, offs_m, N_Q, CHECK_M)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # (BN, BM)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, L, Delta, DK, DV, stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                   H, N_Q, N_K, SEQ_BUCKET,
                   QK_SCALE: tl.constexpr, SM_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                   IS_CAUSAL: tl.constexpr, CHECK_M: tl.constexpr, CHECK_N: tl.constexpr, CHECK_D: tl.constexpr,
                   DOT_PRECISION: tl.constexpr, TILE_AXIS: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr):
    """One program: dK and dV of one key tile of one (batch, head). dO is laid out like Q; V, dK and dV like K.
    Causal, the first key tiles are seen by the most queries and already come first."""
    bh = tl.program_id(1 - TILE_AXIS)
    pid_n = tl.program_id(TILE_AXIS)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_kb + h * stride_kh
    DO += b * stride_qb + h * stride_qh
    DK += b * stride_kb + h * stride_kh
    DV += b * stride_kb + h * stride_kh
    L += bh.to(tl.int64) * N_Q
    Delta += bh.to(tl.int64) * N_Q
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)

    k = _load_tile(K + offs_n[:, None] * stride_kt + offs_d[None, :], offs_n, N_K, offs_d, HEAD_DIM, CHECK_N, CHECK_D)
    v = _load_tile(V + offs_n[:, None] * stride_kt + offs_d[None, :], offs_n, N_K, offs_d, HEAD_DIM, CHECK_N, CHECK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    qT_ptrs = Q + offs_m[None, :] * stride_qt + offs_d[:, None]  # (D, BM): Q^T at query tile 0
    do_ptrs = DO + offs_m[:, None] * stride_qt + offs_d[None, :]  # (BM, D)

    if IS_CAUSAL:
        # Query tiles before the one holding row start_n see none of these keys; those up to the first tile whose
        # first row is at or past the last key (row start_n + BLOCK_N - 1) cross the diagonal and are masked.
        lo = (start_n // BLOCK_M) * BLOCK_M
        free = tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M
        dk, dv = _dkdv_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, stride_qt, L, Delta, offs_n, offs_d,
                             lo, tl.minimum(free, N_Q), N_Q, QK_SCALE, HEAD_DIM, BLOCK_M, CHECK_M, CHECK_D, True,
                             DOT_PRECISION)
    else:
        free = 0
    dk, dv = _dkdv_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, stride_qt, L, Delta, offs_n, offs_d,
                         free, N_Q, N_Q, QK_SCALE, HEAD_DIM, BLOCK_M, CHECK_M, CHECK_D, False, DOT_PRECISION)

    _store_tile(DK + offs_n[:, None] * stride_kt + offs_d[None, :], (dk * SM_SCALE).to(DK.dtype.element_ty),
                offs_n, N_K, offs_d, HEAD_DIM, CHECK_N, CHECK_D)
    _store_tile(DV + offs_n[:, None] * stride_kt + offs_d[None, :], dv.to(DV.dtype.element_ty),
                offs_n, N_K, offs_d, HEAD_DIM, CHECK_N, CHECK_D)


# --------------------------------------------------------------------------------------------------------- launchers
def _configs(shapes):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) -> triton.Config; BLOCK_M counts queries, BLOCK_N keys."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


_TUNE_KEY = ["SEQ_BUCKET", "HEAD_DIM", "IS_CAUSAL"]  # the autotuner adds the tensors' dtypes itself
# Tile shapes per kernel and regime, a usual winner first (it is what AUTOTUNE = False runs). "tuned": 16-bit
# inputs longer than SHORT_SEQ, autotuned; "short": one shape, no compile-and-time cost where tuning cannot pay
# off; "fp32": IEEE float32 dots on CUDA cores, small tiles. Each shape costs one compile per problem variant, so
# the lists were cut from up to 7 shapes per kernel, tried on an H100 at q, k, v (16, T, d) bf16 causal, T 4096
# and 16384, d 64 and 128: 128x128 forward tiles lost to 128x64 w8 once that was tried, and 32x128 and 128x128
# backward tiles never won.
_TILES = {
    "fwd": {
        "tuned": [(128, 64, 4, 3), (128, 64, 4, 4), (128, 64, 8, 3), (64, 64, 4, 3)],
        "short": [(64, 64, 4, 3)],
        "fp32": [(64, 32, 4, 2)],
    },
    "dkdv": {
        "tuned": [(64, 64, 4, 3), (32, 64, 4, 3), (64, 128, 8, 3), (128, 64, 8, 3)],
        "short": [(64, 64, 4, 3)],
        "fp32": [(32, 64, 4, 2)],
    },
    "dq": {
        "tuned": [(64, 64, 4, 3), (64, 64, 4, 4), (128, 32, 4, 4), (128, 64, 8, 3)],
        "short": [(64, 64, 4, 3)],
        "fp32": [(64, 32, 4, 2)],
    },
}
# Under the interpreter: small, unequal tiles, so that short test sequences still span several of them.
_INTERPRETER_TILES = {"fwd": {"BLOCK_M": 32, "BLOCK_N": 16}, "dkdv": {"BLOCK_M": 16, "BLOCK_N": 32},
                      "dq": {"BLOCK_M": 32, "BLOCK_N": 16}}
_KERNELS = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}
_TUNERS = {
    (name, regime): triton.autotune(configs=_configs(shapes), key=_TUNE_KEY)(_KERNELS[name])
    for name, regimes in _TILES.items() for regime, shapes in regimes.items()
}
# Grid order. (batch, head) on axis 0 and tiles on axis 1 starts the longest causal tiles of every head first.
# The forward and dQ programs all sweep K and V from key 0, in step, so that order costs them no L2 reuse. dK/dV
# programs sweep Q and dO from their own first row, out of step: once Q and dO of all heads outgrow L2, tiles go
# on axis 0 so that the programs in flight share one head. H100, (16, 16384, 128) bf16 causal: dK/dV 3.80 ms
# tiles-first vs 4.61 heads-first; (16, 4096, 128): 0.316 vs 0.297 ms.
L2_BYTES = 50 * 2**20  # the H100's L2
AUTOTUNE = True  # False: the "tuned" regime runs each list's first shape (the GPU tests use this to bound compiles)
_CHOSEN: dict = {}  # (kernel, regime, autotune key) -> the Config the autotuner picked


def _regime(dtype: torch.dtype, seq_len: int) -> str:
    return "fp32" if dtype == torch.float32 else ("short" if seq_len <= SHORT_SEQ else "tuned")


def _launch(name: str, grid, args: tuple, meta: dict, regime: str, key: tuple) -> None:
    """Run kernel `name` on the tiles its regime gives. Eager calls after the first skip the autotuner (its key
    building costs CPU time per launch); under torch.compile the autotuner is left to inductor."""
    if _INTERPRET:
        _KERNELS[name][grid](*args, **meta, **_INTERPRETER_TILES[name])
        return
    tuner = _TUNERS[(name, regime)]
    if torch.compiler.is_compiling():
        tuner[grid](*args, **meta)
        return
    config = tuner.configs[0] if len(tuner.configs) == 1 or not AUTOTUNE else _CHOSEN.get((name, regime, key))
    if config is None:
        tuner[grid](*args, **meta)
        _CHOSEN[(name, regime, key)] = tuner.best_config
        return
    _KERNELS[name][grid](*args, **meta, **config.all_kwargs())


def chosen_tiles(dtype: torch.dtype, seq_len: int, head_dim: int, is_causal: bool) -> str:
    """The tiles eager calls run for this problem, e.g. 'fwd 128x64 w4 s3; dq ...; dkdv ...' ('' before any call)."""
    regime = _regime(dtype, seq_len)
    key = (_seq_bucket(seq_len), head_dim, bool(is_causal), dtype)
    parts = []
    for name in ("fwd", "dq", "dkdv"):
        configs = _TUNERS[(name, regime)].configs
        config = configs[0] if len(configs) == 1 or not AUTOTUNE else _CHOSEN.get((name, regime, key))
        if config is not None:
            parts.append(f"{name} {config.kwargs['BLOCK_M']}x{config.kwargs['BLOCK_N']} "
                         f"w{config.num_warps} s{config.num_stages}")
    return "; ".join(parts)


def _seq_bucket(seq_len: int) -> int:
    """The autotuner's key for length: tiles are re-tuned per power of two, not per length."""
    return min(triton.next_power_of_2(seq_len), 1 << 16)


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
    """(regime, autotune key, meta-parameters shared by every kernel of one call, softmax scale)."""
    Tq, Tk, d = Q.shape[-2], K.shape[-2], Q.shape[-1]
    block_d = max(16, triton.next_power_of_2(d))
    sm_scale = 1.0 / math.sqrt(d)
    meta = dict(
        QK_SCALE=sm_scale * 1.4426950408889634, HEAD_DIM=d, BLOCK_D=block_d, IS_CAUSAL=bool(is_causal),
        CHECK_M=Tq % EVEN_MULTIPLE != 0, CHECK_N=Tk % EVEN_MULTIPLE != 0, CHECK_D=block_d != d,
        DOT_PRECISION="ieee" if Q.dtype == torch.float32 else "tf32", TILE_AXIS=1,
    )
    seq_len = max(Tq, Tk)
    return _regime(Q.dtype, seq_len), (_seq_bucket(seq_len), d, bool(is_causal), Q.dtype), meta, sm_scale


def _grid(bh: int, length: int, block: str, tile_axis: int):
    """Programs for B * nh (batch, head) pairs x the tiles of one sequence, the tile index on tile_axis."""
    def grid(meta):
        tiles = triton.cdiv(length, meta[block])
        return (bh, tiles) if tile_axis == 1 else (tiles, bh)

    return grid


def flash_forward(Q, K, V, is_causal=False):
    """-> (O like Q, L of shape Q.shape[:-1] in float32). Q (B, [nh,] Tq, d), K and V (B, [nh,] Tk, d)."""
    check_inputs(Q, K, V)
    Q, K = _dense(Q), _dense(K)
    V = _laid_out_like(V, K)
    O = torch.empty_like(Q)
    L = torch.empty(Q.shape[:-1], dtype=torch.float32, device=Q.device)
    q4, k4, v4, o4 = (_as_4d(x) for x in (Q, K, V, O))
    B, H, Tq, _ = q4.shape
    Tk = k4.shape[2]
    regime, key, meta, _ = _problem(Q, K, is_causal)
    args = (q4, k4, v4, o4, L, *q4.stride()[:3], *k4.stride()[:3], H, Tq, Tk, key[0])
    _launch("fwd", _grid(B * H, Tq, "BLOCK_M", 1), args, meta, regime, key)
    return O, L


def flash_backward(Q, K, V, O, L, dO, is_causal=False):
    """-> (dQ, dK, dV), each shaped like its input. Recomputes P tile by tile from L."""
    Q, K = _dense(Q), _dense(K)  # as in flash_forward, so O has Q's strides
    V = _laid_out_like(V, K)
    dO = _laid_out_like(dO, Q)  # the gradient of o.sum() is an expanded tensor with stride 0
    O = _laid_out_like(O, Q)
    dQ, dK, dV = torch.empty_like(Q), torch.empty_like(K), torch.empty_like(K)
    delta = torch.empty_like(L)
    q4, k4, v4, o4, do4, dq4, dk4, dv4 = (_as_4d(x) for x in (Q, K, V, O, dO, dQ, dK, dV))
    B, H, Tq, _ = q4.shape
    Tk = k4.shape[2]
    regime, key, meta, sm_scale = _problem(Q, K, is_causal)
    meta["SM_SCALE"] = sm_scale
    strides = (*q4.stride()[:3], *k4.stride()[:3], H, Tq, Tk, key[0])
    # dQ first: it leaves D = rowsum(dO * O) for the dK/dV pass.
    _launch("dq", _grid(B * H, Tq, "BLOCK_M", 1), (q4, k4, v4, o4, do4, L, delta, dq4, *strides), meta, regime, key)
    tile_axis = 0 if 2 * Q.numel() * Q.element_size() > L2_BYTES else 1
    _launch("dkdv", _grid(B * H, Tk, "BLOCK_N", tile_axis), (q4, k4, v4, do4, L, delta, dk4, dv4, *strides),
            dict(meta, TILE_AXIS=tile_axis), regime, key)
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

