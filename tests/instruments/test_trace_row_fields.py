"""--trace's figures per profiled step in the row: a tiny CPU run written to CSV and read back, and a made-up CUDA
trace whose per-step figures are known exactly."""

import pytest

from src.harness.record import FIELDS, fields_problem
from src.harness.results import append_record, read_records
from src.harness.runner import run_spec_with_environment
from src.instruments.op_categories import CATEGORIES, ELEMENTWISE, MATMUL, OPTIMIZER
from src.instruments.trace_summary import KEPT, summarise_trace

from tests.specs import tiny_spec

TRACE_FIELDS = ("trace_device", "trace_steps", "trace_step_ms", "trace_ms_per_step", "trace_phase_ms_per_step",
                "trace_idle_ms_per_step", "trace_kernels_per_step", "trace_top_kernels")


def test_a_traced_cpu_run_writes_the_trace_fields_and_they_survive_a_csv(tmp_path):
    spec = tiny_spec(d_model=32, d_ff=64, num_heads=2, vocab_size=100, context_length=16, batch_size=2,
                     benchmark_steps=2, trace=str(tmp_path / "traces"))
    written = run_spec_with_environment(spec)
    append_record(str(tmp_path / "rows.csv"), written)
    (row,), _ = read_records(str(tmp_path / "rows.csv"))
    assert set(TRACE_FIELDS) <= set(FIELDS) and fields_problem(row) == ""
    assert {name: row[name] for name in TRACE_FIELDS} == {name: written[name] for name in TRACE_FIELDS}  # JSON: exact
    summary = row["trace_summary"]
    assert row["trace_device"] == "cpu" and row["trace_steps"] == summary["steps"] == 2
    assert list(row["trace_ms_per_step"]) == list(CATEGORIES)
    # ms per step = the summary's seconds over the profiled steps; categories and idle add up to the step
    assert row["trace_ms_per_step"] == pytest.approx({k: v * 1e3 / 2 for k, v in summary["by_category"].items()})
    assert row["trace_step_ms"] == pytest.approx(sum(row["time_forward"] + row["time_backward"]
                                                     + row["time_optimizer"]) * 1e3 / 2)
    assert sum(row["trace_ms_per_step"].values()) + row["trace_idle_ms_per_step"] == pytest.approx(row["trace_step_ms"])
    for phase, by in row["trace_phase_ms_per_step"].items():
        assert sum(by.values()) == pytest.approx(summary["by_phase"][phase] * 1e3 / 2), phase
    assert row["trace_phase_ms_per_step"]["optimizer"].keys() == {OPTIMIZER}
    top = row["trace_top_kernels"]
    assert len(top) == KEPT and [k["name"] for k in top] == [t[0] for t in summary["top"]]
    assert row["trace_kernels_per_step"] >= sum(k["calls_per_step"] for k in top) > 0


def _x(name, cat, ts, dur, tid=1, pid=100, **args):
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args}


def test_per_step_fields_of_a_made_up_two_step_cuda_trace():
    events = []
    for step, start in enumerate((0, 1000)):  # per step: one matmul of 300 us and two adds of 50 us each
        events += [_x(f"measured step {step}", "user_annotation", start, 1000),
                   _x("aten::mm", "cpu_op", start + 10, 20),
                   _x("cudaLaunchKernel", "cuda_runtime", start + 12, 2, correlation=10 * step + 1),
                   _x("sm90_xmma_gemm_bf16bf16", "kernel", start + 20, 300, tid=7, pid=0, correlation=10 * step + 1)]
        for i in (2, 3):
            events += [_x("aten::add", "cpu_op", start + 40 * i, 20),
                       _x("cudaLaunchKernel", "cuda_runtime", start + 40 * i + 2, 2, correlation=10 * step + i),
                       _x("vectorized_elementwise_kernel<add>", "kernel", start + 400 + 60 * i, 50, tid=7, pid=0,
                          correlation=10 * step + i)]
    fields = summarise_trace({"traceEvents": events}, "cuda", {"forward": 2e-3}, steps=2).per_step_fields()
    assert fields["trace_step_ms"] == pytest.approx(1.0)
    assert fields["trace_ms_per_step"] == pytest.approx({**dict.fromkeys(CATEGORIES, 0.0), MATMUL: 0.3,
                                                         ELEMENTWISE: 0.1})
    assert fields["trace_phase_ms_per_step"].keys() == {"forward"}
    assert fields["trace_phase_ms_per_step"]["forward"] == pytest.approx({MATMUL: 0.3, ELEMENTWISE: 0.1})
    assert fields["trace_idle_ms_per_step"] == pytest.approx(0.6)
    assert fields["trace_kernels_per_step"] == 3
    top = fields["trace_top_kernels"]
    assert [(k["name"], k["category"], k["calls_per_step"]) for k in top] == [
        ("sm90_xmma_gemm_bf16bf16", MATMUL, 1), ("vectorized_elementwise_kernel<add>", ELEMENTWISE, 2)]
    assert [k["ms_per_step"] for k in top] == pytest.approx([0.3, 0.1])
