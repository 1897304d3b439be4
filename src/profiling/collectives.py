"""Benchmark torch.distributed collectives: time, algorithm and bus bandwidth per operation, size and world size.

    python -m src.profiling.collectives                                   # every GPU, NCCL, 1 KB .. 1 GB, x4
    python -m src.profiling.collectives                                   # no GPU: 2 gloo ranks, 1 KB .. 16 MB
    python -m src.profiling.collectives --nproc_per_node 2 4 8 --ops all_reduce --dtype bfloat16 --output c.jsonl
    python -m src.profiling.collectives --dist_backend gloo --nproc_per_node 2 --max_size 64K     # CPU
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:PORT -m src.profiling.collectives

Each world size in --nproc_per_node is launched through torchrun as its own process group; under a torchrun of
the user's, every rank measures in-process and rank 0 writes. Sizes, algbw and busbw follow nccl-tests (see
src/distributed/collectives.py). Every result is checked against known values; a wrong one is a row whose status
says so and makes the command exit 1. Rows with the environment (NCCL version, `nvidia-smi topo -m`) are appended
to --output; the markdown table is printed last. Each row is also shown on stderr as it finishes; Ctrl-C stops
the run with one line, the table of what finished and exit status 130.
"""

import argparse
import json
import os
import re
import sys

import numpy as np
from tabulate import tabulate

from src import nvtx
from src.distributed.comm_range import format_bytes
from src.distributed.collectives import (DEFAULT_FACTOR, DEFAULT_MAX_BYTES, DEFAULT_MIN_BYTES, DTYPES, OPS, bandwidths,
                                         measure, size_ladder)
from src.harness.cli import EXIT_INTERRUPTED, EXIT_USAGE, OneLineParser, UsageError, non_negative_int, parse_and_resolve, positive_int
from src.harness.environment import collect_environment, communication_environment
from src.harness.launch import init_distributed, run_torchrun, under_torchrun
from src.harness.lifetime import temp_folder, watch_parent
from src.harness.results import append_record, check_writable

PROG = "python -m src.profiling.collectives"
ROWS_VARIABLE = "LMBENCH_COLLECTIVE_ROWS"  # set by the launching parent: rank 0 also hands its rows back there
COLLECTIVE_TIMEOUT_S = 300  # one 1 GB collective over gloo on a slow CPU stays far below this
# Without a GPU the default ladder stops here: gloo over loopback moved ~0.3 GB/s on the 2-core CI host, so the
# 1 GB rungs alone kept the default run silent for 240 s; 16 MB keeps it to seconds per operation.
GLOO_DEFAULT_MAX_BYTES = 16 * 1024**2
UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3}
QUANTILES = (20, 80)


def parse_size(text: str) -> int:
    """'64K', '1MB', '1G', '4096' -> bytes (binary units, as nccl-tests' -b/-e)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?B?)\s*", text.upper())
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"not a size in bytes like 1K, 64KB, 1M or 1G: {text!r}")
    return int(match.group(1)) * UNITS[match.group(2)]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    p.add_argument("--min_size", type=parse_size, default=DEFAULT_MIN_BYTES, help="smallest size (default 1K)")
    p.add_argument("--max_size", type=parse_size, help="largest size (default 1G with nccl, 16M with gloo)")
    p.add_argument("--factor", type=positive_int, default=DEFAULT_FACTOR, help="ladder step (default 4)")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["float32"])
    p.add_argument("--dist_backend", choices=("nccl", "gloo"), help="default: nccl on CUDA, else gloo (CPU tensors)")
    p.add_argument("--nproc_per_node", type=positive_int, nargs="+",
                   help="world sizes, one process group each (default: every GPU for nccl, 2 for gloo); "
                        "ignored under the user's own torchrun")
    p.add_argument("--iters", type=positive_int, default=20, help="timed calls per size")
    p.add_argument("--warmup", type=non_negative_int, default=5, help="untimed calls per size after the check")
    p.add_argument("--timeout_s", type=positive_int, default=1800, help="bound on each world size's whole launch")
    p.add_argument("--nvtx", action="store_true", help="NVTX ranges around each check and timed loop")
    p.add_argument("--output", help="append one row per measurement: CSV, or JSON lines if the name ends in .jsonl")
    return p


def resolve(args) -> dict:
    """Everything decided before any work; a UsageError names the problem."""
    import torch

    backend = args.dist_backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise UsageError("--dist_backend nccl needs CUDA, and torch sees no CUDA device; use --dist_backend gloo")
    gpus = torch.cuda.device_count() if backend == "nccl" else 0
    world_sizes = args.nproc_per_node or [gpus if backend == "nccl" else 2]
    if backend == "nccl" and not under_torchrun() and max(world_sizes) > gpus:
        raise UsageError(f"--nproc_per_node {max(world_sizes)} is more than the {gpus} GPU(s) present")
    max_size = args.max_size or max(DEFAULT_MAX_BYTES if backend == "nccl" else GLOO_DEFAULT_MAX_BYTES, args.min_size)
    if args.min_size > max_size:
        raise UsageError(f"--min_size {args.min_size} is larger than --max_size {max_size}")
    if args.factor < 2:
        raise UsageError(f"--factor must be at least 2, got {args.factor}")
    if args.output:
        if not args.output.endswith((".csv", ".jsonl")):
            raise UsageError(f"--output {args.output}: the name must end in .csv or .jsonl")
        try:
            check_writable(args.output)
        except ValueError as error:
            raise UsageError(f"--output: {error}") from None
    return {"backend": backend, "world_sizes": world_sizes, "sizes": size_ladder(args.min_size, max_size, args.factor)}


# ---------------------------------------------------------------- the ranks' side


def measurement_record(m, dtype: str, backend: str, world_size: int, iters: int, warmup: int, env: dict) -> dict:
    times = np.asarray(m.times_s)
    median = float(np.median(times))
    algbw, busbw = bandwidths(m.op, m.size_bytes, median, world_size)
    low, high = (float(np.percentile(times, q)) for q in QUANTILES)
    status = "ok" if m.correct else (f"wrong result: max relative error {m.max_relative_error:.3g} "
                                     f"> tolerance {m.tolerance:.3g}")
    return {
        "kind": "collective",
        "config": {"op": m.op, "size_bytes": m.size_bytes, "dtype": dtype, "world_size": world_size,
                   "dist_backend": backend, "device": env["device"], "iters": iters, "warmup": warmup},
        "status": status,
        "count": m.count,
        "median_time_s": median, "p20_time_s": low, "p80_time_s": high,
        "min_time_s": float(times.min()), "max_time_s": float(times.max()),
        "algbw_gbps": algbw, "busbw_gbps": busbw,
        "max_relative_error": m.max_relative_error, "tolerance": m.tolerance,
        "times_s": m.times_s,
        "env": env,
    }


def run_ranks(args, resolved) -> int:
    """Every rank of the group: measure each operation, dtype and size; rank 0 writes and hands back the rows."""
    import torch
    import torch.distributed as dist

    backend = resolved["backend"]
    if os.environ.get(ROWS_VARIABLE):  # launched by our parent: a rank whose launcher is gone ends
        watch_parent(os.getppid())
    rank, world_size, local_rank = init_distributed(backend, COLLECTIVE_TIMEOUT_S)
    device = f"cuda:{local_rank}" if backend == "nccl" else "cpu"
    nvtx.configure(harness=args.nvtx, model=False)
    env = communication_environment("cuda" if backend == "nccl" else "cpu") if rank == 0 else {}
    records = []
    try:
        for dtype in args.dtype:
            for op in args.ops:
                for size in resolved["sizes"]:
                    m = measure(op, size, DTYPES[dtype], args.iters, args.warmup, torch.device(device))
                    if rank != 0:
                        continue
                    record = measurement_record(m, dtype, backend, world_size, args.iters, args.warmup, env)
                    records.append(record)
                    if args.output:
                        append_record(args.output, record)
                    if os.environ.get(ROWS_VARIABLE):
                        append_record(os.environ[ROWS_VARIABLE], record)
    finally:
        dist.destroy_process_group()
    if rank == 0 and not os.environ.get(ROWS_VARIABLE):  # launched by the user's torchrun: nobody else prints
        print(format_table(records))
    return 0 if all(r["status"] == "ok" for r in records) else 1


# ---------------------------------------------------------------- the launching parent


def failure_record(args, backend: str, world_size: int, status: str) -> dict:
    """The row of a world size whose process group failed: which rank and why, with the environment."""
    device = "cuda" if backend == "nccl" else "cpu"
    return {
        "kind": "collective",
        "config": {"op": " ".join(args.ops), "dtype": " ".join(args.dtype), "world_size": world_size,
                   "dist_backend": backend, "device": device, "iters": args.iters, "warmup": args.warmup},
        "status": f"crash: {status}"[:400],
        "env": collect_environment(device, query_gpu=False),  # the GPUs belong to the ranks
    }


class RowsFollower:
    """The rows rank 0 appends to `path` as it measures, read as they come: each whole line once, shown on stderr
    as a progress line and added to `records`."""

    def __init__(self, path: str, records: list[dict], total: int):
        self.path, self.records, self.total, self.offset, self.seen = path, records, total, 0, 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        whole = chunk[:chunk.rfind(b"\n") + 1]  # a line rank 0 is still writing waits for the next poll
        self.offset += len(whole)
        for line in whole.decode().splitlines():
            if line.strip():
                self.seen += 1
                self.records.append(json.loads(line))
                print(f"{PROG}: [{self.seen}/{self.total}] {progress_line(self.records[-1])}", file=sys.stderr,
                      flush=True)


def progress_line(r: dict) -> str:
    c = r["config"]
    return (f"n={c['world_size']} {c['op']} {c['dtype']} {format_bytes(c['size_bytes'])}: "
            f"{r['median_time_s'] * 1e6:.1f} us, busbw {r['busbw_gbps']:.3g} GB/s, {r['status']}")


def launch_all(args, resolved, argv: list[str]) -> int:
    records, failed = [], False
    total = len(args.dtype) * len(args.ops) * len(resolved["sizes"])
    sizes = resolved["sizes"]
    try:
        for world_size in resolved["world_sizes"]:
            print(f"{PROG}: world size {world_size} ({resolved['backend']}): {len(args.ops)} op(s) x "
                  f"{len(args.dtype)} dtype(s) x {len(sizes)} size(s), {format_bytes(sizes[0])} .. "
                  f"{format_bytes(sizes[-1])}", file=sys.stderr, flush=True)
            with temp_folder("collectives") as tmp:
                rows = RowsFollower(os.path.join(tmp, "rows.jsonl"), records, total)
                result = run_torchrun(world_size, "src.profiling.collectives", argv, args.timeout_s,
                                      env={ROWS_VARIABLE: rows.path}, stall_timeout_s=COLLECTIVE_TIMEOUT_S,
                                      on_tick=rows.poll)
                rows.poll()
            failed |= any(r["status"] != "ok" for r in records)
            if not result.ok:
                failed = True
                record = failure_record(args, resolved["backend"], world_size, result.describe())
                records.append(record)
                if args.output:
                    append_record(args.output, record)
                sys.stderr.write(result.stderr_tail)
                print(f"{PROG}: world size {world_size}: {record['status']}", file=sys.stderr)
    except KeyboardInterrupt:  # the group is already ended (run_torchrun); what finished is in `records`
        print(f"\n{PROG}: interrupted: {len(records)} measurement(s) finished"
              + (f"; their rows are in {args.output}" if args.output and records else ""), file=sys.stderr)
        print(format_table(records))
        return EXIT_INTERRUPTED
    print(format_table(records))
    return 1 if failed else 0


def format_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        c = r["config"]
        measured = r.get("median_time_s") is not None
        rows.append({
            "op": c.get("op"), "n": c.get("world_size"), "backend": c.get("dist_backend"), "dtype": c.get("dtype"),
            "size": format_bytes(c["size_bytes"]) if c.get("size_bytes") else "",
            "median us": f"{r['median_time_s'] * 1e6:.1f}" if measured else "",
            "p20-p80 us": f"{r['p20_time_s'] * 1e6:.1f}-{r['p80_time_s'] * 1e6:.1f}" if measured else "",
            "algbw GB/s": f"{r['algbw_gbps']:.3g}" if measured else "",
            "busbw GB/s": f"{r['busbw_gbps']:.3g}" if measured else "",
            "status": r["status"],
        })
    return tabulate(rows, headers="keys", tablefmt="github") if rows else "(no rows)"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parsed = parse_and_resolve(build_parser, resolve, argv, PROG)
    if parsed is None:
        return EXIT_USAGE
    args, resolved = parsed
    if under_torchrun():
        return run_ranks(args, resolved)
    return launch_all(args, resolved, argv)


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())
