"""Benchmark attention alone: forward, backward and both, per implementation x length x head dim x dtype x causal.

    python -m src.profiling.attention                      # the full sweep on CUDA (a tiny one on CPU)
    python -m src.profiling.attention --seq_lens 4096 16384 --head_dims 64 128 --dtypes bf16 --causal true
    python -m src.profiling.attention --standard_case      # q, k, v (16, 16384, 64) bf16 causal, compiled fwd+bwd

Inputs are (batch, heads, seq, d) with Tq = Tk. Times are medians of triton.testing.do_bench (CUDA events, L2
flushed between runs; a perf_counter median on CPU), in ms, with the 20th and 80th percentiles in the records.
TFLOP/s count matrix products only: forward 4 * B * nh * T^2 * d, backward 2.5x that (five products to the
forward's two; recomputation not counted), and causal as HALF of the full T x T work, the visible triangle.
Memory is what is allocated after the forward, before backward: inputs, output, and what backward will need.
An out-of-memory configuration becomes a row with status "oom" and the sweep goes on.
"""

import argparse
import gc
import itertools
import sys

import torch

from src.kernels import get_attention, sdpa_backend, sdpa_only
from src.kernels.triton_interpreter import interpreted
from src.harness.cli import (EXIT_FAILED, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE, OneLineParser, UsageError,
                             parse_and_resolve, positive_float, positive_int, resolve_device)
from src.harness.environment import collect_environment
from src.harness.results import append_record, check_writable
from src.harness.timing import bench_ms
from src.reports.anomalies import part_longer_than_whole

IMPLEMENTATIONS = ("naive", "sdpa", "flash", "flash_pytorch", "flash_compiled", "cudnn", "sdpa_flash")
# SDPA held to one of its kernels: which one "sdpa" runs depends on the GPU and torch's version (each row says)
SDPA_ONLY = {"sdpa_flash": "FLASH_ATTENTION"}  # FlashAttention-2, SDPA's flash backend
# Not in the default sweep: bf16/fp16 only, where the default sweep times fp32 too.
ASKED_FOR_ONLY = ("cudnn", *SDPA_ONLY)
BASELINES = ("sdpa", *SDPA_ONLY, "cudnn")  # what the Triton kernel's throughput is compared with, when present
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CUDA_SEQ_LENS = [2**i for i in range(7, 17)]  # 128 .. 65536
CPU_SEQ_LENS = [64, 128]
CUDA_HEAD_DIMS = [16, 32, 64, 128]
CPU_HEAD_DIMS = [16, 32]
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 128  # the Triton kernels' range
STANDARD_CASE = dict(batch_size=16, num_heads=1, seq_len=16384, head_dim=64, dtype="bf16", causal=True,
                     implementation="flash_compiled", warmup_ms=1000, rep_ms=10000)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not true or false: {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m src.profiling.attention", description=__doc__.split("\n")[0])
    sweep = p.add_argument_group("sweep (each option takes several values; the sweep is their product)")
    sweep.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS,
                       help="default: all on CUDA; naive sdpa flash_pytorch on CPU, and flash under TRITON_INTERPRET=1")
    sweep.add_argument("--seq_lens", nargs="+", type=positive_int,
                       help=f"default: 128 .. 65536 by powers of 2 on CUDA, {' '.join(map(str, CPU_SEQ_LENS))} on CPU")
    sweep.add_argument("--head_dims", nargs="+", type=positive_int,
                       help=f"default: {' '.join(map(str, CUDA_HEAD_DIMS))} on CUDA, "
                            f"{' '.join(map(str, CPU_HEAD_DIMS))} on CPU")
    sweep.add_argument("--dtypes", nargs="+", choices=list(DTYPES), help="default: bf16 fp32 on CUDA, fp32 on CPU")
    sweep.add_argument("--causal", nargs="+", type=_bool, default=[True, False], help="default: true false")
    p.add_argument("--batch_size", type=positive_int, default=1)
    p.add_argument("--num_heads", type=positive_int, default=1)
    p.add_argument("--max_pytorch_seq_len", type=positive_int, default=8192,
                   help="flash_pytorch loops over tiles in Python: longer sequences are skipped rows")
    how = p.add_argument_group("measurement")
    how.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    how.add_argument("--warmup_ms", type=positive_float, default=25.0, help="do_bench warm-up per timing (ms)")
    how.add_argument("--rep_ms", type=positive_float, default=100.0, help="do_bench measuring time per timing (ms)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--output", help="append one record per configuration: CSV, or JSON lines for .jsonl")
    p.add_argument("--standard_case", action="store_true",
                   help="only the standard timing case: q, k, v (16, 16384, 64) bf16 causal, forward+backward of "
                        "torch.compile(FlashAttentionTriton.apply), do_bench(rep=10000, warmup=1000)")
    return p


def resolve(args: argparse.Namespace) -> tuple[str, list[dict]]:
    """(device, configurations) from parsed options, or UsageError naming the problem. Starts no work."""
    device = resolve_device(args.device)
    if args.output:
        try:
            check_writable(args.output, columns=RESULT_COLUMNS)
        except ValueError as error:
            raise UsageError(f"--output: {error}") from None
    if args.standard_case:
        if device != "cuda":
            raise UsageError("--standard_case times the Triton kernels and needs a CUDA device")
        return device, [dict(STANDARD_CASE)]
    cuda = device == "cuda"
    if cuda:
        default_impls = [i for i in IMPLEMENTATIONS if i not in ASKED_FOR_ONLY]
    else:
        default_impls = ["naive", "sdpa", "flash_pytorch"] + (["flash"] if interpreted() else [])
    implementations = args.implementations or default_impls
    for impl in implementations:
        if impl == "flash" and not cuda and not interpreted():
            raise UsageError("flash is the Triton kernel: it needs CUDA, or TRITON_INTERPRET=1 on CPU")
        if impl == "flash_compiled" and not cuda:
            raise UsageError("flash_compiled (torch.compile of the Triton kernels) needs a CUDA device")
        if impl == "cudnn" and not cuda:
            raise UsageError("cudnn is cuDNN's fused kernel (src/kernels/cudnn_attention.py) and needs a CUDA GPU")
        if impl in SDPA_ONLY and not cuda:
            raise UsageError(f"{impl} is SDPA held to its {SDPA_ONLY[impl]} kernel, a CUDA one; use sdpa on CPU")
    head_dims = args.head_dims or (CUDA_HEAD_DIMS if cuda else CPU_HEAD_DIMS)
    for impl in ("cudnn", *SDPA_ONLY):
        if impl in implementations and any(d > 128 or d % 8 for d in head_dims):
            raise UsageError(f"--head_dims: {impl} takes head dims <= 128 that are multiples of 8, got "
                             f"{' '.join(map(str, head_dims))}")
    if any(i.startswith("flash") for i in implementations):
        for d in head_dims:
            if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
                raise UsageError(f"--head_dims: the flash kernels take {MIN_HEAD_DIM} to {MAX_HEAD_DIM}, got {d}")
    dtypes = args.dtypes or (["bf16", "fp32"] if cuda else ["fp32"])
    if "fp16" in dtypes and not cuda:
        raise UsageError("--dtypes fp16 needs a CUDA device")
    for impl in ("cudnn", *SDPA_ONLY):
        if impl in implementations and "fp32" in dtypes:
            raise UsageError(f"--dtypes: {impl} runs bf16 or fp16 only; give --dtypes bf16 (or fp16)")
    seq_lens = args.seq_lens or (CUDA_SEQ_LENS if cuda else CPU_SEQ_LENS)
    configs = []
    for dtype, causal, d, t, impl in itertools.product(dtypes, args.causal, head_dims, seq_lens, implementations):
        configs.append(dict(implementation=impl, batch_size=args.batch_size, num_heads=args.num_heads, seq_len=t,
                            head_dim=d, dtype=dtype, causal=causal,
                            warmup_ms=args.warmup_ms, rep_ms=args.rep_ms))
    return device, configs


# --------------------------------------------------------------------------------------------------- measuring
def forward_flops(c: dict) -> float:
    """Q K^T and P V: 2 * 2 * T^2 * d per (batch, head); causal counts the visible half."""
    flops = 4.0 * c["batch_size"] * c["num_heads"] * c["seq_len"] ** 2 * c["head_dim"]
    return flops / 2 if c["causal"] else flops


def _attention_fn(impl: str):
    """The kernels' registry's function (what the model runs with --attention); flash_compiled compiles flash;
    sdpa_flash is SDPA held to one kernel."""
    if impl in SDPA_ONLY:
        return sdpa_only(SDPA_ONLY[impl])
    if impl != "flash_compiled":
        return get_attention(impl)
    torch._dynamo.reset()  # each configuration compiles on its own: no recompile limit, no shared guards
    return torch.compile(get_attention("flash"))


def _tiles(c: dict) -> str:
    """The tiles the Triton kernels ran with, for flash rows (a table lookup: the same eager and compiled)."""
    if c["implementation"] != "flash":
        return ""
    from src.kernels import flash_triton

    return flash_triton.chosen_tiles(DTYPES[c["dtype"]], c["seq_len"], c["head_dim"])


def _sdpa_kernel(c: dict, q, k, v) -> str:
    """Which SDPA kernel an sdpa row ran (asked of SDPA's own dispatch, under the row's restriction); "" else."""
    impl = c["implementation"]
    if impl == "sdpa" or impl in SDPA_ONLY:
        return sdpa_backend(q, k, v, c["causal"], only=SDPA_ONLY.get(impl))
    return ""


def measure(c: dict, device: str) -> dict:
    """Time one configuration: forward, backward, forward+backward, and the memory held before backward."""
    dtype = DTYPES[c["dtype"]]
    shape = (c["batch_size"], c["num_heads"], c["seq_len"], c["head_dim"])
    g = torch.Generator(device=device).manual_seed(c.get("seed", 0))
    q, k, v = (torch.randn(shape, generator=g, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    dout = torch.randn(shape, generator=g, device=device, dtype=dtype)
    attn = _attention_fn(c["implementation"])
    causal = c["causal"]
    warm, rep = c["warmup_ms"], c["rep_ms"]
    result = {}

    def forward():
        return attn(q, k, v, causal)

    def forward_backward():
        torch.autograd.grad(attn(q, k, v, causal), (q, k, v), dout)

    forward_backward()  # compile, autotune and allocate outside every timing
    if device == "cuda":
        torch.cuda.synchronize()
    before = torch.cuda.memory_allocated() if device == "cuda" else 0
    out = forward()
    if device == "cuda":
        torch.cuda.synchronize()
        result["memory_before_backward_mib"] = torch.cuda.memory_allocated() / 2**20
        result["saved_for_backward_mib"] = (torch.cuda.memory_allocated() - before) / 2**20
    result["forward_ms"], result["forward_ms_p20"], result["forward_ms_p80"] = bench_ms(forward, device, warm, rep)
    result["backward_ms"], result["backward_ms_p20"], result["backward_ms_p80"] = bench_ms(
        lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), device, warm, rep)
    del out
    result["forward_backward_ms"], result["forward_backward_ms_p20"], result["forward_backward_ms_p80"] = bench_ms(
        forward_backward, device, warm, rep)
    flops = forward_flops(c)
    result["forward_tflops"] = flops / result["forward_ms"] / 1e9
    result["backward_tflops"] = 2.5 * flops / result["backward_ms"] / 1e9
    result["forward_backward_tflops"] = 3.5 * flops / result["forward_backward_ms"] / 1e9
    result["tiles"] = _tiles(c)
    result["sdpa_kernel"] = _sdpa_kernel(c, q, k, v)
    # three separate timings: on a busy host the forward alone has read slower than forward+backward (issue 21)
    result["warnings"] = part_longer_than_whole(
        {p: result[f"{p}_ms"] / 1e3 for p in ("forward", "backward")}, "forward+backward",
        result["forward_backward_ms"] / 1e3)
    return result


def measure_standard_case(c: dict) -> dict:
    """The CS336 leaderboard's timing: o = flash(q, k, v, True); o.sum().backward(); gradients accumulate."""
    shape = (c["batch_size"], c["seq_len"], c["head_dim"])  # one head: (batch, seq, d)
    q, k, v = (torch.randn(shape, device="cuda", dtype=DTYPES[c["dtype"]], requires_grad=True) for _ in range(3))
    flash = torch.compile(get_attention("flash"))

    def flash_forward_backward():
        o = flash(q, k, v, True)
        o.sum().backward()

    median, p20, p80 = bench_ms(flash_forward_backward, "cuda", c["warmup_ms"], c["rep_ms"])
    tflops = 3.5 * forward_flops(c) / median / 1e9
    return {"forward_backward_ms": median, "forward_backward_ms_p20": p20, "forward_backward_ms_p80": p80,
            "forward_backward_tflops": tflops}


def run_one(c: dict, device: str) -> dict:
    """measure(), with a status: ok, oom (memory freed, sweep goes on), skipped, or error (message kept)."""
    if c["implementation"] == "flash_pytorch" and c["seq_len"] > c.get("max_pytorch_seq_len", float("inf")):
        return {"status": "skipped", "error": f"flash_pytorch is a Python loop over tiles; seq_len > "
                                              f"{c['max_pytorch_seq_len']} (--max_pytorch_seq_len)"}
    failure = None
    try:
        result = measure_standard_case(c) if c.get("standard_case") else measure(c, device)
        result["status"] = "ok"
    except torch.OutOfMemoryError:
        failure = {"status": "oom", "error": "out of memory"}
    except Exception as error:  # noqa: BLE001 - one broken configuration must not end a long sweep
        failure = {"status": "error", "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
    if failure is not None:  # outside the except block: the traceback no longer holds the tensors
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        return failure
    return result


# ---------------------------------------------------------------------------------------------------- reporting
COLUMNS = [("implementation", "impl"), ("sdpa_kernel", "SDPA kernel"), ("seq_len", "T"), ("head_dim", "d"),
           ("dtype", "dtype"), ("causal", "causal"),
           ("forward_ms", "fwd ms"), ("backward_ms", "bwd ms"), ("forward_backward_ms", "fwd+bwd ms"),
           ("forward_tflops", "fwd TFLOP/s"), ("backward_tflops", "bwd TFLOP/s"),
           ("forward_backward_tflops", "fwd+bwd TFLOP/s"), ("memory_before_backward_mib", "mem before bwd MiB"),
           ("status", "status")]


# An existing --output must be one of ours: its CSV header shares two of these, or its JSON lines have a status.
RESULT_COLUMNS = ("implementation", "seq_len", "head_dim", "dtype", "causal", "batch_size", "num_heads",
                  *(key for key, _ in COLUMNS))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def format_table(records: list[dict]) -> str:
    """One markdown row per record: configuration columns, then times, TFLOP/s, memory and status."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        values = [r["config"].get(key, r.get(key)) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(_cell(v) for v in values) + " |")
    return "\n".join(lines)


def format_comparison(records: list[dict], baseline: str = "sdpa", candidate: str = "flash") -> str:
    """candidate's forward+backward throughput as a multiple of baseline's, per configuration both ran."""
    def key(c):
        return (c["seq_len"], c["head_dim"], c["dtype"], c["causal"])

    times, kernels = {}, {}
    for r in records:
        if r.get("status") == "ok" and r["config"]["implementation"] in (baseline, candidate):
            times.setdefault(key(r["config"]), {})[r["config"]["implementation"]] = r["forward_backward_ms"]
            if r["config"]["implementation"] == baseline:
                kernels[key(r["config"])] = r.get("sdpa_kernel") or baseline
    rows = [(k, t) for k, t in times.items() if len(t) == 2]
    if not rows:
        return ""
    lines = [f"| T | d | dtype | causal | {baseline} kernel | {baseline} fwd+bwd ms | {candidate} fwd+bwd ms | "
             f"{candidate} / {baseline} throughput |", "|---|---|---|---|---|---|---|---|"]
    for k, ms in rows:
        t, d, dtype, causal = k
        lines.append(f"| {t} | {d} | {dtype} | {causal} | {kernels[k]} | {_cell(ms[baseline])} | "
                     f"{_cell(ms[candidate])} | {ms[baseline] / ms[candidate]:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parsed = parse_and_resolve(build_parser, resolve, argv, "attention")
    if parsed is None:
        return EXIT_USAGE
    args, (device, configs) = parsed
    env = collect_environment(device)
    records = []
    for index, c in enumerate(configs, 1):
        run = dict(c, seed=args.seed, max_pytorch_seq_len=args.max_pytorch_seq_len, standard_case=args.standard_case)
        result = run_one(run, device)
        record = {"config": dict(c, device=device, seed=args.seed), **result, "env": env}
        records.append(record)
        if args.output:
            try:
                append_record(args.output, record, columns=RESULT_COLUMNS)
            except (OSError, ValueError) as error:
                print(f"attention: could not write row {index} to {args.output}: {error}; the file is as it was "
                      "before that row", file=sys.stderr)
                print(format_table(records))
                return EXIT_OUTPUT
        summary = (f"{result['forward_backward_ms']:.3f} ms fwd+bwd" if result["status"] == "ok"
                   else f"{result['status']}: {result.get('error', '')}")
        print(f"[{index}/{len(configs)}] {c['implementation']} T={c['seq_len']} d={c['head_dim']} {c['dtype']} "
              f"causal={c['causal']}: {summary}", file=sys.stderr, flush=True)
        for warning in result.get("warnings", []):
            print(f"  warning: {warning}", file=sys.stderr)
    print(format_table(records))
    for baseline in BASELINES:
        comparison = format_comparison(records, baseline)
        if comparison:
            print("\n" + comparison)
    if args.standard_case and records[0]["status"] == "ok":
        r = records[0]
        print(f"\nstandard case: {r['forward_backward_ms']:.3f} ms forward+backward (median; 20-80%: "
              f"{r['forward_backward_ms_p20']:.3f}-{r['forward_backward_ms_p80']:.3f}), "
              f"{r['forward_backward_tflops']:.1f} TFLOP/s counting causal as half")
    return EXIT_FAILED if any(r["status"] == "error" for r in records) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
