"""Run one configuration in this process: build the model, warm up, time each phase of each measured step -> a record.

Nothing but the phase is inside its timer: token batches are made before the first step, gradients are reset
and losses collected outside the timed regions, and the loss is checked for non-finite values once at the end
(a per-step .item() would synchronise the device inside the measurement).
"""

import contextlib
import gc
import os
import sys
import timeit

import torch

from src import nvtx
from src.model import count_parameters
from src.model.flops import ADAMW_BYTES_PER_PARAMETER, estimate_memory, step_flops
from src.harness.hardware import device_peak
from src.harness.ranks import gather_ranks, group_step_time, strategy_estimates, world_size
from src.harness.record import (PHASES, STEP, Record, measured_step_times, new_record, phase_field, phase_times,
                                stat_field, with_fields)
from src.spec import RunSpec
from src.harness.timing import make_timer, summarize
from src.train.step import TrainStep, build_model

SPREAD_WARNING = 0.10  # std/mean above this: the mean is not a number to trust
FAULT_VARIABLE = "LMBENCH_INJECT_FAULT"  # tests: "oom|crash|nan:KEY=VALUE" makes matching configurations fail
FAULT_RANK_VARIABLE = "LMBENCH_INJECT_FAULT_RANK"  # tests: only this rank (torchrun's RANK) fails


def _inject_fault(spec: RunSpec, model) -> None:
    """Fail on purpose where the tests ask to: how the sweep's OOM and crash handling is exercised without a GPU."""
    fault = os.environ.get(FAULT_VARIABLE, "")
    if not fault or os.environ.get(FAULT_RANK_VARIABLE, os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
        return
    kind, _, condition = fault.partition(":")
    key, _, value = condition.partition("=")
    if str(spec.to_dict().get(key)) != value:
        return
    if kind == "oom":
        raise torch.OutOfMemoryError(f"injected out-of-memory ({fault})")
    if kind == "crash":
        sys.stderr.write(f"injected crash ({fault})\n")
        sys.stderr.flush()
        os.abort()
    if kind == "nan":
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))


def _run_steps(step, batches, first: int, count: int, timer, label: str, on_step=None) -> list:
    losses = []
    for i in range(first, first + count):
        with nvtx.range(f"{label} step {i - first}"):
            losses.append(step(batches[0][i], batches[1][i], timer))
        timer.next_step()
        if on_step is not None:
            on_step(i - first)
    return losses


def _graph_count() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # private counters may move between torch versions; recompilation reporting is best-effort
        return 0


def _measure(spec: RunSpec, instruments) -> dict:
    """The measured fields of one configuration: per-phase step times, warm-up, compile time, status, warnings."""
    torch.manual_seed(spec.seed)
    model = build_model(spec)
    _inject_fault(spec, model)
    steps = spec.warmup_steps + spec.benchmark_steps + (1 if spec.compiled else 0)
    B, T = spec.batch_size, spec.context_length
    tokens = torch.randint(0, spec.vocab_size, (steps, B, T + 1), device=spec.device)
    batches = (tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous())  # (steps, B, T) inputs, targets
    step = TrainStep(spec, model)
    measured = {"status": "ok", "warnings": []}
    first = 0
    losses = []
    if spec.compiled:
        start = timeit.default_timer()
        with nvtx.range("compile"):
            losses += _run_steps(step, batches, 0, 1, make_timer("sync", spec.device), "compile")
        measured["compile_time_s"] = timeit.default_timer() - start
        first = 1
    graphs_before_warmup = _graph_count()

    with nvtx.range("warmup"):
        warmup_timer = make_timer(spec.timer, spec.device)
        losses += _run_steps(step, batches, first, spec.warmup_steps, warmup_timer, "warmup")
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
        losses += _run_steps(step, batches, first + spec.warmup_steps, spec.benchmark_steps, timer, "measure", on_step)
    step_times = timer.results()
    for name in PHASES:
        measured[phase_field(name)] = [s[name] for s in step_times if name in s]
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


def run_spec(spec: RunSpec, instruments=()) -> Record:
    """Measure one configuration; never raises for OOM or a failing model: the record's status says what happened."""
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        with nvtx.range(f"config {spec.label}"):
            measured = _measure(spec, instruments)
    except torch.OutOfMemoryError as error:
        measured = {"status": "OOM", "error": _one_line(error)}
    except Exception as error:  # one broken configuration must not end the sweep
        measured = {"status": f"error: {_one_line(error)}"}
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
    times = phase_times(record)
    step_times = list(measured_step_times(record)) if times[PHASES[0]] else []
    for name, values in (*times.items(), (STEP, step_times)):
        for stat, value in summarize(values).items():
            figures[stat_field(stat, name)] = value
        mean, std = figures[stat_field("mean", name)], figures[stat_field("std", name)]
        if mean and std / mean > SPREAD_WARNING:
            warnings.append(f"{name}: std/mean = {std / mean:.0%} over {len(values)} steps; the mean is noisy")
    config = spec.model_config()
    parameters = count_parameters(config)
    flops = step_flops(config, spec.batch_size, spec.context_length, spec.mode)
    estimate = estimate_memory(config, spec.batch_size, spec.context_length, spec.mode, spec.precision)
    peak = device_peak(gpu_name, spec.precision, spec.peak_tflops)
    median = group_step_time(record) or figures[stat_field("median", STEP)]  # with several ranks: the slowest's
    tflops = flops / median / 1e12 if median else None  # per GPU: flops are one rank's
    sol_time = None
    if peak.tflops:
        sol_time = flops / (peak.tflops * 1e12)
        if spec.mode == "train":
            sol_time = sol_time + parameters * ADAMW_BYTES_PER_PARAMETER / (peak.bandwidth_tb_s * 1e12) if peak.bandwidth_tb_s else None
    peak_bytes = record.get("peak_memory_bytes")
    figures.update(
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
        estimated_memory_bytes=estimate.total,
        estimated_memory=estimate.__dict__,
        warnings=warnings,
    )
    if spec.parallel != "none":  # the strategy's memory per rank and bytes per step replace the one-GPU estimate
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
    if spec.backend == "hf_llama":  # the comparison is only as good as knowing which transformers it was
        import transformers

        env["transformers_version"] = transformers.__version__
    return with_fields(record, {"env": env})
