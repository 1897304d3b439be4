"""--trace's figures per profiled step in the row: a tiny CPU run written to CSV and read back, and a made-up CUDA
trace whose per-step figures are known exactly."""

import pytest

from src.harness.record import FIELDS, fields_problem
from src.harness.results import append_record, read_records
from src.harness.runner import run_spec_with_environment
from src.instruments.op_categories import CATEGORIES, ELEMENTWISE, MATMUL, OPTIMIZER
from src.instruments.trace_summary import KEPT, NO_OP, summarise_trace

from tests.specs import tiny_spec

TRACE_FIELDS = ("trace_device", "trace_steps", "trace_step_ms", "trace_ms_per_step", "trace_phase_ms_per_step",
                "trace_idle_ms_per_step", "trace_kernels_per_step", "trace_top_kernels", "trace_host_waits")


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


def test_host_waits_name_each_call_that_waits_for_the_device_and_the_op_that_made_it():
    events = []
    for step, start in enumerate((0, 1000)):  # per step: .item() syncs twice, one copy to the host, the harness's wait
        c = 10 * step
        events += [_x(f"measured step {step}", "user_annotation", start, 1000)]
        for i in (1, 2):
            events += [_x("aten::item", "cpu_op", start + 100 * i, 40),
                       _x("cudaStreamSynchronize", "cuda_runtime", start + 100 * i + 5, 30, correlation=c + i)]
        events += [_x("aten::copy_", "cpu_op", start + 400, 40),
                   _x("cudaMemcpyAsync", "cuda_runtime", start + 405, 20, correlation=c + 3),
                   _x("Memcpy DtoH (Device -> Pageable)", "gpu_memcpy", start + 410, 5, tid=7, pid=0, correlation=c + 3),
                   _x("aten::copy_", "cpu_op", start + 500, 40),  # a copy to the device: the host does not wait
                   _x("cudaMemcpyAsync", "cuda_runtime", start + 505, 20, correlation=c + 4),
                   _x("Memcpy HtoD (Pageable -> Device)", "gpu_memcpy", start + 510, 5, tid=7, pid=0, correlation=c + 4),
                   _x("aten::add", "cpu_op", start + 600, 20),  # a launch does not wait
                   _x("cudaLaunchKernel", "cuda_runtime", start + 602, 2, correlation=c + 5),
                   _x("vectorized_elementwise_kernel<add>", "kernel", start + 610, 50, tid=7, pid=0, correlation=c + 5),
                   _x("cudaEventSynchronize", "cuda_runtime", start + 900, 70, correlation=c + 6)]  # outside any op
    summary = summarise_trace({"traceEvents": events}, "cuda", {"forward": 2e-3}, steps=2)
    waits = summary.per_step_fields()["trace_host_waits"]
    assert [(w["call"], w["op"], w["calls_per_step"]) for w in waits] == [
        ("cudaEventSynchronize", NO_OP, 1), ("cudaStreamSynchronize", "aten::item", 2),
        ("cudaMemcpyAsync", "aten::copy_", 1)]
    assert [w["ms_per_step"] for w in waits] == pytest.approx([0.07, 0.06, 0.02])
    assert "| `cudaStreamSynchronize` | `aten::item` | 4 | 0.12 |" in summary.markdown("step")
    cpu = summarise_trace({"traceEvents": events}, "cpu", {"forward": 2e-3}, steps=2)
    assert cpu.per_step_fields()["trace_host_waits"] == [] and "host wait" not in cpu.markdown("step")
