"""Benchmark the training step of a Transformer LM: forward, backward and optimizer times per model and size.

    python -m src.profiling.benchmark --warmup_steps 5          # the original table: five sizes, fp32, ctx 128
    python -m src.profiling.benchmark --sizes 2.7B --precision bf16 --context_length 1024 --mode train
    python -m src.profiling.benchmark --model llama-3.2-1b path/to/config.json --mode train --precision bf16
    nsys profile -o result --force-overwrite true python -m src.profiling.benchmark   # annotated with NVTX

Every option that takes several values is a sweep axis; the sweep is their product. Each configuration runs in a
child process on CUDA (--isolate), so an out-of-memory error becomes a row and the sweep goes on. Rows are
appended to --output (CSV, or JSON lines for .jsonl) as each configuration finishes.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import itertools
import os
import signal
import sys
import types

from src.kernels import get_attention  # noqa: F401  (imported so a broken kernel package fails before any work)
from src.model.config import ATTENTION_IMPLEMENTATIONS, ORIGINAL_SIZES, PRESET_BATCH_SIZES, PRESETS, ModelConfig
from src.model.families.hf import shipped_configs
from src.harness.cli import (EXIT_INTERRUPTED, EXIT_OUTPUT, EXIT_USAGE, FINE_STATUSES, OneLineParser, UsageError,
                             non_negative_int, parse_and_resolve, positive_float, positive_int, resolve_device,
                             sweep_exit_status)
from src.harness.environment import gpu_supports_bf16, gpu_supports_fp8, visible_gpu_count
from src.harness.progress import PROGRESS_DELAY_S, PROGRESS_VARIABLE
from src.harness.results import append_record, check_writable
from src.spec import (COMPILE_MODES, COMPILE_SCOPES, FP8_RECIPES, BACKENDS, DIST_BACKENDS, MODES, OPTIMIZERS, PARALLEL, PRECISIONS, RECIPES,
                      TENSOR_PARALLEL, TIMERS, RunSpec)
from src.train.step import chosen_optimizer
from src.harness.sweep import run_sweep
from src.reports.anomalies import anomalies, forward_slower_than_backward
from src.reports.labels import config_label, varying_fields
from src.reports.table import COLUMN_VIEWS, format_table, progress_line

CPU_SIZES = ("tiny", "small")
FAST_ATTENTION = "sdpa"  # the recipe's attention: see docs/results/attention_h100_2026-11-24.md
CPU_BENCHMARK_STEPS = 5
EXIT_STATUSES = """exit status: 0 every configuration ran, or ran out of memory (an OOM row is a result); 1 at least
one configuration failed (error, crash, non-finite loss); 2 bad input, refused before any work; 3 a row could not
be written (disk full): the file is as it was before that row; 130 interrupted (finished rows kept)."""


class RowNotWritten(Exception):
    """The results file refused a row (a full disk, a file that changed under us): the sweep stops."""


DEFAULT_BATCH_SIZE = 4


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m src.profiling.benchmark", description=__doc__.split("\n")[0],
                      epilog=EXIT_STATUSES)
    size = p.add_argument_group("model size: presets, or one custom size from all four of --d_model --d_ff --num_layers --num_heads")
    size.add_argument("--sizes", nargs="+", choices=list(PRESETS), help=f"presets (default on CUDA: {' '.join(ORIGINAL_SIZES)})")
    size.add_argument("--d_model", type=positive_int)
    size.add_argument("--d_ff", type=positive_int)
    size.add_argument("--num_layers", type=positive_int)
    size.add_argument("--num_heads", type=positive_int)
    size.add_argument("--vocab_size", type=positive_int, help="default: the preset's (10000; 8B-leaderboard 151936) "
                                                              "or the config's")
    size.add_argument("--model", nargs="+", metavar="PRESET|CONFIG|PATH",
                      help="models to sweep beside --sizes: a preset, a Hugging Face config shipped under configs/ "
                           f"({', '.join(shipped_configs())}), or a path to a config.json (its directory will "
                           "do); --num_layers alone then replaces their layer count (presets' too)")
    size.add_argument("--num_kv_heads", type=positive_int,
                      help="our model (presets, custom): grouped-query attention with this many k/v heads")
    size.add_argument("--tie_embeddings", action="store_true", help="our model: the LM head reuses the embedding")
    run = p.add_argument_group("workload (several values sweep)")
    run.add_argument("--context_length", type=positive_int, nargs="+",
                     help="default: the preset's (128; 8B-leaderboard 32768)")
    run.add_argument("--batch_size", type=positive_int, nargs="+", help="default: the preset's (4; 8B-leaderboard 2)")
    run.add_argument("--warmup_steps", type=non_negative_int, nargs="+", default=[5])
    run.add_argument("--benchmark_steps", type=positive_int, nargs="+",
                     help=f"measured steps (default 10; {CPU_BENCHMARK_STEPS} on CPU)")
    run.add_argument("--mode", nargs="+", choices=MODES, default=["forward_backward"],
                     help="train adds AdamW's step, timed as a third phase")
    run.add_argument("--precision", nargs="+", choices=PRECISIONS,
                     help="bf16/fp16 via torch.autocast (default fp32); fp8: torchao's float8 linears (the head kept "
                          "in bf16), the rest under bf16 autocast, on GPUs with fp8 tensor cores")
    run.add_argument("--fp8_recipe", nargs="+", choices=FP8_RECIPES,
                     help="with --precision fp8: torchao's scaling (default tensorwise)")
    run.add_argument("--mixed_precision", action="store_true", help="the original's flag: same as --precision bf16")
    run.add_argument("--attention", nargs="+", choices=ATTENTION_IMPLEMENTATIONS,
                     help="naive (default) is the original model's softmax(QK^T)V")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the model with its loss; compile time is its own column")
    run.add_argument("--compile_scope", nargs="+", choices=COMPILE_SCOPES,
                     help="with --compile or --recipe fast: model (default: the model and its loss as one graph) or "
                          "blocks (each transformer block compiled on its own, as torchtitan does: compile time of "
                          "one block, whatever the depth)")
    run.add_argument("--compile_mode", nargs="+", choices=COMPILE_MODES,
                     help="with --compile or --recipe fast: torch.compile's mode (default; the fast recipe picks "
                          "reduce-overhead in fp8: each compiled graph replayed as a CUDA graph)")
    run.add_argument("--recipe", choices=RECIPES,
                     help="fast: bf16, fused attention, compile, fused AdamW, CUDA graphs when launch-bound")
    run.add_argument("--activation_checkpointing", nargs="+", default=["none"], metavar="none|blocks:N",
                     help="recompute groups of N consecutive blocks in backward, keeping only each group's input")
    run.add_argument("--optimizer", nargs="+", choices=OPTIMIZERS,
                     help="AdamW for --mode train: default (torch's foreach; the default without a recipe), fused "
                          "(fused=True), ours (bf16 weights with fp32 masters; CUDA, bf16), in_backward (each "
                          "parameter stepped from its gradient hook), overlap (each block stepped on a side CUDA "
                          "stream once its gradients are ready). Without it the fast recipe picks ours or fused; "
                          "given, it replaces the recipe's pick (ours, in_backward, overlap turn its CUDA graphs off)")
    run.add_argument("--backend", choices=BACKENDS, default="ours",
                     help="hf_llama: transformers' Llama of the same shape, for comparison (needs transformers); "
                          "torchtitan: torchtitan's Llama 3 model of the same shape (needs torchtitan)")
    run.add_argument("--seed", type=int, default=0)
    par = p.add_argument_group("several processes (torch.distributed; launched through torchrun, or under yours)")
    par.add_argument("--parallel", nargs="+", choices=PARALLEL, default=["none"],
                     help="ours: ddp_naive ddp_flat ddp_overlap ddp_bucketed zero1 fsdp; PyTorch's: torch_ddp "
                          "torch_zero1 fsdp2; tensor parallelism on DTensor: tp fsdp_tp (with --tp_size)")
    par.add_argument("--nproc_per_node", type=positive_int, help="ranks on this host (default 1; under torchrun its own)")
    par.add_argument("--tp_size", type=positive_int,
                     help="tp and fsdp_tp: ranks in a tensor-parallel group (tp default: all of them); the groups "
                          "are data-parallel replicas (tp) or FSDP2 shards (fsdp_tp)")
    par.add_argument("--bucket_mb", type=positive_float, nargs="+", default=[25.0],
                     help="ddp_bucketed's bucket size and torch_ddp's bucket_cap_mb, in MiB")
    par.add_argument("--dist_backend", choices=DIST_BACKENDS[1:], help="default: nccl on CUDA, gloo on CPU")
    par.add_argument("--collective_timeout_s", type=positive_float,
                     help="how long a rank waits for its peers, and may stay stopped, before the group fails "
                          "(default: estimated from the step, see the README)")
    how = p.add_argument_group("measurement")
    how.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    how.add_argument("--timer", choices=TIMERS, help="events: CUDA events (default on CUDA); sync: synchronise + wall clock")
    how.add_argument("--isolate", choices=("auto", "process", "none"), default="auto",
                     help="process: one child process per configuration (auto: on CUDA)")
    how.add_argument("--peak_tflops", type=positive_float, help="the device's peak for MFU, overriding our GPU table")
    how.add_argument("--output", help="append one row per configuration: CSV, or JSON lines if the name ends in .jsonl; "
                                      "/dev/null measures and prints but keeps nothing")
    how.add_argument("--columns", choices=COLUMN_VIEWS, default="default", help="the printed table: every column, "
                     "the original's first (default), or compact: a dozen that fit a terminal")
    how.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                     help="a bar of finished steps on stderr for configurations longer than "
                          f"{PROGRESS_DELAY_S:g} s (auto: when stderr is a terminal)")
    prof = p.add_argument_group("profiling")
    prof.add_argument("--nvtx", choices=("on", "off"), help="NVTX ranges for Nsight Systems (default on; CUDA only)")
    prof.add_argument("--profile_steps", type=positive_int,
                      help="only the first N measured steps inside cudaProfilerStart/Stop and the other profilers")
    prof.add_argument("--trace", metavar="DIR", help="torch.profiler trace per configuration into DIR, and a time breakdown")
    prof.add_argument("--memory_snapshot", metavar="PATH",
                      help="allocator history over the measured steps: PATH-<config>.pickle for pytorch.org/memory_viz, and a PNG")
    prof.add_argument("--explain_precision", action="store_true",
                      help="print the dtype of parameters, activations, logits, loss and gradients under --precision, and exit")
    return p


def resolve(args: argparse.Namespace) -> tuple[list[RunSpec], list[str]]:
    """Turn parsed options into the sweep, or raise UsageError naming the problem. Starts no work.

    RunSpec validates each configuration; what is checked here needs the command line as a whole or the live
    machine, asked without creating a CUDA context (the parent leaves the GPU to its children).
    """
    notes = []
    device = resolve_device(args.device)
    custom = [args.d_model, args.d_ff, args.num_layers, args.num_heads]
    layers_only = args.model and custom[:2] + custom[3:] == [None] * 3  # --num_layers replaces a config's
    if any(v is not None for v in custom) and not all(v is not None for v in custom) and not layers_only:
        raise UsageError("a custom size needs all four of --d_model --d_ff --num_layers --num_heads")
    if args.mixed_precision and args.precision and args.precision != ["bf16"]:
        raise UsageError(f"--mixed_precision is --precision bf16; it contradicts --precision {' '.join(args.precision)}")
    if args.explain_precision and args.output:
        raise UsageError("--explain_precision prints the dtypes and exits without measuring; --output would stay "
                         "empty (redirect stdout to keep the explanation)")
    sizes = list(args.sizes or [])
    hf_models = [m for m in args.model or [] if m not in PRESETS]
    chosen = sizes + list(args.model or [])  # --model's presets and configs, in the order given, after --sizes
    benchmark_steps = args.benchmark_steps
    if not chosen and custom[0] is None:
        if device == "cuda":
            sizes = list(ORIGINAL_SIZES)
        else:
            sizes = list(CPU_SIZES)
            benchmark_steps = benchmark_steps or [CPU_BENCHMARK_STEPS]
            notes.append(f"no CUDA device: running the CPU default (sizes {' '.join(CPU_SIZES)}, "
                         f"{benchmark_steps[0]} measured steps) so it ends in about two minutes; "
                         "pass --sizes and --benchmark_steps to choose")
    benchmark_steps = benchmark_steps or [10]
    ours = {"num_kv_heads": args.num_kv_heads or 0, "tie_embeddings": args.tie_embeddings}
    try:
        models = [(name, PRESETS[name].with_(**ours), "") for name in sizes]
        if custom[0] is not None and not layers_only:
            models.append(("custom", ModelConfig(d_model=args.d_model, d_ff=args.d_ff, num_layers=args.num_layers,
                                                 num_heads=args.num_heads, **ours), ""))
    except ValueError as error:
        raise UsageError(str(error)) from None
    if hf_models and (args.num_kv_heads or args.tie_embeddings):
        raise UsageError("--num_kv_heads and --tie_embeddings shape our model; a config.json says its own")
    try:
        layers = {"num_layers": args.num_layers} if layers_only and args.num_layers else {}  # --model 10B --num_layers 4: its first 4
        models += [(name, PRESETS[name].with_(**ours, **layers), "") if name in PRESETS else _hf_model(name, args)
                   for name in args.model or []]
    except ValueError as error:  # a preset's ModelConfig with --num_kv_heads that does not divide its heads
        raise UsageError(str(error)) from None
    precisions = args.precision or (["bf16"] if args.mixed_precision or args.recipe == "fast" else ["fp32"])
    attentions = args.attention or [FAST_ATTENTION if args.recipe == "fast" or args.backend != "ours" else "naive"]
    if hf_models and not args.attention:
        attentions = [FAST_ATTENTION]  # transformers' models run SDPA here
    if args.recipe == "fast" and device != "cuda":
        notes.append("--recipe fast on CPU: bf16 autocast, fused attention and torch.compile apply; fused AdamW, "
                     "bf16 weights and CUDA graphs are CUDA-only" + ("" if "train" in args.mode else
                                                                      "; no optimizer step unless --mode train"))
    if args.nvtx == "on" and device != "cuda":
        notes.append("--nvtx on: NVTX ranges are for Nsight Systems on CUDA; nothing is annotated on CPU")
    if (args.backend == "hf_llama" or hf_models) and importlib.util.find_spec("transformers") is None:
        raise UsageError("Hugging Face models (--model CONFIG, --backend hf_llama) need the transformers package")
    if args.backend == "torchtitan" and importlib.util.find_spec("torchtitan") is None:
        raise UsageError("--backend torchtitan needs the torchtitan package (0.2.2 is the release for torch 2.11)")
    if args.fp8_recipe and "fp8" not in precisions:
        raise UsageError("--fp8_recipe applies to --precision fp8")
    if "fp8" in precisions and device == "cuda" and gpu_supports_fp8() is False:
        raise UsageError("--precision fp8: this GPU (compute capability below 8.9) has no fp8 tensor cores")
    if "bf16" in precisions and device == "cuda" and gpu_supports_bf16() is False:
        raise UsageError("--precision bf16: this GPU (compute capability below 8.0) does not support bfloat16")
    timer = args.timer or ("events" if device == "cuda" else "sync")
    isolate = args.isolate if args.isolate != "auto" else ("process" if device == "cuda" else "none")
    nproc, dist_backend = _resolve_processes(args, device)
    specs = []
    # Warm-up outermost and sizes innermost: the original table's row order (row 5 = small at warmup 0).
    # A preset's own vocab, context and batch (8B-leaderboard: 151936, 32768, 2) apply where the option is not
    # given: None below stands for "the preset's default", so every size keeps its own.
    # the bucket size is an axis only for the strategies that bucket
    parallel = [(s, b) for s in args.parallel for b in (args.bucket_mb if s in BUCKETING else args.bucket_mb[:1])]
    precision_recipes = [(p, r) for p in precisions for r in ((args.fp8_recipe or [""]) if p == "fp8" else [""])]
    for warmup, steps, mode, (precision, fp8_recipe), attention, optimizer, scope, compile_mode, checkpointing, \
            batch, context, (strategy, bucket_mb), (name, model, source) in itertools.product(
                args.warmup_steps, benchmark_steps, args.mode, precision_recipes, attentions,
                                               args.optimizer or [""], args.compile_scope or [""],
                                               args.compile_mode or [""],
                                               args.activation_checkpointing,
                                               args.batch_size or [None], args.context_length or [None], parallel,
                                               models):
        try:
            spec = RunSpec(
                size=name, d_model=model.d_model, d_ff=model.d_ff, num_heads=model.num_heads,
                num_layers=model.num_layers, vocab_size=args.vocab_size or model.vocab_size, model=source,
                num_kv_heads=model.num_kv_heads, tie_embeddings=model.tie_embeddings and not source,
                context_length=context or model.context_length,
                batch_size=batch or PRESET_BATCH_SIZES.get(name, DEFAULT_BATCH_SIZE),
                warmup_steps=warmup, benchmark_steps=steps, mode=mode, precision=precision, fp8_recipe=fp8_recipe,
                attention=attention,
                compile=args.compile, recipe=args.recipe or "", backend=args.backend, timer=timer, device=device,
                seed=args.seed, isolate=isolate, nvtx=args.nvtx != "off" and device == "cuda",
                peak_tflops=args.peak_tflops, profile_steps=args.profile_steps or 0, trace=args.trace or "",
                memory_snapshot=args.memory_snapshot or "", parallel=strategy,
                nproc_per_node=nproc if strategy != "none" else 1, bucket_mb=bucket_mb, dist_backend=dist_backend,
                tp_size=(args.tp_size or 0) if strategy in TENSOR_PARALLEL else 0,
                collective_timeout_s=args.collective_timeout_s or 0.0,
                activation_checkpointing=checkpointing, optimizer=optimizer, compile_scope=scope,
                compile_mode=compile_mode,
            )
        except ValueError as error:  # RunSpec's message starts with the field's name, which is the option's
            raise UsageError(f"--{error}") from None
        if not optimizer:  # record the AdamW the step will use, not "the recipe's choice"
            spec = dataclasses.replace(spec, optimizer=chosen_optimizer(spec, spec.model_spec().parameter_count().total))
        specs.append(spec)
    outputs = ((args.output, "--output", {}), (args.trace, "--trace", {"directory": True}),
               (args.memory_snapshot and args.memory_snapshot + "-probe.pickle", "--memory_snapshot", {}))
    for path, flag, kind in outputs:
        if path:
            try:
                check_writable(path, **kind)
            except ValueError as error:
                raise UsageError(f"{flag}: {error}") from None
    return specs, notes


BUCKETING = ("ddp_bucketed", "torch_ddp", "torch_zero1")
DEFAULT_HF_CONTEXT = 128  # a config's max_position_embeddings (131072 for Llama 3) is no default to benchmark at


def _hf_model(source: str, args: argparse.Namespace):
    """(name, the shape fields a RunSpec shows, source) of a Hugging Face config; UsageError if it is bad."""
    from src.model.catalog import resolve_model

    try:
        spec = resolve_model(source, vocab_size=args.vocab_size, num_layers=args.num_layers)
    except ValueError as error:
        raise UsageError(f"--model: {error}") from None
    a = spec.architecture
    shape = types.SimpleNamespace(d_model=a.d_model, d_ff=a.d_ff or a.expert_d_ff, num_layers=a.num_layers,
                                  num_heads=a.num_heads, vocab_size=a.vocab_size, num_kv_heads=a.num_kv_heads,
                                  context_length=min(DEFAULT_HF_CONTEXT, a.max_positions), tie_embeddings=False)
    return spec.name, shape, source


def _resolve_processes(args: argparse.Namespace, device: str) -> tuple[int, str]:
    """(ranks per host, backend) for the strategies; under torchrun its own count. Raises UsageError."""
    from src.harness.launch import under_torchrun

    if under_torchrun():
        return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])), args.dist_backend or ""
    nproc = args.nproc_per_node or 1
    # RunSpec refuses nccl without CUDA itself; this one is the command line's: the count would go to no row
    if nproc > 1 and args.parallel == ["none"]:
        raise UsageError(f"--nproc_per_node {nproc} needs --parallel (a strategy); none runs one process")
    # a count of GPUs on a host with none: `--nproc_per_node 8 --sizes xl` on a 2-core, 25 GB CPU host started xl
    # (~33 GB of training state a rank) in place of a refusal; ranks on the CPU are asked for by --device cpu
    if nproc > 1 and args.device == "auto" and device == "cpu":
        raise UsageError(f"--nproc_per_node {nproc}: no CUDA GPU found; pass --device cpu for {nproc} gloo ranks on "
                         "the CPU")
    gpus = visible_gpu_count() if device == "cuda" else None  # nvidia-smi: the parent leaves CUDA to its children
    if gpus is not None and nproc > gpus:
        raise UsageError(f"--nproc_per_node {nproc} is more than the {gpus} GPU(s) present")
    return nproc, args.dist_backend or ""


def _join_users_torchrun(specs: list[RunSpec]) -> bool:
    """Under a user's torchrun, every rank joins the group once and runs the sweep in-process; only rank 0 writes
    rows and prints. Returns whether this process writes."""
    from src.harness.launch import under_torchrun

    if not under_torchrun() or not specs:
        return True
    from src.harness.dist_worker import collective_timeout_s
    from src.harness.launch import init_distributed

    rank, _, local_rank = init_distributed(specs[0].distributed_backend, max(map(collective_timeout_s, specs)))
    if specs[0].device == "cuda":  # also under gloo: each rank's tensors on its own GPU
        import torch

        torch.cuda.set_device(local_rank)
    return rank == 0


@contextlib.contextmanager
def interrupts_deferred():
    """Hold a SIGINT that arrives inside the block and raise KeyboardInterrupt once the block is done."""
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def print_anomalies(records: list[dict]) -> None:
    """Rows that look wrong (src/reports/anomalies.py), on stderr at the end of the sweep; each is also added to its
    record's warnings (the forward/backward one is already in the results file, written as the row finished)."""
    found = anomalies(records)
    if not found:
        return
    fields = ["size"] + varying_fields(records)
    print(f"\n{len(found)} row(s) look wrong; measure again, and look at a trace:", file=sys.stderr)
    for record, warning in found:
        if warning not in record["warnings"]:
            record["warnings"].append(warning)
        print(f"  warning: {config_label(record, fields)}: {warning}", file=sys.stderr)


def main(argv=None) -> int:
    parsed = parse_and_resolve(build_parser, resolve, argv, "benchmark")
    if parsed is None:
        return EXIT_USAGE
    args, (specs, notes) = parsed
    if args.progress != "auto":  # read by the runner here and, through the environment, in the sweep's children
        os.environ[PROGRESS_VARIABLE] = args.progress
    if args.explain_precision:
        from src.instruments.precision import explain_precision

        for spec in specs[:1]:
            print(explain_precision(spec))
        return 0
    writer = _join_users_torchrun(specs)  # False on ranks other than 0 under a user's torchrun
    for note in notes if writer else ():
        print(note, file=sys.stderr)
    records = []

    def on_record(index: int, record: dict) -> None:
        if not writer:
            return
        slow_forward = forward_slower_than_backward(record)
        if slow_forward:  # in the row itself; the across-sizes check needs the whole sweep (print_anomalies)
            record["warnings"].append(slow_forward)
        with interrupts_deferred():  # Ctrl-C between the two would print a table that disagrees with the file
            records.append(record)
            if args.output:
                try:
                    append_record(args.output, record)
                except (OSError, ValueError) as error:
                    raise RowNotWritten(str(error)) from error
        print(progress_line(index, len(specs), record), file=sys.stderr, flush=True)
        for warning in record.get("warnings", []):
            print(f"  warning: {warning}", file=sys.stderr)

    try:
        run_sweep(specs, on_record)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(records)} of {len(specs)} configurations finished"
              + (f"; their rows are in {args.output}" if args.output and records else ""), file=sys.stderr)
        if records:
            print(format_table(records, args.columns))
        return EXIT_INTERRUPTED
    except RowNotWritten as error:  # stop: the next row would fail too, and its measurement would be lost
        print(f"\nbenchmark: could not write row {len(records)} of {len(specs)} to {args.output}: {error}\n"
              f"{args.output} is as it was before that row (the {len(records) - 1} earlier rows of this run are in "
              f"it, whole); the table of all {len(records)} measured rows follows", file=sys.stderr)
        print(format_table(records, args.columns))
        return EXIT_OUTPUT
    if not writer:  # a rank other than 0 under a user's torchrun: rank 0 reports
        return 0
    print(format_table(records, args.columns))
    print_anomalies(records)
    if records and records[0].get("peak_note"):
        print(f"\nMFU: {records[0]['peak_note']}", file=sys.stderr)
    status = sweep_exit_status(records)
    if status:
        failed = sum(r.get("status") not in FINE_STATUSES for r in records)
        print(f"{failed} of {len(records)} configurations failed (exit status {status})", file=sys.stderr)
    return status

if __name__ == "__main__":
    sys.exit(main())
