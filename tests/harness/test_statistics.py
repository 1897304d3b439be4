"""Which measured steps a row's statistics count: past the profiled steps (--trace / --memory_snapshot with
--profile_steps N) and the one after them, where enough remain; the per-step lists keep every step, and the
row's medians, the per-rank medians, the report's table and the A/B runs all count the same steps."""

import numpy as np
import pytest

from src.harness.record import counted_phase_times, counted_step_times, new_record, with_fields
from src.harness.runner import derive_figures
from src.reports.report import Sweep, sweep_table
from src.spec import MIN_STATISTICS_STEPS
from tests.specs import tiny_spec

# The 2.7B fp8 row of 2026-12-03 (H200), profile_steps 2: two profiled steps, one slowed after them, then steady.
STEPS_MS = [199.3, 180.8, 176.2, 154.4, 154.2, 154.2, 154.3, 160.8]


@pytest.mark.parametrize("changes,start", [
    (dict(trace="/tmp/t", profile_steps=2, benchmark_steps=8), 3),
    (dict(memory_snapshot="/tmp/m", profile_steps=1, benchmark_steps=5, device="cuda", timer="events"), 2),
    (dict(trace="/tmp/t", profile_steps=2, benchmark_steps=5), 0),  # 2 would remain: too few, every step counts
    (dict(trace="/tmp/t", benchmark_steps=8), 0),  # every step profiled: all of them are the row
    (dict(profile_steps=2, benchmark_steps=8), 0),  # nothing profiles (nsys is outside the process)
])
def test_the_statistics_start_past_the_profiled_steps_where_enough_remain(changes, start):
    spec = tiny_spec(**changes)
    assert spec.statistics_from_step == start
    assert start == 0 or spec.benchmark_steps - start >= MIN_STATISTICS_STEPS


def _row(spec, steps_ms=STEPS_MS):
    forward = [0.3 * s / 1e3 for s in steps_ms]
    backward = [0.7 * s / 1e3 for s in steps_ms]
    record = with_fields(new_record(spec), {"status": "ok", "time_forward": forward, "time_backward": backward,
                                            "time_optimizer": [], "statistics_from_step": spec.statistics_from_step})
    return with_fields(record, derive_figures(spec, record, ""))


def test_a_traced_rows_median_and_throughput_come_from_its_unprofiled_steps():
    spec = tiny_spec(trace="/tmp/t", profile_steps=2, benchmark_steps=8)
    row = _row(spec)
    assert row["median_time_step"] * 1e3 == pytest.approx(154.3)  # of 154.4 154.2 154.2 154.3 160.8
    assert row["max_time_step"] * 1e3 == pytest.approx(160.8) and len(row["time_forward"]) == 8  # every step kept
    assert row["tokens_per_second"] == pytest.approx(spec.batch_size * spec.context_length / 0.1543)
    untraced = _row(tiny_spec(benchmark_steps=8))
    assert untraced["median_time_step"] * 1e3 == pytest.approx((154.4 + 160.8) / 2)  # all 8: the old median


def test_the_report_and_the_ab_runs_count_the_same_steps():
    spec = tiny_spec(trace="/tmp/t", profile_steps=2, benchmark_steps=8)
    row = _row(spec)
    np.testing.assert_allclose(counted_step_times(row) * 1e3, STEPS_MS[3:])
    assert counted_phase_times(row)["optimizer"] == []
    assert Sweep([row], [], {}).runs_of(row)[0].size == 5
    table, _ = sweep_table([row], ["size"])
    assert " 154.30 " in table and " 46.29 " in table  # step and forward (0.3 of each step): medians of 5 steps
    older = {k: v for k, v in row.items() if k != "statistics_from_step"}  # a row written before the field
    assert counted_step_times(older).size == 8
