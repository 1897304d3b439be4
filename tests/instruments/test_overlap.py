"""Measured overlap: interval arithmetic with known answers, trace classification, and HTA's own number on one trace."""

import json
import random

import pytest

from src.instruments.overlap import (Overlap, classify, intersect, markdown, merge, overlap_from_trace, overlap_of,
                                     subtract, summarise_ranks, total)


@pytest.mark.parametrize("compute, comm, expected", [
    # (compute, communication, overlapped, exposed communication)
    ([(0, 10)], [(20, 30)], (10, 10, 0, 10)),                                  # disjoint: nothing hidden
    ([(0, 10)], [(2, 5)], (10, 3, 3, 0)),                                      # comm nested in compute: all hidden
    ([(2, 5)], [(0, 10)], (3, 10, 3, 7)),                                      # compute nested in comm
    ([(0, 10)], [(5, 15)], (10, 10, 5, 5)),                                    # partial overlap at the end
    ([(5, 15)], [(0, 10)], (10, 10, 5, 5)),                                    # ... and at the start
    ([(0, 4), (2, 6), (10, 12)], [(3, 11)], (8, 8, 4, 4)),                     # compute merges to (0,6),(10,12)
    ([(0, 10)], [(0, 10), (0, 10), (2, 3)], (10, 10, 10, 0)),                  # repeated comm counted once
    ([(0, 5)], [(5, 10)], (5, 5, 0, 5)),                                       # touching is not overlapping
    ([], [(0, 10)], (0, 10, 0, 10)),                                           # no compute at all
    ([(0, 10)], [], (10, 0, 0, 0)),                                            # no communication at all
])
def test_known_answers(compute, comm, expected):
    o = overlap_of(compute, comm)
    assert (o.compute_time_s, o.comm_time_s, o.overlap_time_s, o.exposed_comm_time_s) == expected


def test_many_small_intervals_against_a_grid():
    """1000 random integer intervals each: the answer counted one unit cell at a time."""
    rng = random.Random(0)
    compute = [(s, s + rng.randint(1, 30)) for s in (rng.randint(0, 5000) for _ in range(1000))]
    comm = [(s, s + rng.randint(1, 30)) for s in (rng.randint(0, 5000) for _ in range(1000))]
    busy_compute = {t for a, b in compute for t in range(a, b)}
    busy_comm = {t for a, b in comm for t in range(a, b)}
    o = overlap_of(compute, comm)
    assert o.compute_time_s == len(busy_compute)
    assert o.comm_time_s == len(busy_comm)
    assert o.overlap_time_s == len(busy_compute & busy_comm)
    assert o.exposed_comm_time_s == len(busy_comm - busy_compute)


def test_merge_intersect_subtract():
    assert merge([(5, 6), (0, 2), (1, 3), (3, 4), (7, 7)]) == [(0, 4), (5, 6)]
    assert intersect([(0, 4), (6, 10)], [(2, 8)]) == [(2, 4), (6, 8)]
    assert subtract([(0, 10)], [(2, 3), (5, 6), (9, 12)]) == [(0, 2), (3, 5), (6, 9)]
    assert subtract([(0, 2), (4, 6)], [(1, 5)]) == [(0, 1), (5, 6)]
    assert total(subtract([(0, 10)], [])) == 10


def _event(name, cat, ts, dur, tid=1):
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": 1, "tid": tid}


def test_device_trace_uses_kernels_and_ignores_memcpy_and_host_ops():
    trace = {"traceEvents": [
        _event("aten::mm", "cpu_op", 0, 100),                      # host time: not device work
        _event("nccl:all_reduce", "user_annotation", 0, 5),         # host-side enqueue of the NCCL kernel
        _event("sm90_xmma_gemm", "kernel", 10, 40, tid=7),
        _event("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "kernel", 30, 40, tid=20),
        _event("Memcpy DtoD (Device -> Device)", "gpu_memcpy", 70, 50, tid=7),
    ]}
    o = overlap_from_trace(trace)
    assert o.source == "device"
    assert (o.compute_time_s, o.comm_time_s, o.overlap_time_s, o.exposed_comm_time_s) == pytest.approx(
        (40e-6, 40e-6, 20e-6, 20e-6))


def test_host_trace_counts_gloo_threads_and_takes_waiting_out_of_compute():
    trace = {"traceEvents": [
        _event("measured step 0", "user_annotation", 0, 200),             # a range, neither category
        _event("autograd::engine::evaluate_function: MmBackward0", "cpu_op", 0, 100),
        _event("aten::mm", "cpu_op", 10, 30),
        _event("c10d::allreduce_", "cpu_op", 60, 20),                      # inside the backward node's hook
        _event("gloo:all_reduce", "user_annotation", 60, 80, tid=2),       # gloo's worker thread
    ]}
    compute, comm, source = classify(trace)
    assert source == "host"
    assert merge(compute) == [(0, 60), (80, 100)]
    o = overlap_from_trace(trace)
    assert o.comm_time_s == pytest.approx(80e-6)  # (60, 140)
    assert o.overlap_time_s == pytest.approx(20e-6)  # (80, 100): compute resumed while gloo still sent
    assert o.exposed_comm_time_s == pytest.approx(60e-6)


def test_summary_is_per_step_and_averaged_over_ranks():
    ranks = [Overlap(4.0, 2.0, 1.0, 1.0, "device"), Overlap(6.0, 4.0, 1.0, 3.0, "device")]
    fields = summarise_ranks(ranks, steps=2)
    assert fields["compute_time_s"] == 2.5 and fields["comm_time_s"] == 1.5
    assert fields["overlap_time_s"] == 0.5 and fields["exposed_comm_time_s"] == 1.0
    assert fields["overlap_ratio"] == pytest.approx(1 / 3)
    assert fields["overlap_per_rank"][1]["exposed_comm_time_s"] == 1.5
    table = markdown(ranks, 2, "t")
    assert "| 1 | 3000.00 | 2000.00 | 500.00 | 1500.00 | 25% |" in table


def test_summary_refuses_nothing_to_average():
    with pytest.raises(ValueError, match="at least one"):
        summarise_ranks([], steps=1)
    with pytest.raises(ValueError, match="at least one"):
        summarise_ranks([Overlap(1.0, 1.0, 0.0, 1.0, "host")], steps=0)


def _hta_trace(tmp_path, rng):
    """A synthetic one-rank Kineto trace with overlapping compute and NCCL kernels on two streams."""
    events, ts = [], 1000
    names = ["ncclDevKernel_AllReduce_Sum_f32_RING_LL", "ncclKernel_AllGather_RING_LL_Sum_int8_t", "gemm_1",
             "vectorized_elementwise_kernel", "Memcpy DtoD (Device -> Device)", "Memset (Device)"]
    for i in range(300):
        ts += rng.randint(0, 20)
        dur = rng.randint(1, 50)
        name = names[i % len(names)]
        comm = name.startswith("nccl")
        cat = "gpu_memcpy" if name.startswith("Memcpy") else "gpu_memset" if name.startswith("Memset") else "kernel"
        events.append({"ph": "X", "cat": cat, "ts": ts, "dur": dur, "pid": 0, "tid": 20 if comm else 7,
                       "name": name,
                       "args": {"stream": 20 if comm else 7, "device": 0, "correlation": i, "External id": i}})
    trace = {"schemaVersion": 1, "distributedInfo": {"rank": 0, "world_size": 1, "backend": "nccl"},
             "deviceProperties": [], "traceEvents": events, "displayTimeUnit": "ms", "baseTimeNanoseconds": 0}
    (tmp_path / "rank0.json").write_text(json.dumps(trace))
    return trace


def test_agrees_with_holistic_trace_analysis(tmp_path):
    hta = pytest.importorskip("hta.trace_analysis", reason="HolisticTraceAnalysis is not installed")
    trace = _hta_trace(tmp_path, random.Random(1))
    ours = overlap_from_trace(trace)
    assert 0.1 < ours.overlap_ratio < 0.9  # a comparison that could tell the two apart
    theirs = hta.TraceAnalysis(trace_dir=str(tmp_path)).get_comm_comp_overlap(visualize=False)
    assert float(theirs["comp_comm_overlap_pctg"].iloc[0]) == pytest.approx(100 * ours.overlap_ratio, abs=0.01)


def test_real_two_rank_gloo_traces(tmp_path):
    """An async all-reduce under matmuls, then a blocking one: some communication hidden, some exposed."""
    from src.harness.launch import run_torchrun
    from src.instruments.overlap import overlap_from_files

    result = run_torchrun(2, "tests.instruments.overlap_target", [str(tmp_path)], timeout_s=120)
    assert result.ok, result.describe() + result.stderr_tail
    fields, table = overlap_from_files([str(tmp_path / f"rank{r}.json") for r in (0, 1)], steps=1, title="gloo")
    assert fields["overlap_source"] == "host"
    for rank in fields["overlap_per_rank"]:
        assert rank["compute_time_s"] > 0 and rank["comm_time_s"] > 0
        assert rank["overlap_time_s"] > 0 and rank["exposed_comm_time_s"] > 0
        assert rank["overlap_time_s"] + rank["exposed_comm_time_s"] == pytest.approx(rank["comm_time_s"])
    assert table.count("\n| ") == 3  # header and one row per rank
