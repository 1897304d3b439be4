"""Allocated memory over the measured steps, replayed from an allocator snapshot's trace and cut into phases.

Why the snapshot and not torch.cuda.memory_allocated() sampled at the phase boundaries: a sample at a boundary
misses the peak inside a phase (backward peaks in its first layers, not at its ends), and resetting the peak
counter per phase would erase the whole-run peak the runner reports. The snapshot's trace holds every alloc and
free with its size and time (epoch microseconds, the clock of time.time_ns), so the curve is exact between the
first and the last measured step and the phase of an event is that of the last boundary before it.
Pure functions of the snapshot dict: tested on CPU with made-up snapshots.
"""

import bisect
import os
from dataclasses import dataclass, field

from src.instruments.phase_boundaries import BETWEEN_STEPS

LARGEST = 8
_REPO = os.sep + "src" + os.sep


@dataclass(frozen=True)
class Allocation:
    size: int
    count: int
    phase: str
    site: str


@dataclass
class MemoryTimeline:
    start: int = 0  # bytes allocated when recording began (the parameters, and AdamW's state after warm-up)
    times_ms: list = field(default_factory=list)  # since recording started
    allocated: list = field(default_factory=list)  # bytes allocated after each event
    peak_by_phase: dict = field(default_factory=dict)  # phase -> bytes, the highest over all steps
    largest: list = field(default_factory=list)  # [Allocation]
    boundaries_ms: list = field(default_factory=list)  # [(ms, phase that starts)]
    truncated: bool = False  # the ring buffer overflowed: the earliest events are gone
    oom: dict | None = None  # the "oom" trace entry: size requested, device_free

    @property
    def peak(self) -> int:
        return max(self.allocated, default=0)


def allocation_site(frames: list) -> str:
    """The innermost frame in this repository, else the innermost Python frame: where the allocation came from."""
    python = [f for f in frames or [] if str(f.get("filename", "")).endswith(".py")]
    ours = [f for f in python if _REPO in str(f.get("filename", ""))]
    frame = (ours or python or [None])[0]
    if frame is None:
        return "(no Python frame: autograd's backward thread or C++)"
    return f"{os.path.basename(frame['filename'])}:{frame.get('line', '?')} {frame.get('name', '')}"


def build_timeline(trace: list, start_us: float, baseline: int, end_allocated: int,
                   boundaries_us: list, max_entries: int) -> MemoryTimeline:
    """trace: the snapshot's device trace (list of entries); boundaries_us: [(epoch us, phase that starts)].

    The curve starts from `baseline` (memory_allocated() when recording began), or, if the trace overflowed
    its `max_entries` ring buffer and lost its first events, ends at `end_allocated` (when it was taken).
    """
    boundaries_us = sorted(boundaries_us)
    marks = [t for t, _ in boundaries_us]

    def phase_at(time_us: float) -> str:
        i = bisect.bisect_right(marks, time_us) - 1
        return boundaries_us[i][1] if i >= 0 else BETWEEN_STEPS

    timeline = MemoryTimeline(truncated=len(trace) >= max_entries,
                              boundaries_ms=[((t - start_us) / 1e3, name) for t, name in boundaries_us])
    deltas, times = [], []
    allocations: dict[tuple, list] = {}  # (size, site) -> [count, phase of the first]
    for entry in trace:
        action = entry.get("action")
        if action == "oom":
            timeline.oom = {"size": entry.get("size"), "device_free": entry.get("device_free")}
            continue
        if action not in ("alloc", "free_completed"):  # free_requested: the block is not free until completed
            continue
        size = int(entry.get("size", 0))
        time_us = float(entry.get("time_us", start_us))
        deltas.append(size if action == "alloc" else -size)
        times.append(time_us)
        if action == "alloc":
            key = (size, allocation_site(entry.get("frames")))
            allocations.setdefault(key, [0, phase_at(time_us)])[0] += 1
    level = timeline.start = end_allocated - sum(deltas) if timeline.truncated else baseline
    for time_us, delta in zip(times, deltas):
        level += delta
        timeline.times_ms.append((time_us - start_us) / 1e3)
        timeline.allocated.append(level)
        phase = phase_at(time_us)
        timeline.peak_by_phase[phase] = max(timeline.peak_by_phase.get(phase, 0), level)
    ranked = sorted(allocations.items(), key=lambda item: -item[0][0])[:LARGEST]
    timeline.largest = [Allocation(size, count, phase, site) for (size, site), (count, phase) in ranked]
    return timeline
