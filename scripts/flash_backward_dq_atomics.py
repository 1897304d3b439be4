"""Experiment: a 5-product FlashAttention-2 backward, dQ added from the dK/dV pass by atomics, against the two passes.

    python3 scripts/flash_backward_dq_atomics.py --out DIR [--phase compile|time|all]   # GPU machine, repo root

The kernels in src/kernels/flash_triton.py run the backward in two passes (dQ per query tile, then dK/dV per key
tile), which recomputes S and dP: 7 matrix products where one pass needs 5. Here one pass per key tile also forms
dQ's share, dS @ K, and adds it into a float32 dQ either with Triton's pointer atomics (one reduction per element)
or through a tensor descriptor, whose atomic_add is a bulk tensor reduction (TMA, Hopper) on a whole tile. D =
rowsum(dO * O) comes first (torch), and dQ is scaled and cast last. Restricted to what the measurement needs:
(B, nh, T, d) contiguous bf16, causal, T a multiple of 128, d 64 or 128. Each variant is checked against the
two-pass gradients, then timed with do_bench (median ms): the whole backward, and its fused kernel alone.
"""

import argparse
import concurrent.futures as futures
import json
import math
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from src.kernels import flash_triton as ft  # noqa: E402
from src.kernels.flash_triton import Tiles, _place  # noqa: E402

LOG2E = tl.constexpr(1.4426950408889634)
# (BLOCK_M queries per step, BLOCK_N keys per program, warps, stages)
VARIANTS = [Tiles(64, 128, 8, 2), Tiles(64, 128, 8, 3), Tiles(64, 64, 4, 2), Tiles(32, 128, 4, 3),
            Tiles(64, 64, 4, 3)]
PROBLEMS = [(8, 16, 4096, 64), (8, 16, 16384, 64), (8, 16, 4096, 128), (8, 16, 16384, 128)]


@triton.jit
def _fused_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, dq_ptrs, dq_desc, L, Delta, row_at, offs_n, lo, hi,
                 QK_SCALE: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, MASK: tl.constexpr,
                 TMA: tl.constexpr):
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        qT = tl.load(qT_ptrs + start_m * D)  # (D, BM)
        lse2 = tl.load(L + offs_m) * LOG2E
        pT = tl.math.exp2(tl.dot(k, qT) * QK_SCALE - lse2[None, :])  # (BN, BM)
        if MASK:
            pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
        do = tl.load(do_ptrs + start_m * D)  # (BM, D)
        dv = tl.dot(pT.to(do.dtype), do, dv)
        delta = tl.load(Delta + offs_m)
        dpT = tl.dot(v, tl.trans(do))  # (BN, BM)
        dsT = (pT * (dpT - delta[None, :])).to(qT.dtype)
        dk = tl.dot(dsT, tl.trans(qT), dk)
        dq = tl.dot(tl.trans(dsT), k)  # (BM, D): this key tile's share of dQ, unscaled
        if TMA:
            dq_desc.atomic_add([(row_at + start_m).to(tl.int32), 0], dq)
        else:
            tl.atomic_add(dq_ptrs + start_m * D, dq, sem="relaxed")
    return dk, dv


@triton.jit(do_not_specialize=["GROUP"])
def _bwd_fused(Q, K, V, DO, L, Delta, DQ, dq_desc, DK, DV, H, N_Q, GROUP, QK_SCALE: tl.constexpr,
               SM_SCALE: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               TMA: tl.constexpr):
    q_at, k_at, row_at, pid_n = _place(H, N_Q, N_Q // BLOCK_N, GROUP, H * N_Q * D, N_Q * D, H * N_Q * D, N_Q * D,
                                       False)
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    k = tl.load(K + k_at + offs_n[:, None] * D + offs_d[None, :])
    v = tl.load(V + k_at + offs_n[:, None] * D + offs_d[None, :])
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    qT_ptrs = Q + q_at + offs_m[None, :] * D + offs_d[:, None]
    do_ptrs = DO + q_at + offs_m[:, None] * D + offs_d[None, :]
    dq_ptrs = DQ + q_at + offs_m[:, None] * D + offs_d[None, :]
    lo = (start_n // BLOCK_M) * BLOCK_M
    free = tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M
    dk, dv = _fused_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, dq_ptrs, dq_desc, L + row_at, Delta + row_at, row_at,
                          offs_n, lo, tl.minimum(free, N_Q), QK_SCALE, D, BLOCK_M, True, TMA)
    dk, dv = _fused_tiles(dk, dv, k, v, qT_ptrs, do_ptrs, dq_ptrs, dq_desc, L + row_at, Delta + row_at, row_at,
                          offs_n, free, N_Q, QK_SCALE, D, BLOCK_M, False, TMA)
    tl.store(DK + k_at + offs_n[:, None] * D + offs_d[None, :], (dk * SM_SCALE).to(DK.dtype.element_ty))
    tl.store(DV + k_at + offs_n[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty))


def fused_backward(q, k, v, o, lse, do, tiles: Tiles, tma: bool, kernel_only=None):
    """-> (dQ, dK, dV). kernel_only: (delta, dq32) made beforehand, to time the fused kernel alone."""
    B, H, T, d = q.shape
    if kernel_only is None:
        delta = (o.float() * do.float()).sum(-1)  # (B, H, T)
        dq32 = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    else:
        delta, dq32 = kernel_only
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    desc = dq32
    if tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        desc = TensorDescriptor.from_tensor(dq32.view(B * H * T, d), [tiles.block_m, d])
    sm_scale = 1.0 / math.sqrt(d)
    group = ft.group_size(B * H, 2 * T * d * q.element_size())
    _bwd_fused[(B * H * (T // tiles.block_n),)](
        q, k, v, do, lse, delta, dq32, desc, dk, dv, H, T, group, QK_SCALE=sm_scale * 1.4426950408889634,
        SM_SCALE=sm_scale, D=d, BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, TMA=tma,
        num_warps=tiles.warps, num_stages=tiles.stages)
    if kernel_only is not None:
        return None
    return (dq32 * sm_scale).to(q.dtype), dk, dv


def _inputs(B, H, T, d, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn((B, H, T, d), generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(4)]


def _compile(jobs):
    out = []
    for d, tiles, tma in jobs:
        q, k, v, do = _inputs(1, 16, 256, d)
        try:
            o, lse = ft.flash_forward(q, k, v, True)
            fused_backward(q, k, v, o, lse, do, tiles, tma)
            torch.cuda.synchronize()
            out.append(None)
        except Exception as error:  # noqa: BLE001
            out.append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
    return out


def main():
    import triton.testing

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--phase", choices=("compile", "time", "all"), default="all")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--budget_ms", type=float, default=150.0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    errors_file = os.path.join(args.out, "fused_compile_errors.json")
    start = time.time()
    if args.phase in ("compile", "all"):
        jobs = [(d, t, tma) for d in (64, 128) for t in VARIANTS for tma in (False, True)]
        chunks = [jobs[i::args.workers] for i in range(args.workers)]
        errors = []
        with futures.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for chunk, res in zip(chunks, pool.map(_compile, chunks)):
                errors += [[d, list(t), tma, e] for (d, t, tma), e in zip(chunk, res) if e]
        with open(errors_file, "w") as f:
            json.dump(errors, f)
        print(f"fused: compiled {len(jobs)} variants in {time.time() - start:.0f} s, {len(errors)} failed", flush=True)
        for e in errors:
            print("  failed:", e, flush=True)
        if args.phase == "compile":
            return
    with open(errors_file) as f:
        failed = {(d, Tiles(*t), tma): e for d, t, tma, e in json.load(f)}

    def bench(fn):
        return triton.testing.do_bench(fn, warmup=args.budget_ms / 4, rep=args.budget_ms, quantiles=[0.5])

    results, lines = [], []
    for B, H, T, d in PROBLEMS:
        q, k, v, do = _inputs(B, H, T, d, seed=2)
        o, lse = ft.flash_forward(q, k, v, True)
        ref = ft.flash_backward(q, k, v, o, lse, do, True)
        split_ms = bench(lambda: ft.flash_backward(q, k, v, o, lse, do, True))
        lines.append(f"\n### ({B}, {H}, {T}, {d}) bf16 causal: two-pass backward {split_ms:.3f} ms "
                     f"({ft.chosen_tiles(q.dtype, T, d)})")
        lines.append("| dQ added by | tiles | bwd ms | fused kernel ms | vs two passes | max rel. error vs two passes |")
        lines.append("|---|---|---:|---:|---:|---:|")
        for t in VARIANTS:
            for tma in (False, True):
                row = {"problem": (B, H, T, d), "tiles": str(t), "tma": tma, "split_ms": split_ms}
                err = failed.get((d, t, tma))
                if err is None:
                    try:
                        grads = fused_backward(q, k, v, o, lse, do, t, tma)
                        row["error"] = max(((a.float() - b.float()).norm() / b.float().norm()).item()
                                           for a, b in zip(grads, ref))
                        row["ms"] = bench(lambda: fused_backward(q, k, v, o, lse, do, t, tma))
                        pre = ((o.float() * do.float()).sum(-1), torch.zeros(q.shape, dtype=torch.float32,
                                                                           device=q.device))
                        row["kernel_ms"] = bench(lambda: fused_backward(q, k, v, o, lse, do, t, tma, kernel_only=pre))
                        del pre
                    except Exception as error:  # noqa: BLE001
                        err = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                row["failed"] = err
                results.append(row)
                how = "TMA bulk reduction" if tma else "pointer atomics"
                if err:
                    lines.append(f"| {how} | {t} | | | | failed: {err} |")
                else:
                    lines.append(f"| {how} | {t} | {row['ms']:.3f} | {row['kernel_ms']:.3f} | "
                                 f"{split_ms / row['ms']:.2f}x | {row['error']:.1e} |")
        print(f"fused: timed ({B}, {H}, {T}, {d}) at {time.time() - start:.0f} s", flush=True)
    with open(os.path.join(args.out, "fused.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
