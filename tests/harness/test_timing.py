import time

import numpy as np
import pytest
import torch

from src.harness import timing
from src.harness.timing import EventTimer, SyncTimer, make_timer, summarize
from src.train.step import phase
from tests.conftest import needs_cuda as cuda



class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_sync_timer_measures_exactly_what_happens_inside_the_phase(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.timeit, "default_timer", clock)
    timer = SyncTimer("cpu")
    for forward, backward in [(0.25, 0.5), (0.125, 1.0)]:
        clock.now += 7.0  # work between phases (batch creation, zero_grad) must not be counted
        with phase(timer, "forward"):
            clock.now += forward
        clock.now += 3.0
        with phase(timer, "backward"):
            clock.now += backward
        timer.next_step()
    assert timer.results() == [{"forward": 0.25, "backward": 0.5}, {"forward": 0.125, "backward": 1.0}]


def test_sync_timer_on_a_workload_of_known_duration():
    timer = SyncTimer("cpu")
    with phase(timer, "sleep"):
        time.sleep(0.05)
    timer.next_step()
    (step,) = timer.results()
    assert step["sleep"] >= 0.05  # sleep guarantees at least its duration; no upper bound (no timed assertions)


def test_phase_without_timer_runs_the_block_untimed_and_a_failed_phase_records_no_time():
    ran = []
    with phase(None, "forward"):
        ran.append("forward")
    assert ran == ["forward"]
    timer = SyncTimer("cpu")
    with phase(timer, "forward"):
        pass
    with pytest.raises(ValueError):  # an error inside a phase propagates and leaves no time for that phase
        with phase(timer, "backward"):
            raise ValueError("boom")
    timer.next_step()
    (step,) = timer.results()
    assert set(step) == {"forward"} and step["forward"] >= 0


def test_summary_statistics_match_numpy_population_std():
    times = [0.1, 0.2, 0.4, 0.3]
    s = summarize(times)
    assert s["mean"] == pytest.approx(0.25) and s["std"] == pytest.approx(np.std(times))
    assert (s["median"], s["min"], s["max"]) == (pytest.approx(0.25), 0.1, 0.4)
    assert summarize([]) == dict.fromkeys(("mean", "std", "median", "min", "max"))


def test_events_timer_refuses_cpu():
    with pytest.raises(ValueError, match="CUDA"):
        make_timer("events", "cpu")


@cuda
def test_events_and_sync_timers_record_every_phase_of_a_gpu_workload():
    """Both timers give one finite, positive time per phase per step. No relation between their times is asserted:
    an earlier version asserted they agree within 5%, and it failed on the GPU machine with the suite under 12
    workers (issue 21). Tests assert no timing relation."""
    a = torch.randn(512, 512, device="cuda")
    timers = {"events": EventTimer("cuda"), "sync": SyncTimer("cuda")}
    for _ in range(3):
        for timer in timers.values():
            with phase(timer, "matmul"):
                a @ a
            timer.next_step()
    for name, timer in timers.items():
        steps = timer.results()
        assert len(steps) == 3 and all(set(s) == {"matmul"} for s in steps), name
        assert all(np.isfinite(s["matmul"]) and s["matmul"] > 0 for s in steps), name


@cuda
def test_events_timer_on_a_kernel_of_known_duration():
    timer = EventTimer("cuda")
    cycles = int(torch.cuda.get_device_properties(0).clock_rate * 1e3 * 0.02)  # clock_rate in kHz: ~20 ms of spinning
    torch.cuda._sleep(cycles)
    with phase(timer, "sleep"):
        torch.cuda._sleep(cycles)
    timer.next_step()
    (step,) = timer.results()
    # Only that the spin registered: bounds on its length failed under other work on the GPU (issue 21)
    assert np.isfinite(step["sleep"]) and step["sleep"] > 0
