"""The opt-in profiling tools: --trace and its time table, --explain_precision, --memory_snapshot.

On CPU: one traced run of the tiny model end to end through the CLI, the category rules, a made-up CUDA trace
(kernels, launches, a backward thread) for the GPU attribution path, the precision report under bf16 autocast,
and the memory tools' pure parts on a made-up snapshot. On CUDA only: the snapshot written, the OOM dump and a
kernel-time table (skipped here).
"""

import gzip
import json
import os
import pickle

import pytest
import torch

from src.model.config import PRESETS
from src.profiling.benchmark import EXIT_USAGE, main
from src.harness.instrumentation import build_instruments
from src.instruments.memory import memory_report, plot_timeline
from src.instruments.memory_timeline import build_timeline
from src.instruments.op_categories import (ATTENTION, COPIES, ELEMENTWISE, FP8_SCALING, MATMUL, NORMALISATION, OPTIMIZER, SOFTMAX,
                                         kernel_category, op_category)
from src.instruments.precision import explain_precision, observe_precision
from src.harness.runner import run_spec_with_environment
from src.spec import RunSpec
from src.instruments.torch_trace import TorchTrace
from src.instruments.trace_summary import KEPT, _host_tree, load_trace, summarise_trace

from tests.conftest import needs_cuda
from tests.specs import tiny_spec

STEPS = 3


def tiny(**overrides) -> RunSpec:
    return tiny_spec(**{"benchmark_steps": STEPS, **overrides})


# ---- --trace on CPU, end to end -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """One CLI run: tiny, train, 3 measured steps under --trace -> (trace directory, the record from --output).

    Batch 8: ops of ~30 ms a step on a fast 2-core CPU, against ~3 ms of Python between them (module calls,
    AdamW's per-parameter loop), so the ops' total can be held to 10% of the measured time.
    """
    out = tmp_path_factory.mktemp("traced")
    rows = out / "rows.jsonl"
    # Two threads, as on CI: with 16 (the GPU machine's CPU) the ops shrink 4x but Python's ~6 ms a step does
    # not, and the ops' share of the measured time fell to 85% there.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        code = main(["--sizes", "tiny", "--device", "cpu", "--mode", "train", "--benchmark_steps", str(STEPS),
                     "--warmup_steps", "1", "--batch_size", "8", "--trace", str(out / "traces"), "--output", str(rows)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out / "traces", json.loads(rows.read_text().splitlines()[0])


def test_trace_is_a_chrome_trace_with_steps_modules_and_optimizer(traced):
    directory, record = traced
    traces = list(directory.glob("*.json.gz"))
    assert len(traces) == 1 and traces[0].name.startswith("tiny_ctx-128_bs-8_train_fp32")
    with gzip.open(traces[0], "rt") as f:
        names = {e.get("name") for e in json.load(f)["traceEvents"]}
    assert {f"measured step {i}" for i in range(STEPS)} <= names
    assert {"module: RMSNorm", "module: Linear", "Optimizer.step#AdamW.step"} <= names
    assert record["trace_summary"]["trace"] == str(traces[0])


def test_time_table_is_saved_beside_the_trace_and_names_every_category_and_idle(traced):
    directory, _ = traced
    (table,) = directory.glob("*.md")
    text = table.read_text()
    for row in (MATMUL, ATTENTION, SOFTMAX, NORMALISATION, ELEMENTWISE, OPTIMIZER, COPIES, "other", "idle",
                "total = measured", "| backward |", "top op"):
        assert row in text


def test_categories_add_up_to_the_measured_step_time_within_10_percent(traced):
    _, record = traced
    summary = record["trace_summary"]
    measured = record["mean_time_step"] * STEPS
    busy = sum(summary["by_category"].values())
    assert summary["measured_s"] == pytest.approx(measured, rel=1e-9)
    assert abs(busy - measured) <= 0.10 * measured, (busy, measured)
    assert busy + summary["idle_s"] == pytest.approx(measured)
    assert summary["span_s"] == pytest.approx(measured, rel=0.10)


def test_phases_match_the_harness_phases_and_ops_land_in_their_categories(traced):
    _, record = traced
    summary = record["trace_summary"]
    for phase in ("forward", "backward"):
        measured = sum(record[f"time_{phase}"])
        assert summary["by_phase"][phase] == pytest.approx(measured, rel=0.2), phase
    # AdamW on CPU loops over parameters in Python: a quarter of its time can be outside ops
    assert 0 < summary["by_phase"]["optimizer"] <= 1.1 * sum(record["time_optimizer"])
    by_category = summary["by_category"]
    assert by_category[OPTIMIZER] == pytest.approx(summary["by_phase"]["optimizer"])
    for category in (MATMUL, ATTENTION, SOFTMAX, NORMALISATION, ELEMENTWISE, COPIES):
        assert by_category[category] > 0, category
    assert len(summary["top"]) == KEPT


def test_every_op_of_the_model_lands_in_its_category_in_both_directions(traced):
    _, record = traced
    nodes, _, _, _ = _host_tree([e for e in load_trace(record["trace_summary"]["trace"])["traceEvents"]
                           if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation")])
    seen = {}
    for node in nodes:
        if node.is_op:
            seen.setdefault((node.name, node.phase), set()).add(node.category)
    assert seen[("aten::mm", "forward")] == seen[("aten::mm", "backward")] == {MATMUL}
    assert seen[("aten::_softmax", "forward")] == seen[("aten::_softmax_backward_data", "backward")] == {SOFTMAX}
    assert seen[("aten::rsqrt", "forward")] == {NORMALISATION}  # RMSNorm's ops, by its module range
    assert seen[("autograd::engine::evaluate_function: RsqrtBackward0", "backward")] == {NORMALISATION}
    assert seen[("aten::masked_fill_", "forward")] == {ATTENTION}  # the causal mask
    assert seen[("aten::silu", "forward")] == {ELEMENTWISE}
    assert {category for (name, phase), categories in seen.items() if phase == "optimizer"
            for category in categories} == {OPTIMIZER}


def small_and_quick(**overrides) -> RunSpec:
    return tiny(d_model=32, d_ff=64, num_heads=2, vocab_size=100, context_length=16, batch_size=2, **overrides)


def test_profile_steps_limits_the_trace_to_the_first_steps(tmp_path):
    record = run_spec_with_environment(small_and_quick(trace=str(tmp_path), profile_steps=1))
    summary = record["trace_summary"]
    assert summary["steps"] == 1 and len(record["time_forward"]) == STEPS
    assert summary["measured_s"] == pytest.approx(record["time_forward"][0] + record["time_backward"][0]
                                                  + record["time_optimizer"][0])
    with gzip.open(summary["trace"], "rt") as f:
        steps = {e["name"] for e in json.load(f)["traceEvents"] if e.get("name", "").startswith("measured step")}
    assert steps == {"measured step 0"}


def test_a_failure_inside_the_measured_steps_still_writes_the_trace(tmp_path, capsys):
    instrument = TorchTrace(small_and_quick(trace=str(tmp_path)))
    with pytest.raises(RuntimeError):
        with instrument:
            torch.ones(8).sum()
            raise RuntimeError("a step failed")
    assert instrument.exported and os.path.exists(instrument.trace_path)
    assert "trace_summary" in instrument.report("error: RuntimeError: a step failed", {"forward": []}, None)
    assert "the trace holds the steps before it" in capsys.readouterr().err


def test_instruments_are_built_only_when_asked_for():
    assert build_instruments(tiny()) == []
    assert [type(i).__name__ for i in build_instruments(tiny(trace="somewhere"))] == ["TorchTrace"]


# ---- categories and the CUDA attribution path, on made-up names and traces -------------------------------------

@pytest.mark.parametrize("name, category", [
    ("aten::mm", MATMUL), ("aten::_softmax", SOFTMAX), ("aten::_to_copy", COPIES), ("aten::silu", ELEMENTWISE),
    ("autograd::engine::evaluate_function: MmBackward0", MATMUL), ("SoftmaxBackward0", SOFTMAX),
    ("aten::view", None), ("aten::embedding_dense_backward", "other"),
])
def test_op_categories(name, category):
    assert op_category(name) == category


@pytest.mark.parametrize("name, category", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", MATMUL),
    ("nvjet_tst_128x64_64x6_1x2_h_bz_TNN", MATMUL),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float>", SOFTMAX),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", NORMALISATION),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", ATTENTION),
    ("Memcpy HtoD (Pageable -> Device)", COPIES), ("triton_poi_fused_mul_silu_1", ELEMENTWISE),
    ("void at::native::multi_tensor_apply_kernel<...FusedAdamMathFunctor...>", OPTIMIZER),
    # torchao float8 under inductor (the 2.7B fp8 traces, H200): scaling fused with a norm or a matmul's prologue
    ("triton_red_fused__fused_rms_norm__fused_rms_norm_backward__to_copy_abs_add_clamp_clone_max_mul_reciprocal_t_vi",
     FP8_SCALING),
    ("triton_red_fused__scaled_mm__to_copy_abs_amax_clamp_clone_exp2_floor_log2_mul_reciprocal_silu_silu_backward_t_",
     FP8_SCALING),
    ("triton_red_fused_abs_max_t_11", FP8_SCALING),
    ("triton_poi_fused__to_copy_clamp_exp2_floor_log2_mul_reciprocal_t_16", FP8_SCALING),
    ("nvjet_sm90_qrtst_128x160_128x5_2x1_v_bz_coopA_algo2_TNT", MATMUL),  # the fp8 matmul itself
    ("triton_red_fused__fused_rms_norm__fused_rms_norm_backward__to_copy__unsafe_view_add_view_2", NORMALISATION),
])
def test_kernel_categories(name, category):
    assert kernel_category(name) == category


def _x(name, cat, ts, dur, tid=1, pid=100, **args):
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args}


def test_kernels_take_phase_and_category_from_the_op_that_launched_them():
    launch = lambda ts, corr, tid=1: _x("cudaLaunchKernel", "cuda_runtime", ts, 2, tid=tid, correlation=corr)
    kernel = lambda name, ts, dur, corr: _x(name, "kernel", ts, dur, tid=7, pid=0, correlation=corr)
    events = [
        _x("measured step 0", "user_annotation", 0, 1000),
        _x("module: TransformerLM", "user_annotation", 10, 200),
        _x("module: RMSNorm", "user_annotation", 20, 50),
        _x("aten::pow", "cpu_op", 25, 10, **{"Sequence number": 5, "Fwd thread id": 0}), launch(30, 101),
        _x("aten::rsqrt", "cpu_op", 60, 4, **{"External id": 77}),
        # a launch the clocks put after its op (and its module) ended: found through its External id
        _x("cudaLaunchKernel", "cuda_runtime", 75, 2, correlation=106, **{"External id": 77}),
        _x("module: Linear", "user_annotation", 100, 50),
        _x("aten::linear", "cpu_op", 105, 40, **{"Sequence number": 6, "Fwd thread id": 0}),
        _x("aten::mm", "cpu_op", 110, 20, **{"Sequence number": 7, "Fwd thread id": 0}), launch(115, 102),
        # backward on autograd's own thread: PowBackward0 is RMSNorm's, by its sequence number
        _x("autograd::engine::evaluate_function: PowBackward0", "cpu_op", 400, 50, tid=2,
           **{"Sequence number": 5, "Fwd thread id": 1}),
        _x("aten::mul", "cpu_op", 410, 10, tid=2), launch(412, 103, tid=2),
        _x("Optimizer.step#AdamW.step", "user_annotation", 700, 100),
        _x("aten::_fused_adamw_", "cpu_op", 710, 50), launch(720, 104),
        kernel("void at::native::vectorized_elementwise_kernel<pow>", 40, 5, 101),
        kernel("sm90_xmma_gemm_bf16bf16", 120, 100, 102),
        kernel("void at::native::vectorized_elementwise_kernel<rsqrt>", 90, 5, 106),
        kernel("void at::native::elementwise_kernel<mul>", 420, 20, 103),
        kernel("void at::native::multi_tensor_apply_kernel<FusedAdam>", 730, 30, 104),
        kernel("triton_poi_fused_add_0", 800, 10, 999),  # no launch recorded: sorted by its own name
    ]
    measured = {"forward": 600e-6, "backward": 200e-6, "optimizer": 200e-6}
    s = summarise_trace({"traceEvents": events}, "cuda", measured, steps=1)
    us = lambda d: {k: round(v * 1e6, 6) for k, v in d.items() if v}
    assert us(s.by_category) == {NORMALISATION: 30, MATMUL: 100, OPTIMIZER: 30, ELEMENTWISE: 10}
    assert us(s.by_phase) == {"forward": 120, "backward": 20, "optimizer": 30}
    assert s.busy_s == pytest.approx(170e-6) and s.idle_s == pytest.approx(830e-6)
    assert s.span_s == pytest.approx(1000e-6)
    assert s.top[0][:3] == ["sm90_xmma_gemm_bf16bf16", MATMUL, 1]
    assert "GPU waiting for the host" in s.markdown("t")


def test_an_fp8_scaling_kernel_fused_with_a_norm_counts_as_fp8_scaling_through_its_launcher_too():
    # inductor records a host op named as its Triton kernel; the norm rule would claim both by "rms_norm"
    name = "triton_red_fused__fused_rms_norm__to_copy_abs_amax_clamp_mul_reciprocal_0"
    events = [_x("measured step 0", "user_annotation", 0, 100),
              _x(name, "cpu_op", 10, 5), _x("cudaLaunchKernel", "cuda_runtime", 12, 2, correlation=201),
              _x(name, "kernel", 20, 30, tid=7, pid=0, correlation=201)]
    s = summarise_trace({"traceEvents": events}, "cuda", {"forward": 100e-6}, steps=1)
    assert {k: round(v * 1e6, 6) for k, v in s.by_category.items() if v} == {FP8_SCALING: 30}


def test_kernels_replayed_from_a_cuda_graph_are_named_in_a_warning():
    # A graph launch under the optimizer's range replays forward, backward and optimizer kernels alike: its op is
    # not theirs, so they are sorted by name and counted in forward, and the summary says so.
    events = [
        _x("measured step 0", "user_annotation", 0, 1000),
        _x("Optimizer.step#AdamW.step", "user_annotation", 10, 100),
        _x("cudaGraphLaunch", "cuda_runtime", 20, 5, correlation=201),
        _x("sm90_xmma_gemm_bf16bf16", "kernel", 30, 100, tid=7, pid=0, correlation=201),
        _x("void at::native::multi_tensor_apply_kernel<FusedAdam>", "kernel", 140, 30, tid=7, pid=0, correlation=201),
    ]
    s = summarise_trace({"traceEvents": events}, "cuda", {"forward": 1e-3}, steps=1)
    assert s.graph_replayed_s == pytest.approx(130e-6)
    assert s.by_category[MATMUL] == pytest.approx(100e-6) and s.by_category[OPTIMIZER] == pytest.approx(30e-6)
    assert s.by_phase["forward"] == pytest.approx(130e-6)  # not the optimizer's, though launched inside its range
    assert any("0.1 ms of kernel time was replayed from CUDA graphs" in note for note in s.warnings())
    assert s.to_dict()["graph_replayed_s"] == pytest.approx(130e-6)


# ---- --explain_precision ----------------------------------------------------------------------------------------

def test_bf16_autocast_runs_matmuls_low_and_norms_loss_and_master_weights_in_fp32():
    report = observe_precision(tiny(precision="bf16"))
    dtype = report.dtype_of
    for linear in ("layers.0.attn.q_proj", "layers.1.attn.output_proj", "layers.0.ffn.w2", "lm_head", "logits"):
        assert dtype(linear) == "bfloat16", linear
    for fp32 in ("parameters", "layers.0.ln1", "layers.1.ln2", "ln_final", "token_embeddings", "loss",
                 "parameter gradients", "optimizer state (exp_avg, exp_avg_sq)"):
        assert dtype(fp32) == "float32", fp32
    assert dtype("gradient of the logits") == "bfloat16"
    assert ("float", "bfloat16", "float32") in report.ops  # the harness's loss upcasts the logits itself
    assert [out for (name, _, out) in report.ops if name == "cross_entropy"] == ["float32"]
    assert ("linear", "float32", "bfloat16") in report.ops  # fp32 weights and input in, bf16 out: autocast's cast


def test_explain_precision_is_a_markdown_table_and_fp32_stays_fp32():
    text = explain_precision(tiny(precision="fp32", mode="forward_backward"))
    assert "| tensor | made by | dtype |" in text and "bfloat16" not in text
    assert "| layers.*.attn.q_proj | Linear | float32 |" in text


def test_a_large_model_is_explained_on_two_layers_of_its_shape():
    c = PRESETS["small"]
    report = observe_precision(RunSpec(size="small", d_model=c.d_model, d_ff=c.d_ff, num_heads=c.num_heads,
                                       num_layers=c.num_layers, precision="bf16", mode="forward"))
    assert report.layers == 2 and any("2 layers instead of 12" in note for note in report.notes)
    assert report.dtype_of("loss") == "float32"


# ---- --memory_snapshot --------------------------------------------------------------------------------------------

def test_memory_snapshot_is_refused_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["--sizes", "tiny", "--device", "cpu", "--memory_snapshot", str(tmp_path / "mem")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "--memory_snapshot" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def _alloc(action, size, t, addr=0, frames=()):
    return {"action": action, "size": size, "time_us": t, "addr": addr, "stream": 0, "frames": list(frames)}


SNAPSHOT_TRACE = [  # start at t=1000 us with 100 bytes already allocated; a step: forward, backward, optimizer
    _alloc("alloc", 50, 1010, frames=[{"filename": "/x/torch/nn/functional.py", "line": 1, "name": "linear"},
                                       {"filename": "/repo/src/model/transformer.py", "line": 28, "name": "forward"}]),
    _alloc("alloc", 400, 1030),  # in backward: no Python frame
    _alloc("free_requested", 400, 1040),
    _alloc("free_completed", 400, 1041),
    _alloc("free_completed", 50, 1045),
    _alloc("alloc", 30, 1060),
    _alloc("free_completed", 30, 1070),
]
BOUNDARIES = [(1005, "forward"), (1020, "backward"), (1050, "optimizer"), (1065, "zero_grad"),
              (1080, "between steps")]


def test_memory_timeline_replays_allocs_and_frees_into_peaks_per_phase():
    t = build_timeline(SNAPSHOT_TRACE, 1000, 100, 100, BOUNDARIES, max_entries=100)
    assert t.allocated == [150, 550, 150, 100, 130, 100]
    assert t.peak_by_phase == {"forward": 150, "backward": 550, "optimizer": 130, "zero_grad": 100}
    assert t.peak == 550 and not t.truncated and t.oom is None
    assert t.largest[0].size == 400 and t.largest[0].phase == "backward"
    assert t.largest[1].site == "transformer.py:28 forward"  # the innermost frame in this repository


def test_memory_timeline_anchors_at_the_end_when_the_ring_buffer_overflowed():
    t = build_timeline(SNAPSHOT_TRACE[1:] + [{"action": "oom", "size": 10**12, "device_free": 5, "time_us": 1090}],
                       1000, 0, 100, BOUNDARIES, max_entries=len(SNAPSHOT_TRACE))
    assert t.truncated and t.allocated[-1] == 100 and t.start == 150  # the lost first event's 50 bytes included
    assert t.oom == {"size": 10**12, "device_free": 5}


def test_memory_plot_and_report_on_a_made_up_snapshot(tmp_path):
    t = build_timeline(SNAPSHOT_TRACE, 1000, 100, 100, BOUNDARIES, max_entries=100)
    plot_timeline(t, str(tmp_path / "m.png"), "title")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = memory_report(tiny(), t, 600, "m.pickle", "m.png")
    for row in ("| backward |", "| parameters |", "| optimizer state |", "| activations |",
                "transformer.py:28 forward", "pytorch.org/memory_viz"):
        assert row in text


@needs_cuda
def test_memory_snapshot_writes_the_pickle_and_the_plot_on_cuda(tmp_path):
    prefix, rows = tmp_path / "mem", tmp_path / "rows.jsonl"
    code = main(["--sizes", "tiny", "--device", "cuda", "--mode", "train", "--benchmark_steps", "2",
                 "--warmup_steps", "1", "--isolate", "none", "--memory_snapshot", str(prefix), "--output", str(rows)])
    assert code == 0
    (snapshot,) = tmp_path.glob("mem-tiny_*.pickle")
    (png,) = tmp_path.glob("mem-tiny_*.png")
    with open(snapshot, "rb") as f:
        data = pickle.load(f)
    actions = {e["action"] for trace in data["device_traces"] for e in trace}
    assert {"alloc", "free_completed"} <= actions and png.stat().st_size > 0
    record = json.loads(rows.read_text().splitlines()[0])
    summary = record["memory_summary"]
    assert {"forward", "backward", "optimizer"} <= set(summary["peak_by_phase_bytes"])
    assert 0 < summary["peak_bytes"] <= 1.01 * record["peak_memory_bytes"]


@needs_cuda
def test_an_oom_inside_the_measured_steps_dumps_the_snapshot_up_to_it(tmp_path):
    from src.instruments.memory import MemorySnapshot

    instrument = MemorySnapshot(tiny(device="cuda", memory_snapshot=str(tmp_path / "oom")))
    with pytest.raises(torch.OutOfMemoryError):
        with instrument:
            kept = torch.ones(1 << 20, device="cuda")
            torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # a petabyte
    del kept
    assert os.path.exists(instrument.pickle_path) and os.path.exists(instrument.png_path)
    assert instrument.timeline.oom is not None
    assert instrument.report("OOM", {}, None)["memory_summary"]["oom"] is not None


@needs_cuda
def test_kernel_time_table_on_cuda(tmp_path):
    record = run_spec_with_environment(tiny(device="cuda", timer="events", trace=str(tmp_path)))
    summary = record["trace_summary"]
    busy, measured = sum(summary["by_category"].values()), summary["measured_s"]
    assert 0 < busy <= 1.10 * measured and summary["by_category"][MATMUL] > 0
    assert summary["by_phase"]["backward"] > 0 and summary["by_phase"]["optimizer"] > 0



@pytest.mark.skipif(torch.cuda.is_available(), reason="the noise is a CUDA build of torch on a machine without a GPU")
def test_a_cpu_trace_prints_no_profiler_error_noise(tmp_path):
    """Kineto logs "ERROR: ... gpuGetDeviceCount failed with code 35" on export when torch is a CUDA build and no
    driver is present (this machine and CI); users read it as our failure. (A CPU-only build never prints it.)"""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-m", "src.profiling.benchmark", "--device", "cpu", "--sizes", "tiny",
                          "--warmup_steps", "0", "--benchmark_steps", "1", "--context_length", "8",
                          "--trace", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and list(tmp_path.glob("*.json.gz"))
    assert "gpuGetDeviceCount" not in run.stderr and "ERROR:" not in run.stderr


@pytest.mark.parametrize("optimizer", ["in_backward", "overlap"])
def test_explain_precision_takes_the_optimizers_that_step_inside_backward(optimizer):
    # they are no torch.optim.Optimizer (no step pre-hook): the report says where their ops went instead of crashing
    report = observe_precision(tiny(precision="bf16", mode="train", optimizer=optimizer))
    assert any(f"optimizer {optimizer} steps inside backward" in note for note in report.notes)
    assert ("linear", "float32", "bfloat16") in report.ops
