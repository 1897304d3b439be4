"""Phase timers that respect the asynchronous device, and the statistics reported for a list of step times.

`events`: a CUDA event pair around each phase; read once at the end, so timing adds no synchronisation and the
GPU queue never drains between steps. `sync`: synchronise, read timeit.default_timer, run the phase, synchronise,
read again (the original benchmark's way; the only one on CPU). On a GPU-bound step the two agree.
"""

import timeit

import numpy as np
import torch

from src.spec import TIMERS  # noqa: F401  (the names live with the option they validate)


class SyncTimer:
    def __init__(self, device: str):
        self._sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self._open: dict[str, float] = {}
        self._steps: list[dict[str, float]] = [{}]

    def start(self, phase: str) -> None:
        self._sync()
        self._open[phase] = timeit.default_timer()

    def stop(self, phase: str) -> None:
        self._sync()
        self._steps[-1][phase] = timeit.default_timer() - self._open.pop(phase)

    def next_step(self) -> None:
        self._steps.append({})

    def results(self) -> list[dict[str, float]]:
        """Seconds per phase, one dict per step."""
        return [s for s in self._steps if s]


class EventTimer:
    def __init__(self, device: str):
        if device != "cuda":
            raise ValueError("the events timer needs a CUDA device; use --timer sync")
        self._steps: list[dict[str, tuple]] = [{}]

    def start(self, phase: str) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._steps[-1][phase] = (event, None)

    def stop(self, phase: str) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._steps[-1][phase] = (self._steps[-1][phase][0], event)

    def next_step(self) -> None:
        self._steps.append({})

    def results(self) -> list[dict[str, float]]:
        torch.cuda.synchronize()
        return [{p: a.elapsed_time(b) / 1000.0 for p, (a, b) in s.items()} for s in self._steps if s]


def make_timer(kind: str, device: str):
    return EventTimer(device) if kind == "events" else SyncTimer(device)


def summarize(times: list[float]) -> dict[str, float | None]:
    """mean, std (population, as numpy: the original's columns), median, min, max; None for an empty list."""
    if not times:
        return dict.fromkeys(("mean", "std", "median", "min", "max"))
    a = np.asarray(times, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a)),
            "min": float(a.min()), "max": float(a.max())}


def bench_ms(fn, device: str, warmup_ms: float, rep_ms: float) -> tuple[float, float, float]:
    """(median, 20th, 80th percentile) of fn's time in ms, for a kernel timed alone (the attention benchmark).

    CUDA: triton.testing.do_bench (CUDA events, L2 flushed between runs, warm-up and repetitions by time).
    CPU: one warm call, then repeat for rep_ms of wall time (at least 3 runs) with timeit's clock.
    """
    if device == "cuda":
        import triton.testing

        median, p20, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return median, p20, p80
    fn()
    times, start = [], timeit.default_timer()
    while len(times) < 3 or (timeit.default_timer() - start) * 1e3 < rep_ms:
        t0 = timeit.default_timer()
        fn()
        times.append((timeit.default_timer() - t0) * 1e3)
    p20, median, p80 = np.percentile(times, [20, 50, 80])
    return float(median), float(p20), float(p80)
