"""Tile and program-order tuning of the Triton FlashAttention kernels on one GPU: each candidate timed and checked.

    python3 scripts/attention_h200.py --out DIR                    # on the GPU machine, from the repository root
    python3 scripts/attention_h200.py --out DIR --phase compile    # only fill Triton's cache (beside other work)
    python3 scripts/attention_h200.py --out DIR --phase time       # then time, alone on the GPU
    ... --write_table src/kernels/flash_triton.py                  # and write the winners into the tile table

For each problem (batch x heads x T x d, bf16, causal) every candidate tile shape of each kernel is run once
against SDPA (relative error of O, dQ, dK, dV) and timed with triton.testing.do_bench (median): the forward alone,
and the backward (dQ pass + dK/dV pass) with one kernel's candidate and the other kernel at its table entry, so the
backward rows rank one kernel's candidates. Then the best tiles are timed with three program orders: heads in
L2-sized groups (the default), all heads interleaved (the order before 2026-12-01) and one head at a time.
Candidates compile first in parallel worker processes (into Triton's on-disk cache), so the timing process finds
them compiled. Prints one table per problem and the best tiles per kernel; writes everything to DIR/tune.json.
"""

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from src.kernels import flash_triton as ft, sdpa_backend  # noqa: E402
from src.kernels.flash_triton import Tiles  # noqa: E402

# (BLOCK_M query rows, BLOCK_N key rows, warps, stages). The earlier H100 lists, plus larger tiles, deeper
# pipelines, 8 warps for d 128, and the Triton tutorial's backward shapes (dK/dV 32 queries x 128 keys, dQ 128
# queries x 32 keys, 4 warps, 5 stages).
POINTER_CANDIDATES = {
    "fwd": [Tiles(128, 64, 4, 3), Tiles(128, 64, 4, 4), Tiles(128, 64, 8, 3), Tiles(128, 64, 8, 4),
            Tiles(128, 128, 8, 2), Tiles(128, 128, 8, 3)],
    "dq": [Tiles(64, 64, 4, 3), Tiles(128, 32, 4, 4), Tiles(128, 32, 4, 5), Tiles(128, 64, 8, 3),
           Tiles(128, 64, 8, 2), Tiles(128, 128, 8, 2)],
    "dkdv": [Tiles(64, 64, 4, 3), Tiles(32, 64, 4, 3), Tiles(64, 128, 8, 3), Tiles(128, 64, 8, 3),
             Tiles(32, 128, 4, 5), Tiles(64, 128, 8, 2)],
}
# Each shape again with its tiles moved by TMA (tensor descriptors), which the 2026-12-01 run did not try.
CANDIDATES = {name: tiles + [t._replace(tma=True) for t in tiles] for name, tiles in POINTER_CANDIDATES.items()}
# (batch, heads, T, d): the comparison with SDPA (batch 8 x 16 heads); the standard case (16 x 16384 x 64,
# one head) takes the tiles of its class, (64, "long").
PROBLEMS = [(8, 16, 4096, 64), (8, 16, 16384, 64), (8, 16, 4096, 128), (8, 16, 16384, 128)]
LENGTH_CLASS = {4096: "mid", 16384: "long"}  # which entry of flash_triton._SM90_TILES each length stands for
MAX_ERROR = 2e-2  # relative (Frobenius) error against SDPA, both bf16: about 3e-3 is usual


def _inputs(batch, heads, T, d, seed=0):
    shape = (batch, T, d) if heads is None else (batch, heads, T, d)
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v, do = (torch.randn(shape, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    return q, k, v, do


def _compile_jobs(jobs):
    """Worker: run each (problem, kernel, tiles) once on a short sequence with the same specialisation (T a
    multiple of 128, the same heads and head dim), which leaves the compiled kernel in Triton's cache."""
    done = []
    for (batch, heads, _, d), name, tiles in jobs:
        q, k, v, do = _inputs(1, heads, 256, d)
        try:
            if name == "fwd":
                ft.flash_forward(q, k, v, True, tiles={"fwd": tiles})
            else:
                o, lse = ft.flash_forward(q, k, v, True)
                ft.flash_backward(q, k, v, o, lse, do, True, tiles={name: tiles})
            torch.cuda.synchronize()
            done.append(None)
        except Exception as error:  # noqa: BLE001 - a tile shape that does not fit is a result, not a crash
            done.append(f"{type(error).__name__}: {str(error).splitlines()[0][:160]}")
    return done


def precompile(workers: int) -> dict:
    keys = {}
    for p in PROBLEMS:
        for name, tiles in CANDIDATES.items():
            for t in tiles:
                keys.setdefault((p[1] is None, p[3], name, t), (p, name, t))
    jobs = list(keys.values())
    chunks = [jobs[i::workers] for i in range(workers)]
    errors = {}
    ctx = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for chunk, results in zip(chunks, pool.map(_compile_jobs, chunks)):
            for (p, name, t), err in zip(chunk, results):
                if err:
                    errors[(p[1] is None, p[3], name, t)] = err
    return errors


def _bench(fn, budget_ms):
    import triton.testing

    return triton.testing.do_bench(fn, warmup=budget_ms / 4, rep=budget_ms, quantiles=[0.5])


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def tune_problem(p, compile_errors, budget_ms):
    batch, heads, T, d = p
    q, k, v, do = _inputs(batch, heads, T, d, seed=1)
    rows, out = [], {"problem": p}
    qs, ks, vs = (x.detach().requires_grad_() for x in (q, k, v))
    o_ref = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
    ref_grads = torch.autograd.grad(o_ref, (qs, ks, vs), do, retain_graph=True)
    out["sdpa_kernel"] = sdpa_backend(q, k, v, True)  # which of SDPA's kernels the sdpa timings are
    out["sdpa_fwd_ms"] = _bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), budget_ms)
    out["sdpa_bwd_ms"] = _bench(lambda: torch.autograd.grad(o_ref, (qs, ks, vs), do, retain_graph=True), budget_ms)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # FlashAttention-2 inside torch, beside the default choice
        o_fa = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
        out["sdpa_flash2_fwd_ms"] = _bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), budget_ms)
        out["sdpa_flash2_bwd_ms"] = _bench(lambda: torch.autograd.grad(o_fa, (qs, ks, vs), do, retain_graph=True),
                                           budget_ms)
    table = ft.tile_table(q.device, q.dtype, T, d)
    o0, lse0 = ft.flash_forward(q, k, v, True)
    best = {}
    for name in ft.KERNELS:
        for t in CANDIDATES[name]:
            err = compile_errors.get((heads is None, d, name, t))
            row = {"kernel": name, "tiles": str(t), "table": t == table[name]}
            if err is None:
                try:
                    if name == "fwd":
                        o, lse = ft.flash_forward(q, k, v, True, tiles={name: t})
                        row["error"] = _rel(o, o_ref)
                        row["ms"] = _bench(lambda t=t: ft.flash_forward(q, k, v, True, tiles={"fwd": t}), budget_ms)
                    else:
                        grads = ft.flash_backward(q, k, v, o0, lse0, do, True, tiles={name: t})
                        row["error"] = max(_rel(a, b) for a, b in zip(grads, ref_grads))
                        row["ms"] = _bench(lambda t=t, name=name: ft.flash_backward(q, k, v, o0, lse0, do, True,
                                                                                   tiles={name: t}), budget_ms)
                except Exception as error:  # noqa: BLE001
                    err = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            if err is not None:
                row["failed"] = err
            elif row["error"] > MAX_ERROR:
                row["failed"] = f"error {row['error']:.1e} > {MAX_ERROR}"
            rows.append(row)
            if "failed" not in row and (name not in best or row["ms"] < best[name][1]):
                best[name] = (t, row["ms"])
    out["rows"] = rows
    out["best"] = {name: str(t) for name, (t, _) in best.items()}
    # Program order with the best tiles: L2-sized groups (default), all heads interleaved, one head at a time.
    chosen = {name: t for name, (t, _) in best.items()}
    n_bh = batch * (heads or 1)
    orders = {}
    for label, group in (("groups", None), ("all heads", n_bh), ("one head", 1)):
        orders[label] = {
            "fwd_ms": _bench(lambda g=group: ft.flash_forward(q, k, v, True, tiles=chosen, group=g), budget_ms),
            "bwd_ms": _bench(lambda g=group: ft.flash_backward(q, k, v, o0, lse0, do, True, tiles=chosen, group=g),
                             budget_ms)}
    out["orders"] = orders
    out["group_fwd"] = ft.group_size(n_bh, 2 * T * d * 2)
    return out


def print_problem(r):
    batch, heads, T, d = r["problem"]
    print(f"\n### B {batch} x nh {heads or '1 (3-d)'} x T {T} x d {d}, bf16 causal "
          f"(SDPA, its {r['sdpa_kernel']} kernel, fwd {r['sdpa_fwd_ms']:.3f} bwd {r['sdpa_bwd_ms']:.3f} ms; "
          f"SDPA FLASH_ATTENTION backend fwd {r['sdpa_flash2_fwd_ms']:.3f} bwd {r['sdpa_flash2_bwd_ms']:.3f} ms)")
    print("| kernel | tiles | ms (fwd alone / whole bwd) | rel. error vs SDPA | note |\n|---|---|---:|---:|---|")
    for row in r["rows"]:
        note = ("table; " if row["table"] else "") + row.get("failed", "")
        ms = f"{row['ms']:.3f}" if "ms" in row else ""
        e = f"{row['error']:.1e}" if "error" in row else ""
        print(f"| {row['kernel']} | {row['tiles']} | {ms} | {e} | {note} |")
    print("best: " + "; ".join(f"{k} {v}" for k, v in r["best"].items()))
    print("| order (best tiles) | fwd ms | bwd ms |\n|---|---:|---:|")
    for label, o in r["orders"].items():
        print(f"| {label} | {o['fwd_ms']:.3f} | {o['bwd_ms']:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--budget_ms", type=float, default=100.0, help="do_bench rep per timing")
    parser.add_argument("--phase", choices=("compile", "time", "all"), default="all")
    parser.add_argument("--write_table", metavar="FLASH_TRITON_PY",
                        help="then rewrite that file's _SM90_TILES with the fastest tiles found")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    errors_file = os.path.join(args.out, "compile_errors.json")
    if args.phase in ("compile", "all"):
        errors = precompile(args.workers)
        with open(errors_file, "w") as f:
            json.dump([[list(key[:2]), key[2], list(key[3]), err] for key, err in errors.items()], f)
        print(f"compiled {sum(len(c) for c in CANDIDATES.values())} candidates per problem class in "
              f"{time.time() - start:.0f} s; {len(errors)} failed", flush=True)
        if args.phase == "compile":
            return
    with open(errors_file) as f:
        errors = {(three_d, d, name, Tiles(*t)): err for (three_d, d), name, t, err in json.load(f)}
    results = []
    for p in PROBLEMS:
        results.append(tune_problem(p, errors, args.budget_ms))
        print(f"tuned {p} at {time.time() - start:.0f} s", flush=True)
        print_problem(results[-1])
        with open(os.path.join(args.out, "tune.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
    if args.write_table:
        write_table(args.write_table, results)


def write_table(path: str, results: list) -> None:
    """Rewrite _SM90_TILES in the kernel file with each problem's fastest tiles (an entry nothing beat stays)."""
    import re

    table = {key: dict(entry) for key, entry in ft._SM90_TILES.items()}
    for r in results:
        _, _, T, d = r["problem"]
        for name, text in r["best"].items():
            table[(64 if d <= 64 else 128, LENGTH_CLASS[T])][name] = Tiles.parse(text)
    lines = ["_SM90_TILES = {"]
    for (d_class, length), entry in table.items():
        kernels = ", ".join(f'"{name}": Tiles({t.block_m}, {t.block_n}, {t.warps}, {t.stages}'
                            f'{", tma=True" if t.tma else ""})' for name, t in entry.items())
        lines.append(f'    ({d_class}, "{length}"): {{{kernels}}},')
    lines.append("}")
    with open(path) as f:
        source = f.read()
    source, n = re.subn(r"_SM90_TILES = \{\n.*?\n\}", "\n".join(lines), source, count=1, flags=re.S)
    assert n == 1, "no _SM90_TILES table found"
    with open(path, "w") as f:
        f.write(source)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
