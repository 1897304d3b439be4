"""The A/B report's "where the time went" from two rows' --trace figures, and --pair_on, on hand-written rows."""

import pytest

from src.profiling.report import main
from src.reports.compare import (IDLE, host_wait_differences, kernel_differences, phase_category_differences,
                                 trace_differences)

from tests.reports.test_report import make_record, write

# ms per profiled step, chosen so that every difference is distinct: B - A = matmul +2, idle +5, softmax -1, copies 0
A_MS = {"matmul": 10.0, "attention": 4.0, "softmax": 2.0, "copies and casts": 1.0}
B_MS = {"matmul": 12.0, "attention": 4.5, "softmax": 1.0, "copies and casts": 1.0}
A_IDLE, B_IDLE = 3.0, 8.0


def traced(record: dict, by_category: dict, idle: float, kernels: float, top: list, phases: dict | None = None):
    """`record` with the trace_* fields its --trace run would have written (trace_summary.py per_step_fields)."""
    return {**record, "trace_device": "cuda", "trace_steps": 3, "trace_ms_per_step": by_category,
            "trace_step_ms": sum(by_category.values()) + idle, "trace_idle_ms_per_step": idle,
            "trace_kernels_per_step": kernels, "trace_phase_ms_per_step": phases or {"forward": by_category},
            "trace_top_kernels": [{"name": n, "category": c, "calls_per_step": 1, "ms_per_step": ms}
                                  for n, c, ms in top]}


A_TOP = [("gemm_a", "matmul", 10.0), ("flash_fwd", "attention", 4.0), ("softmax_k", "softmax", 2.0),
         ("copy_k", "copies and casts", 1.0)]  # every kernel: its times add up to A's busy time
B_TOP = [("gemm_a", "matmul", 9.0), ("gemm_b", "matmul", 3.0), ("flash_fwd", "attention", 4.5)]  # a partial list


def rows(backend_b="ours"):
    a = traced(make_record(seed=1), A_MS, A_IDLE, 400, A_TOP)
    b = traced(make_record(seed=2, step_s=0.2), B_MS, B_IDLE, 1200, B_TOP)
    b["config"] = {**b["config"], "backend": backend_b}
    return a, b


def test_category_differences_are_exact_largest_first_and_their_shares_add_up():
    a, b = rows()
    table = trace_differences(a, b)
    assert [(name, round(d, 9)) for name, _, _, d, _ in table[:4]] == [
        (IDLE, 5.0), ("matmul", 2.0), ("softmax", -1.0), ("attention", 0.5)]
    step = b["trace_step_ms"] - a["trace_step_ms"]  # 26.5 - 20.0
    assert step == pytest.approx(6.5)
    assert dict((n, s) for n, _, _, _, s in table)[IDLE] == pytest.approx(5.0 / 6.5)
    assert sum(s for *_, s in table) == pytest.approx(1.0)
    assert dict((n, (x, y)) for n, x, y, _, _ in table)["copies and casts"] == (1.0, 1.0)


def test_phase_cells_and_kernels_that_differ_most():
    a, b = rows()
    a["trace_phase_ms_per_step"] = {"forward": {"matmul": 4.0}, "backward": {"matmul": 6.0, "softmax": 2.0}}
    b["trace_phase_ms_per_step"] = {"forward": {"matmul": 4.0}, "backward": {"matmul": 8.0, "softmax": 1.0}}
    assert [(p, c, d) for p, c, _, _, d in phase_category_differences(a, b, 2)] == [
        ("backward", "matmul", 2.0), ("backward", "softmax", -1.0)]
    kernels = {name: (x, y, round(d, 9), bound) for name, x, y, d, bound in kernel_differences(a, b)}
    # A lists every kernel (they add up to its busy time), so gemm_b's absence there means 0 ms
    assert kernels["gemm_b"] == (0.0, 3.0, 3.0, "")
    assert kernels["gemm_a"] == (10.0, 9.0, -1.0, "")
    # B's list is partial: softmax_k took less than B's smallest listed kernel (3.0), so B - A < 3.0 - 2.0
    assert kernels["softmax_k"] == (2.0, None, 1.0, "<")
    assert kernels["copy_k"] == (1.0, None, 2.0, "<")
    assert list(kernels) == ["gemm_b", "copy_k", "gemm_a", "softmax_k", "flash_fwd"]  # by |B - A|, ties in A's order


def _table(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header}"))
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip("|").split("|")])
    return body


def test_the_report_shows_where_the_time_went_for_a_matched_pair(tmp_path, capsys):
    a, b = rows()
    code = main([write(tmp_path / "a.jsonl", [a]), write(tmp_path / "b.jsonl", [b]), "--out", str(tmp_path / "r")])
    assert code == 0
    text = capsys.readouterr().out
    assert "## Where the time went" in text
    table = _table(text, "category")
    assert [row[0] for row in table[:4]] == [IDLE, "matmul", "softmax", "attention"]
    assert table[0][1:] == ["3.000", "8.000", "+5.000", "76.9%"]  # 5.0 of 6.5 ms
    assert table[-2] == ["**step**", "20.000", "26.500", "+6.500", "100.0%"]
    assert table[-1][:4] == ["kernels per step", "400", "1,200", "+800"]


def _waits(*entries):
    return [{"call": call, "op": op, "calls_per_step": calls, "ms_per_step": 0.01 * calls} for call, op, calls in entries]


def test_host_waits_that_differ_are_listed_most_different_first_and_shown_in_the_report(tmp_path, capsys):
    a, b = rows()
    a["trace_host_waits"] = _waits(("cudaEventSynchronize", "(no op)", 1))
    b["trace_host_waits"] = _waits(("cudaEventSynchronize", "(no op)", 1), ("cudaStreamSynchronize", "aten::item", 24),
                                   ("cudaFree", "aten::empty", 2))
    assert host_wait_differences(a, b) == [("`cudaStreamSynchronize` in `aten::item`", 0.0, 24),
                                           ("`cudaFree` in `aten::empty`", 0.0, 2)]
    assert host_wait_differences(a, a) == [] and host_wait_differences(a, rows()[1]) == []  # same; an older row
    assert main([write(tmp_path / "a.jsonl", [a]), write(tmp_path / "b.jsonl", [b]), "--out", str(tmp_path / "r")]) == 0
    assert _table(capsys.readouterr().out, "host wait")[0] == ["`cudaStreamSynchronize` in `aten::item`", "0.0", "24.0"]


def test_pair_on_backend_pairs_an_ours_row_with_an_hf_llama_row(tmp_path, capsys):
    a, b = rows(backend_b="hf_llama")
    path_a, path_b = write(tmp_path / "a.jsonl", [a]), write(tmp_path / "b.jsonl", [b])
    assert main([path_a, path_b, "--out", str(tmp_path / "without")]) == 2  # the backends keep them apart
    assert "backend: A ours, B hf_llama" in capsys.readouterr().err
    assert main([path_a, path_b, "--pair_on", "backend", "--out", str(tmp_path / "two")]) == 0
    two = capsys.readouterr().out
    assert "1 in common" in two and "backend: ours vs hf_llama" in two and "## Where the time went" in two
    # one file holding both backends: A is its first row's
    both = write(tmp_path / "both.jsonl", [a, b])
    assert main([both, "--pair_on", "backend", "--out", str(tmp_path / "one")]) == 0
    one = capsys.readouterr().out
    assert f"B = {both} (backend hf_llama) against A = {both} (backend ours)" in one
    assert _table(one, "category") == _table(two, "category")


def test_pair_on_an_unknown_field_or_a_file_without_two_values_is_one_line_exit_2(tmp_path, capsys):
    a, b = rows()
    path = write(tmp_path / "a.jsonl", [a])
    assert main([path, path, "--pair_on", "bogus", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--pair_on" in err and "bogus" in err and len(err.strip().splitlines()) == 1
    assert main([path, "--pair_on", "backend", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "exactly two backend values" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_traced_rows_too_short_for_a_verdict_still_show_where_the_time_went(tmp_path, capsys):
    """gpu_side_by_side.sh's traced eager rows of 2026-12-04: 3 measured steps, below the verdict's 5, and the
    report had then said nothing of their traces."""
    a = traced(make_record(seed=1, steps=3), A_MS, A_IDLE, 400, A_TOP)
    b = traced(make_record(seed=2, step_s=0.2, steps=3), B_MS, B_IDLE, 1200, B_TOP)
    assert main([write(tmp_path / "a.jsonl", [a]), write(tmp_path / "b.jsonl", [b]), "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "need 5); its traces are compared above" in text
    assert _table(text, "category")[0][1:] == ["3.000", "8.000", "+5.000", "76.9%"]
