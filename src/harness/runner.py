"""Run one configuration in this process: build the model, warm up, time each phase of each measured step -> a record.

Nothing but the phase is inside its timer: token batches are made before the first step, gradients are reset
and losses collected outside the timed regions, and the loss is checked for non-finite values once at the end
(a per-step .item() would synchronise the device inside the measurement).
"""

import contextlib
import gc
import os
import re
import sys
import timeit

import torch

from src import nvtx
from src.model.flops import ADAMW_BYTES_PER_PARAMETER
from src.harness.hardware import device_peak
from src.harness.progress import StepProgress
from src.harness.ranks import (data_parallel_rank, estimated_memory, gather_ranks, group_step_time, strategy_estimates,
                               world_size)
from src.harness.record import (PHASES, STEP, Record, counted_phase_times, counted_step_times, new_record, phase_field,
                                phase_times, stat_field, with_fields)
from src.spec import RunSpec
from src.harness.timing import make_timer, summarize
from src.train.step import TrainStep, build_model

SPREAD_WARNING = 0.10  # std/mean above this: the mean is not a number to trust
# A configuration whose memory estimate exceeds the device's memory (the host's on CPU) by more than this factor is
# not run: it becomes an OOM row that says so. The estimate is an upper bound but a close one (2.7B, context 128:
# 59.2 GB estimated, 55.4 GB measured), so a factor of 2 leaves only sizes that cannot fit (context 10^7 on CPU:
# about 12.8 PB) and lets every borderline one be tried.
MEMORY_MARGIN = 2.0
# Out-of-memory on the CPU is a RuntimeError from the allocator, not torch.OutOfMemoryError.
CPU_OOM = re.compile(r"DefaultCPUAllocator|can't allocate memory|not enough memory")
# tests: "oom|error|crash|nan:KEY=VALUE" makes matching configurations fail; several faults joined by ";" (one sweep
# then meets each, with a child process's start, 2.5 s on a 2-core CPU, paid once for all)
FAULT_VARIABLE = "LMBENCH_INJECT_FAULT"
FAULT_RANK_VARIABLE = "LMBENCH_INJECT_FAULT_RANK"  # tests: only this rank (torchrun's RANK) fails


def _inject_fault(spec: RunSpec, model) -> None:
    """Fail on purpose where the tests ask to: how the sweep's OOM and crash handling is exercised without a GPU."""
    if os.environ.get(FAULT_RANK_VARIABLE, os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
        return
    for fault in filter(None, os.environ.get(FAULT_VARIABLE, "").split(";")):
        kind, _, condition = fault.partition(":")
        key, _, value = condition.partition("=")
        if str(spec.to_dict().get(key)) == value:
            break
    else:
        return
    if kind == "oom":
        raise torch.OutOfMemoryError(f"injected out-of-memory ({fault})")
    if kind == "error":
        raise RuntimeError(f"injected error ({fault})")
    if kind == "crash":
        sys.stderr.write(f"injected crash ({fault})\n")
        sys.stderr.flush()
        os.abort()
    if kind == "nan":
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))


COMPILED_GRAPHS = ("aot_autograd", "total")  # the graphs torch.compile compiled (see _graph_count)


def _run_steps(step, batches, first: int, count: int, timer, label: str, progress, on_step=None) -> list:
    losses = []
    for i in range(first, first + count):
        with nvtx.range(f"{label} step {i - first}"):
            losses.append(step(batches[0][i], batches[1][i], timer))
        timer.next_step()
        if on_step is not None:
            on_step(i - first)
        progress.update()  # after the step's timer has stopped: the bar costs nothing inside the measurement
    return losses


def _graph_count(counter: tuple[str, str] = ("stats", "unique_graphs")) -> int:
    """One of torch._dynamo's counters: the graphs Dynamo captured, or ("aot_autograd", "total") the graphs
    AOTAutograd compiled (DDPOptimizer compiles each of its splits at DDP's bucket boundaries as one)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters[counter[0]][counter[1]])
    except Exception:  # private counters may move between torch versions; recompilation reporting is best-effort
        return 0


def _measure(spec: RunSpec, instruments) -> dict:
    """The measured fields of one configuration: per-phase step times, warm-up, compile time, status, warnings."""
    torch.manual_seed(spec.seed)
    model = build_model(spec)
    _inject_fault(spec, model)
    steps = spec.warmup_steps + spec.benchmark_steps + spec.compile_steps
    B, T = spec.batch_size, spec.context_length
    # every data-parallel rank its own batches (a tensor-parallel group shares them); one rank draws what it did alone
    index, replicas = data_parallel_rank(spec)
    tokens = torch.randint(0, spec.vocab_size, (replicas, steps, B, T + 1), device=spec.device)[index]
    batches = (tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous())  # (steps, B, T) inputs, targets
    step = TrainStep(spec, model)
    progress = StepProgress(steps, spec.label)
    measured = {"status": "ok", "warnings": []}
    if spec.precision == "fp8":  # which matmuls ran in fp8, for the row and the MFU against the fp8 peak
        from src.train.fp8 import fp8_matmul_flops

        measured["fp8_linears"] = step.fp8_linears
        measured["fp8_flops_per_step"] = fp8_matmul_flops(model, B * T, "forward" if spec.mode == "forward" else "train")
    first = 0
    losses = []
    if spec.compiled:
        compiled_before = _graph_count(COMPILED_GRAPHS)
        start = timeit.default_timer()
        with nvtx.range("compile"):
            losses += _run_steps(step, batches, 0, spec.compile_steps, make_timer("sync", spec.device), "compile",
                                 progress)
        measured["compile_time_s"] = timeit.default_timer() - start
        measured["compiled_graphs"] = _graph_count(COMPILED_GRAPHS) - compiled_before
        first = spec.compile_steps
    graphs_before_warmup = _graph_count() if spec.compiled else 0  # torch._dynamo: imported only where it runs

    with nvtx.range("warmup"):
        warmup_timer = make_timer(spec.timer, spec.device)
        losses += _run_steps(step, batches, first, spec.warmup_steps, warmup_timer, "warmup", progress)
    measured["warmup_time_step"] = [sum(s.values()) for s in warmup_timer.results()]

    timer = make_timer(spec.timer, spec.device)
    with nvtx.range("measure"), contextlib.ExitStack() as stack:
        for instrument in instruments:
            stack.enter_context(instrument)

        def on_step(i):
            for instrument in instruments:
                instrument.step()
            if i + 1 == spec.profiled_steps and spec.device == "cuda":
                torch.cuda.profiler.stop()

        if spec.device == "cuda":
            torch.cuda.profiler.start()  # cudaProfilerStart: nsys --capture-range=cudaProfilerApi records from here
        losses += _run_steps(step, batches, first + spec.warmup_steps, spec.benchmark_steps, timer, "measure",
                             progress, on_step)
    progress.close()
    step_times = timer.results()
    for name in PHASES:
        measured[phase_field(name)] = [s[name] for s in step_times if name in s]
    measured["statistics_from_step"] = spec.statistics_from_step
    if spec.compiled:
        recompiles = _graph_count() - graphs_before_warmup
        measured["recompilations"] = recompiles
        if recompiles:
            measured["warnings"].append(f"torch.compile recompiled {recompiles} time(s) after the first step")
    if not bool(torch.stack([loss.float() for loss in losses]).isfinite().all()):
        measured["status"] = "non-finite loss"
    return measured


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def device_memory_bytes(device: str) -> int | None:
    """Total memory of the device a run uses: the GPU's (this initialises CUDA: call it in the process that
    measures, never in the sweep's parent), or the host's MemTotal for CPU runs; None where unknown."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[1]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _beyond_memory(spec: RunSpec) -> str:
    """Why the configuration is not run (its estimate, the row's, is over MEMORY_MARGIN x the device's memory), or
    ""."""
    estimate = estimated_memory(spec, world_size())["estimated_memory_bytes"]
    total = device_memory_bytes(spec.device)
    if total is None or estimate <= MEMORY_MARGIN * total:
        return ""
    where = "device" if spec.device == "cuda" else "host"
    return f"estimate {estimate / 1e9:,.1f} GB > {MEMORY_MARGIN:g} x {where} {total / 1e9:,.1f} GB: not run"


def run_spec(spec: RunSpec, instruments=()) -> Record:
    """Measure one configuration; never raises for OOM or a failing model: the record's status says what happened."""
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    too_large = _beyond_memory(spec)
    try:
        if too_large:
            raise torch.OutOfMemoryError(too_large)
        with nvtx.range(f"config {spec.label}"):
            measured = _measure(spec, instruments)
    except (torch.OutOfMemoryError, MemoryError) as error:
        measured = {"status": "OOM", "error": _one_line(error), "warnings": [too_large] if too_large else []}
    except Exception as error:  # one broken configuration must not end the sweep
        out_of_memory = isinstance(error, RuntimeError) and CPU_OOM.search(str(error))
        measured = {"status": "OOM", "error": _one_line(error)} if out_of_memory else {
            "status": f"error: {_one_line(error)}"}
    if spec.device == "cuda":
        measured["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    gc.collect()
    if spec.device == "cuda":
        torch.cuda.empty_cache()
    record = with_fields(new_record(spec), {**measured, "world_size": world_size()})
    # Every rank's times to rank 0: tokens/s and MFU come from the slowest rank. A rank that failed gathers
    # nothing: its peers are inside other collectives, and its exit is what ends them (see dist_worker.py).
    if record["world_size"] > 1 and record["status"] == "ok":
        record = with_fields(record, gather_ranks(record))
    return with_fields(record, derive_figures(spec, record, torch.cuda.get_device_name() if spec.device == "cuda" else ""))


def derive_figures(spec: RunSpec, record: Record, gpu_name: str) -> dict:
    """Statistics per phase and per step, then tokens/s, TFLOP/s, MFU, speed of light and the memory estimate:
    the fields (and warnings) they add to `record`.

    `gpu_name` picks the peak for MFU; the caller asks for it (the parent process asks nvidia-smi, not CUDA).
    """
    figures, warnings = {}, []
    times = counted_phase_times(record)  # past the profiled steps, where enough steps remain
    step_times = list(counted_step_times(record)) if times[PHASES[0]] else []
    for name, values in (*times.items(), (STEP, step_times)):
        for stat, value in summarize(values).items():
            figures[stat_field(stat, name)] = value
        mean, std = figures[stat_field("mean", name)], figures[stat_field("std", name)]
        if mean and std / mean > SPREAD_WARNING:
            warnings.append(f"{name}: std/mean = {std / mean:.0%} over {len(values)} steps; the mean is noisy")
    model = spec.model_spec()
    parameters = model.parameter_count().total
    try:
        flops = model.step_flops(spec.batch_size, spec.context_length, spec.mode)
    except Exception as error:  # counted on fake tensors, an unknown architecture can fail (data-dependent routing)
        flops = None
        warnings.append(f"FLOPs not counted ({model.flops_method}): {_one_line(error)}; TFLOP/s and MFU left empty")
    peak = device_peak(gpu_name, spec.precision, spec.peak_tflops)
    median = group_step_time(record) or figures[stat_field("median", STEP)]  # with several ranks: the slowest's
    tflops = flops / median / 1e12 if median and flops else None  # per GPU: flops are one rank's
    sol_time = None
    if peak.tflops and flops:
        sol_time = flops / (peak.tflops * 1e12)
        if spec.mode == "train":
            sol_time = sol_time + parameters * ADAMW_BYTES_PER_PARAMETER / (peak.bandwidth_tb_s * 1e12) if peak.bandwidth_tb_s else None
    peak_bytes = record.get("peak_memory_bytes")
    if spec.precision == "fp8" and record.get("fp8_flops_per_step") is not None and flops:
        # MFU above is against the fp8 peak; the bf16-equivalent figure puts the row on the bf16 rows' scale
        bf16 = device_peak(gpu_name, "bf16", None).tflops
        figures["fp8_flops_fraction"] = record["fp8_flops_per_step"] / flops
        figures["mfu_bf16_equivalent"] = tflops / bf16 if tflops and bf16 else None
    figures.update(
        **model.row_fields(),
        parameters=parameters,
        flops_per_step=flops,
        tokens_per_second=record.get("world_size", 1) * spec.batch_size * spec.context_length / median if median else None,
        tokens_per_second_per_gpu=spec.batch_size * spec.context_length / median if median else None,
        tflops=tflops,
        device_peak_tflops=peak.tflops,
        peak_note=peak.note,
        mfu=tflops / peak.tflops if tflops and peak.tflops else None,
        sol_time=sol_time,
        speed_of_light_pct=100 * sol_time / median if sol_time and median else None,
        peak_memory_bytes=peak_bytes,
        peak_memory_gb=peak_bytes / 1e9 if peak_bytes is not None else None,
        **estimated_memory(spec, record.get("world_size") or 1),
        warnings=warnings,
    )
    if spec.parallel != "none":  # the strategy's bytes per step
        figures.update(strategy_estimates(spec, record))
    return figures


def run_spec_with_environment(spec: RunSpec) -> Record:
    """run_spec with NVTX and the requested instruments set up, and the environment it ran in recorded."""
    from src.harness.environment import collect_environment
    from src.harness.instrumentation import build_instruments

    nvtx.configure(harness=spec.nvtx, model=spec.nvtx and not spec.compiled)
    instruments = build_instruments(spec)
    record = run_spec(spec, instruments)
    for instrument in instruments:
        record = with_fields(record, instrument.report(record["status"], phase_times(record),
                                                       record.get("peak_memory_bytes")))
    env = collect_environment(spec.device)
    if spec.model_spec().family == "hf":  # the comparison is only as good as knowing which transformers it was
        import transformers

        env["transformers_version"] = transformers.__version__
    return with_fields(record, {"env": env})
