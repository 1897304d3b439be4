"""What splitting costs, measured on one GPU: the matmuls one tensor-parallel rank runs, timed at each degree.

    uv run -m src.profiling.split_probe --model 2.7B --tp 1 2 4 8 --batch_size 4 --context_length 1024 \\
        --overlap --output probe_2p7b.jsonl
    uv run -m src.profiling.split_probe --model llama-3.1-8b --tp 1 2 4 8 --batch_size 1 --context_length 8192 \\
        --output probe_8b.jsonl
    uv run -m src.profiling.predict --sizes 2.7B --parallel tp fsdp_tp fsdp2 --probe probe_2p7b.jsonl

Per degree t (1 is always measured: the efficiency is relative to it), every distinct GEMM of one block at the
rank's shapes (src/predict/split.py: q/k/v and gate/up column-parallel, o and down row-parallel, the forward and
both backward products), SDPA at the rank's local heads (forward and backward, causal), and the
vocabulary-parallel LM head, each timed alone by src/harness/timing.py's bench_ms (CUDA: triton's do_bench, CUDA
events, warm-up, L2 flushed, the median of repeats; CPU: a wall-clock median). Rows: one per (t, shape) with its
median ms and TFLOP/s, then one summary per t whose `efficiency` = time(1) / t / time(t) over layers x block +
head is what `predict --probe` divides TP compute by. The t = 1 rows are also FSDP's gathered-layer shapes.
--overlap (CUDA): a compute-bound bf16 GEMM loop timed by CUDA events alone and with a concurrent copy on another
stream, (a) pinned host <-> device copies (the copy engines) and (b) a copy kernel on --ctas CTAs (SMs, as NCCL's
kernels take): `slowdown` = with / alone, what hidden communication costs the compute under it.
"""

import argparse
import math
import statistics
import sys
from dataclasses import asdict

import torch

from src.harness.cli import (EXIT_OK, EXIT_OUTPUT, EXIT_USAGE, OneLineParser, UsageError, parse_and_resolve,
                             positive_float, positive_int, resolve_device)
from src.harness.environment import collect_environment
from src.harness.results import append_record, check_writable, is_jsonl
from src.harness.timing import EventTimer, bench_ms
from src.model.catalog import resolve_model
from src.predict.split import (ATTENTION, COPY_ENGINE, NCCL_LIKE, OVERLAP, SHAPE, SUMMARY, OverlapTiming, ProbeConfig,
                               ShapeTiming, SplitSummary, attention_flops, attention_shape, block_gemms,
                               check_splittable, distinct, efficiencies, head_gemms, probe_record)

PROG = "python -m src.profiling.split_probe"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
COLUMNS = ("kind", "status", "tp", "efficiency", "slowdown")  # an existing --output must share two of these
COPY_MARGIN = 1.5  # copies queued for 1.5x the loop's time alone: they still run when a slowed loop ends
ESTIMATE_REPEATS = 3  # loops and copies timed alone to size the side stream's queue


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--model", default="2.7B", help="a preset, a config under configs/ or a path to a config.json")
    p.add_argument("--tp", type=positive_int, nargs="+", default=[1, 2, 4, 8], help="degrees (1 is always added)")
    p.add_argument("--batch_size", type=positive_int, default=4)
    p.add_argument("--context_length", type=positive_int, default=1024)
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--warmup_ms", type=positive_float, default=25.0, help="do_bench warm-up per shape (ms)")
    p.add_argument("--rep_ms", type=positive_float, default=100.0, help="do_bench measuring time per shape (ms)")
    p.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("--overlap: compute slowed by a concurrent copy (CUDA)")
    o.add_argument("--overlap", action="store_true", help="also time a GEMM loop alone and beside each copy")
    o.add_argument("--overlap_size", type=positive_int, default=8192, help="the loop's (n, n) x (n, n) bf16 GEMM")
    o.add_argument("--overlap_gemms", type=positive_int, default=20, help="GEMMs per timed loop")
    o.add_argument("--overlap_repeats", type=positive_int, default=10, help="timed loops; the median is kept")
    o.add_argument("--copy_mb", type=positive_int, default=256, help="bytes per copy call, MiB")
    o.add_argument("--ctas", type=positive_int, default=32, help="the copy kernel's CTAs (NCCL: one per channel)")
    p.add_argument("--output", help="append the rows here (JSON lines: a name ending in .jsonl)")
    return p


def resolve(args: argparse.Namespace) -> dict:
    """Model, degrees, device and output checked; UsageError (one line) names the problem. Starts no work."""
    device = resolve_device(args.device)
    try:
        model = resolve_model(args.model)
    except ValueError as error:
        raise UsageError(f"--model: {error}") from None
    degrees = sorted(set(args.tp) | {1})
    for t in degrees:
        try:
            check_splittable(model.architecture, t)
        except ValueError as error:
            raise UsageError(f"--tp {t}: {error}") from None
    if args.overlap and device != "cuda":
        raise UsageError("--overlap times CUDA streams side by side: it needs --device cuda")
    if args.copy_mb * 2**20 // 4 >= 2**31:  # the copy kernel's offsets are 32-bit
        raise UsageError(f"--copy_mb {args.copy_mb}: at most {2**31 * 4 // 2**20 - 1} MiB per copy")
    if args.dtype == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--dtype bf16: this GPU has no bf16; use --dtype fp32")
    if args.output:
        try:
            check_writable(args.output, columns=COLUMNS)
        except ValueError as error:
            raise UsageError(f"--output: {error}") from None
        if not is_jsonl(args.output):
            raise UsageError(f"--output {args.output}: the rows nest their shapes; name a .jsonl file")
    config = ProbeConfig(model=args.model, architecture=asdict(model.architecture),
                         batch_size=args.batch_size, context_length=args.context_length, dtype=args.dtype,
                         device=device, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms)
    return {"device": device, "model": model, "degrees": degrees, "config": config}


# --------------------------------------------------------------------------------------------------- measuring
def _operands(op: str, m: int, k: int, n: int, dtype, device, g):
    """(A, B) in the layouts autograd hands cuBLAS for nn.Linear's W (n_out, n_in): forward x @ W^T (B a
    transposed view), grad_input dy @ W (both contiguous), grad_weight dy^T @ x (A a transposed view)."""
    def randn(*shape):
        return torch.randn(shape, generator=g, device=device, dtype=dtype)

    if op == "forward":
        return randn(m, k), randn(n, k).t()
    if op == "grad_input":
        return randn(m, k), randn(k, n)
    return randn(k, m).t(), randn(k, n)


def time_gemm(op: str, m: int, k: int, n: int, dtype, device: str, warmup_ms: float, rep_ms: float, g):
    a, b = _operands(op, m, k, n, dtype, device, g)
    out = torch.empty(m, n, device=device, dtype=dtype)
    return bench_ms(lambda: torch.mm(a, b, out=out), device, warmup_ms, rep_ms)


def time_attention(shape, dtype, device: str, warmup_ms: float, rep_ms: float, g) -> dict[str, tuple]:
    """SDPA's forward and backward at one rank's heads, causal. KV heads are repeated to the query heads once,
    outside the timing, as transformers' repeat_kv does: attention's products are those of full heads either way
    (grouped-query attention saves K/V memory and projections, not T x T work)."""
    B, nh, T, hs = shape.batch_size, shape.num_heads, shape.seq_len, shape.head_dim
    q, k, v = (torch.randn(B, nh, T, hs, generator=g, device=device, dtype=dtype) for _ in "qkv")
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    dout = torch.randn(B, nh, T, hs, generator=g, device=device, dtype=dtype)

    def forward():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    out = forward()
    return {"forward": bench_ms(forward, device, warmup_ms, rep_ms),
            "backward": bench_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True),
                                 device, warmup_ms, rep_ms)}


def _timing(t: int, part: str, names: list[str], op: str, mkn: tuple, attention, flops: int, ms: tuple) -> ShapeTiming:
    median, p20, p80 = ms
    return ShapeTiming(tp=t, part=part, names=names, op=op, m=mkn[0], k=mkn[1], n=mkn[2], attention=attention,
                       count=len(names), flops=flops, median_ms=median, p20_ms=p20, p80_ms=p80,
                       tflops=flops / median / 1e9)


def measure_degree(model, t: int, config: ProbeConfig, device: str, g) -> list[ShapeTiming]:
    """Every distinct GEMM of a block and of the head at degree t, and attention at its heads, timed once each."""
    a, dtype = model.architecture, DTYPES[config.dtype]
    tokens = config.batch_size * config.context_length
    rows = []
    for part, gemms in (("block", block_gemms(a, tokens, t)), ("head", head_gemms(a, tokens, t))):
        for gemm, names in distinct(gemms):
            ms = time_gemm(gemm.op, gemm.m, gemm.k, gemm.n, dtype, device, config.warmup_ms, config.rep_ms, g)
            rows.append(_timing(t, part, names, gemm.op, (gemm.m, gemm.k, gemm.n), None, gemm.flops, ms))
    shape = attention_shape(a, config.batch_size, config.context_length, t)
    for op, ms in time_attention(shape, dtype, device, config.warmup_ms, config.rep_ms, g).items():
        flops = attention_flops(a, config.batch_size, config.context_length, t, op)
        rows.append(_timing(t, "block", [ATTENTION], op, (0, 0, 0), asdict(shape), flops, ms))
    return rows


def summarize_degrees(rows: list[ShapeTiming], num_layers: int) -> list[SplitSummary]:
    """Per degree: one block's and the head's per-rank ms (median x count), the step's, and both efficiencies."""
    block, head = {}, {}
    for r in rows:
        part = block if r.part == "block" else head
        part[r.tp] = part.get(r.tp, 0.0) + r.median_ms * r.count
    model_ms = {t: num_layers * block[t] + head.get(t, 0.0) for t in block}
    step, one_block = efficiencies(model_ms), efficiencies(block)
    return [SplitSummary(tp=t, block_ms=block[t], head_ms=head.get(t, 0.0), model_ms=model_ms[t],
                         block_efficiency=one_block[t], efficiency=step[t]) for t in sorted(block)]


def _timed(timer: EventTimer, phase: str, fn) -> None:
    """fn() between two CUDA events on the current stream, as one step of `timer`."""
    timer.start(phase)
    fn()
    timer.stop(phase)
    timer.next_step()


def _median_ms(timer: EventTimer, phase: str) -> float:
    return statistics.median(s[phase] for s in timer.results()) * 1e3


def measure_overlap(concurrent: str, args) -> OverlapTiming:
    """The GEMM loop's median time alone and with `concurrent` copies queued on a side stream for longer than it."""
    from src.kernels.sm_copy import sm_copy

    n, size = args.overlap_size, args.copy_mb * 2**20
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in "ab")
    c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    if concurrent == NCCL_LIKE:
        src, dst = (torch.empty(size // 4, dtype=torch.int32, device="cuda") for _ in "sd")  # 16 KB per CTA step

        def copy():
            sm_copy(src, dst, args.ctas)
    else:
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        device_buffer = torch.empty(size, dtype=torch.uint8, device="cuda")

        def copy():
            device_buffer.copy_(host, non_blocking=True)
            host.copy_(device_buffer, non_blocking=True)

    def loop():
        for _ in range(args.overlap_gemms):
            torch.mm(a, b, out=c)

    side = torch.cuda.Stream()
    loop()  # allocate and warm the clocks
    copy()  # compiles the copy kernel
    torch.cuda.synchronize()
    first_loops, first_copies = EventTimer("cuda"), EventTimer("cuda")
    for _ in range(ESTIMATE_REPEATS):
        _timed(first_loops, "loop", loop)
    torch.cuda.synchronize()  # the copies alone start once the loops are done
    with torch.cuda.stream(side):
        for _ in range(ESTIMATE_REPEATS):
            _timed(first_copies, "copy", copy)
    calls = math.ceil(COPY_MARGIN * _median_ms(first_loops, "loop") / _median_ms(first_copies, "copy")) + 1

    def copies():
        for _ in range(calls):
            copy()

    alone, beside, busy = EventTimer("cuda"), EventTimer("cuda"), EventTimer("cuda")
    for _ in range(args.overlap_repeats):  # alone and beside alternate: clock drift falls on both alike
        torch.cuda.synchronize()
        _timed(alone, "loop", loop)
        torch.cuda.synchronize()  # each loop beside starts with the side stream's copies just begun
        with torch.cuda.stream(side):
            _timed(busy, "copy", copies)
        _timed(beside, "loop", loop)
    alone_ms = _median_ms(alone, "loop")
    with_ms = _median_ms(beside, "loop")
    return OverlapTiming(concurrent=concurrent, gemm_size=n, gemms=args.overlap_gemms, copy_bytes=size,
                         ctas=args.ctas if concurrent == NCCL_LIKE else 0, alone_ms=alone_ms, with_copy_ms=with_ms,
                         slowdown=with_ms / alone_ms, copy_busy_ms=_median_ms(busy, "copy"),
                         repeats=args.overlap_repeats)


# ---------------------------------------------------------------------------------------------------- reporting
def format_summary(summaries: list[SplitSummary], overlaps: list[OverlapTiming]) -> str:
    lines = ["| tp | block ms | head ms | step matmuls ms | efficiency | block efficiency |", "|---|---|---|---|---|---|"]
    lines += [f"| {s.tp} | {s.block_ms:.3f} | {s.head_ms:.3f} | {s.model_ms:.2f} | {s.efficiency:.3f} | "
              f"{s.block_efficiency:.3f} |" for s in summaries]
    if overlaps:
        lines += ["", "| beside | loop alone ms | with copy ms | slowdown | copy busy ms |", "|---|---|---|---|---|"]
        lines += [f"| {o.concurrent}{f' ({o.ctas} CTAs)' if o.ctas else ''} | {o.alone_ms:.2f} | "
                  f"{o.with_copy_ms:.2f} | {o.slowdown:.3f} | {o.copy_busy_ms:.2f} |" for o in overlaps]
    return "\n".join(lines)


def main(argv=None) -> int:
    parsed = parse_and_resolve(build_parser, resolve, argv, "split_probe")
    if parsed is None:
        return EXIT_USAGE
    args, r = parsed
    device, model, config = r["device"], r["model"], r["config"]
    env = collect_environment(device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    records, timings = [], []
    for t in r["degrees"]:
        rows = measure_degree(model, t, config, device, g)
        timings += rows
        records += [probe_record(SHAPE, config, row, env) for row in rows]
        print(f"{PROG}: tp {t}: {len(rows)} shapes timed", file=sys.stderr, flush=True)
    summaries = summarize_degrees(timings, model.architecture.num_layers)
    records += [probe_record(SUMMARY, config, s, env) for s in summaries]
    overlaps = [measure_overlap(kind, args) for kind in (NCCL_LIKE, COPY_ENGINE)] if args.overlap else []
    records += [probe_record(OVERLAP, config, o, env) for o in overlaps]
    for o in overlaps:
        if o.copy_busy_ms < o.with_copy_ms:
            print(f"{PROG}: warning: the {o.concurrent} copies ended {o.with_copy_ms - o.copy_busy_ms:.2f} ms before "
                  "the loop did: its slowdown is a lower bound", file=sys.stderr)
    if args.output:
        try:
            for record in records:
                append_record(args.output, record, columns=COLUMNS)
        except (OSError, ValueError) as error:
            print(f"{PROG}: could not write {args.output}: {error}", file=sys.stderr)
            print(format_summary(summaries, overlaps))
            return EXIT_OUTPUT
    print(format_summary(summaries, overlaps))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
