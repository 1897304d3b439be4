"""--memory_snapshot PATH: the CUDA allocator's history over the measured steps, for pytorch.org/memory_viz.

    python -m src.profiling.benchmark --sizes xl --mode train --memory_snapshot runs/mem --profile_steps 2

writes runs/mem-<config>.pickle (drag it onto https://pytorch.org/memory_viz) and runs/mem-<config>.png
(allocated memory over time with the phases shaded, memory_timeline.py), and prints the peak per phase beside
the analytic breakdown (parameters, gradients, optimizer state, activations: the model interface's estimate) and the largest
allocations. An out-of-memory error inside the measured steps reaches __exit__ (the runner catches it outside
the instruments' `with`), which writes the snapshot up to the failure: its trace ends in the "oom" entry.
Phases come from global hooks (phase_boundaries.py), so the runner needs no change.
"""

import os
import pickle
import sys
import time

import torch

from src.instruments.memory_timeline import MemoryTimeline, build_timeline
from src.instruments.phase_boundaries import AFTER_OPTIMIZER, BACKWARD, BETWEEN_STEPS, FORWARD, OPTIMIZER, phase_boundaries
from src.spec import RunSpec

# Each entry keeps its stack (a few KB); a 2.7B train step makes ~10k allocs and frees, so this holds ~100 steps.
MAX_ENTRIES = 1_000_000
PHASE_ORDER = (FORWARD, BACKWARD, OPTIMIZER, AFTER_OPTIMIZER, BETWEEN_STEPS)
PHASE_COLORS = {FORWARD: "#4C72B0", BACKWARD: "#DD8452", OPTIMIZER: "#55A868", AFTER_OPTIMIZER: "#8172B3",
                BETWEEN_STEPS: "#BBBBBB"}
GB = 1e9


def _now_us() -> float:
    return time.time_ns() / 1e3  # the allocator stamps its trace in epoch microseconds: the same clock


def snapshot_prefix(path: str) -> str:
    return path[: -len(".pickle")] if path.endswith(".pickle") else path


class MemorySnapshot:
    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.steps = spec.profiled_steps
        prefix = f"{snapshot_prefix(spec.memory_snapshot)}-{spec.artifact_name}"
        self.pickle_path, self.png_path = prefix + ".pickle", prefix + ".png"
        self.steps_done = 0
        self.timeline: MemoryTimeline | None = None
        self._recording = False
        self._boundaries: list[tuple[float, str]] = []
        self._hooks = None

    def __enter__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.pickle_path)), exist_ok=True)
        self._baseline = torch.cuda.memory_allocated()
        torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES)  # starts empty: disabling clears it
        self._recording = True
        self._start_us = _now_us()
        after_forward = BETWEEN_STEPS if self.spec.mode == "forward" else BACKWARD
        # Under torch.compile (--compile, --recipe) module hooks added after compiling would be traced into, or
        # guard, the compiled graph: only the optimizer's and the steps' boundaries are marked then.
        self._hooks = phase_boundaries(self._mark, after_forward=after_forward, modules=not self.spec.compiled)
        self._hooks.__enter__()
        return self

    def _mark(self, phase: str) -> None:
        self._boundaries.append((_now_us(), phase))

    def step(self) -> None:
        if not self._recording:
            return
        self.steps_done += 1
        self._mark(BETWEEN_STEPS)
        if self.steps_done >= self.steps:
            self._finish()

    def __exit__(self, exc_type, exc, tb):
        if not self._recording:
            return False
        if exc_type is None:  # fewer measured steps than --profile_steps asked for
            self._finish()
            return False
        try:  # a failure, an OOM above all: the history up to it is what the user needs
            self._finish()
        except Exception as error:  # never let the dump hide the failure itself
            print(f"memory snapshot: could not write it after {exc_type.__name__}: {error}", file=sys.stderr)
        return False

    def _finish(self) -> None:
        self._recording = False
        try:
            self._hooks.__exit__(None, None, None)
            snapshot = torch.cuda.memory._snapshot()
            end_allocated = torch.cuda.memory_allocated()
        finally:  # a later configuration in this process must not record into this history
            torch.cuda.memory._record_memory_history(enabled=None)
        with open(self.pickle_path, "wb") as f:
            pickle.dump(snapshot, f)  # what torch.cuda.memory._dump_snapshot writes
        traces = snapshot.get("device_traces") or [[]]
        trace = traces[torch.cuda.current_device()] if len(traces) > torch.cuda.current_device() else traces[0]
        self.timeline = build_timeline(trace, self._start_us, self._baseline, end_allocated, self._boundaries,
                                       MAX_ENTRIES)
        plot_timeline(self.timeline, self.png_path, f"allocated memory, measured steps: {self.spec.label}")

    def report(self, status: str, phase_times: dict[str, list[float]], peak_memory_bytes: int | None) -> dict:
        """The record's `memory_summary` and warnings; {} when the run failed before its measured steps."""
        if self.timeline is None:
            print(f"memory snapshot: none written for {self.spec.label} (the run failed before its measured "
                  "steps)", file=sys.stderr)
            return {}
        text = memory_report(self.spec, self.timeline, peak_memory_bytes, self.pickle_path, self.png_path)
        print(text, file=sys.stderr)
        fields = {"warnings": []}
        fields["memory_summary"] = {
            "snapshot": self.pickle_path, "plot": self.png_path, "peak_bytes": self.timeline.peak,
            "peak_by_phase_bytes": self.timeline.peak_by_phase, "oom": self.timeline.oom,
            "largest": [a.__dict__ for a in self.timeline.largest],
        }
        if self.timeline.truncated:
            fields["warnings"].append(f"memory snapshot: more than {MAX_ENTRIES} allocator events; the earliest "
                                      "were dropped")
        return fields


def memory_report(spec: RunSpec, timeline: MemoryTimeline, peak_memory_bytes: int | None, pickle_path: str,
                  png_path: str) -> str:
    estimate = spec.model_spec().memory_estimate(spec.batch_size, spec.context_length, spec.mode, spec.precision,
                                                 spec.checkpoint_group)
    lines = [f"### Memory: {spec.label}", "",
             f"snapshot: {pickle_path} (open at https://pytorch.org/memory_viz); timeline: {png_path}"]
    if timeline.oom:
        lines.append(f"out of memory: {timeline.oom['size'] / GB:.2f} GB requested with "
                     f"{(timeline.oom['device_free'] or 0) / GB:.2f} GB free on the device; the snapshot ends there")
    lines += ["", "| phase | peak allocated (GB) |", "|---|---:|",
              f"| at the first measured step's start | {timeline.start / GB:.3f} |"]
    for phase in PHASE_ORDER:
        if phase in timeline.peak_by_phase:
            lines.append(f"| {phase} | {timeline.peak_by_phase[phase] / GB:.3f} |")
    lines.append(f"| **measured steps** | **{timeline.peak / GB:.3f}** |")
    if peak_memory_bytes is not None:
        lines.append(f"| whole run (torch.cuda.max_memory_allocated) | {peak_memory_bytes / GB:.3f} |")
    lines += ["", f"| analytic ({spec.precision}, {spec.mode}) | GB |", "|---|---:|"]
    for name, value in estimate.__dict__.items():
        lines.append(f"| {name.replace('_', ' ')} | {value / GB:.3f} |")
    lines += [f"| **total** | **{estimate.total / GB:.3f}** |", "",
              "| largest allocations | MB | times | phase |", "|---|---:|---:|---|"]
    for a in timeline.largest:
        lines.append(f"| {a.site} | {a.size / 1e6:.1f} | {a.count} | {a.phase} |")
    return "\n".join(lines) + "\n"


def plot_timeline(timeline: MemoryTimeline, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: the GPU machines have no display
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(12, 4.5))
    end_ms = max(timeline.times_ms[-1] if timeline.times_ms else 0.0,
                 timeline.boundaries_ms[-1][0] if timeline.boundaries_ms else 0.0)
    spans = [(0.0, BETWEEN_STEPS)] + list(timeline.boundaries_ms)
    for (start, phase), (stop, _) in zip(spans, spans[1:] + [(end_ms, "")]):
        ax.axvspan(start, stop, color=PHASE_COLORS.get(phase, "#BBBBBB"), alpha=0.18, lw=0)
    for start, phase in timeline.boundaries_ms:
        if phase == BETWEEN_STEPS:
            ax.axvline(start, color="black", lw=0.6, ls=":")
    ax.step([0.0, *timeline.times_ms], [timeline.start / GB, *(b / GB for b in timeline.allocated)], where="post",
            color="black", lw=1)
    handles = [Patch(color=PHASE_COLORS[p], alpha=0.4, label=f"{p} (peak {timeline.peak_by_phase[p] / GB:.2f} GB)")
               for p in PHASE_ORDER if p in timeline.peak_by_phase]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xlabel("time since the first measured step began (ms); dotted lines: step ends")
    ax.set_ylabel("allocated (GB)")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
