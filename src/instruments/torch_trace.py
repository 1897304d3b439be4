"""--trace DIR: torch.profiler over the measured steps -> DIR/<config>.json.gz (Perfetto) and a time table beside it.

    python -m src.profiling.benchmark --sizes small --mode train --trace runs/traces --profile_steps 3

The profiler records CPU ops always and CUDA kernels on CUDA, with a `measured step i` range per step and a
`module: <class>` range per module call (module_ranges.py), so the trace opens at ui.perfetto.dev (or
chrome://tracing) with the model's structure visible. After the run, the table of where the time went
(trace_summary.py) is printed to stderr, saved as DIR/<config>.md and kept in the record as `trace_summary`, its
figures per profiled step also as the row's `trace_*` fields (the A/B report's "where the time went").

With several ranks (--parallel) every rank writes its own trace, `<config>_rank<r>.json.gz`, and rank 0 adds the
measured overlap of computation and communication (overlap.py: HolisticTraceAnalysis's method) to the row and to
DIR/<config>_overlap.md, once every rank's trace is written (each rank leaves a `.done` marker after its export;
rank 0 waits for them at most OTHER_RANKS_WAIT_S, so a rank that died costs a bounded wait, not a hang).

A trace that cannot be written (a full disk) costs the trace, not the measurement: the row keeps its status and
says so in its warnings, and no partial file is left (the export goes to a `.partial` name, renamed when whole). A
rank whose trace failed leaves the reason in its `.done` marker, so rank 0 reports it instead of waiting.

The profiled steps are slower than unprofiled ones (the profiler's own cost per op), and the table compares
the trace with the harness's times for those same steps, so both sides carry the overhead. Use
--profile_steps to keep the rest of the measured steps clean: the row's statistics then count only the steps
after the profiled ones and the one after them (RunSpec.statistics_from_step), where at least 3 remain.
"""

import contextlib
import errno
import os
import sys
import time

import torch

from src.distributed.common import world  # the one process-level (rank, world size)
from src.instruments.module_ranges import module_ranges
from src.spec import RunSpec
from src.instruments.trace_summary import PHASES, STEP_RANGE_PREFIX, load_trace, summarise_trace

OTHER_RANKS_WAIT_S = 120.0  # rank 0's wait for the other ranks' traces: their exports take seconds, not minutes


class TorchTrace:
    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.steps = spec.profiled_steps
        self.rank, self.world_size = world()
        name = spec.artifact_name
        self.rank_paths = [os.path.join(spec.trace, f"{name}_rank{r}.json.gz") for r in range(self.world_size)]
        self.overlap_path = os.path.join(spec.trace, name + "_overlap.md")
        if self.world_size > 1:
            name = f"{name}_rank{self.rank}"
        self.trace_path = os.path.join(spec.trace, name + ".json.gz")  # export_chrome_trace gzips a .gz name
        self.table_path = os.path.join(spec.trace, name + ".md")
        self.done_path = self.trace_path + ".done"
        self.steps_done = 0
        self.exported = False  # a file of the same name may be an earlier run's: only this flag says it is ours
        self.write_error = ""  # why the trace could not be written, if it could not
        self._profiler = None
        self._module_ranges = None
        self._step_range = None

    def __enter__(self):
        os.makedirs(self.spec.trace, exist_ok=True)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if not torch.cuda.is_available():
            # Kineto asks for the GPU count when it exports, whatever the activities: with a CUDA build of torch and
            # no driver it logs "ERROR: gpuGetDeviceCount failed with code 35" (cudaErrorInsufficientDriver), which
            # reads like our failure. Level 5 keeps Kineto quiet; read when Kineto starts, so set before it does,
            # and only without CUDA, where it has nothing to report. A user's own KINETO_LOG_LEVEL wins.
            os.environ.setdefault("KINETO_LOG_LEVEL", "5")
        if self.spec.device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
            torch.cuda.synchronize()  # warm-up kernels still queued would land in the trace with no step to own them
        # acc_events: one profiling cycle here, so keeping events across cycles changes nothing, and without it
        # torch warns on stderr that the "Profiler clears events at the end of each cycle" (a user took it for ours)
        self._profiler = torch.profiler.profile(activities=activities, acc_events=True)
        self._profiler.start()
        # Module hooks added after torch.compile (--compile, --recipe) would be traced into, or guard, the graph.
        self._module_ranges = contextlib.nullcontext() if self.spec.compiled else module_ranges()
        self._module_ranges.__enter__()
        self._open_step()
        return self

    def step(self) -> None:
        if self._profiler is None:
            return
        self._close_step()
        self.steps_done += 1
        if self.steps_done >= self.steps:
            self._finish()
        else:
            self._open_step()

    def __exit__(self, exc_type, exc, tb):
        if self._profiler is None:
            return False
        self._close_step()  # fewer steps than asked, or a failure (an OOM): keep the trace up to here
        if exc_type is None:
            self._finish()
            return False
        try:
            self._finish()
        except Exception as error:  # never let the export hide the failure itself
            print(f"trace: could not write it after {exc_type.__name__}: {error}", file=sys.stderr)
        return False

    def _open_step(self) -> None:
        self._step_range = torch.profiler.record_function(f"{STEP_RANGE_PREFIX}{self.steps_done}")
        self._step_range.__enter__()

    def _close_step(self) -> None:
        if self._step_range is not None:
            self._step_range.__exit__(None, None, None)
            self._step_range = None

    def _finish(self) -> None:
        profiler, self._profiler = self._profiler, None
        self._module_ranges.__exit__(None, None, None)
        profiler.stop()  # synchronises the device first, so the last step's kernels are in
        if os.path.exists(self.done_path):
            os.remove(self.done_path)  # an earlier run's marker must not vouch for this trace
        partial = self.trace_path[:-len(".json.gz")] + ".partial.json.gz"  # export_chrome_trace gzips a .gz name
        try:
            profiler.export_chrome_trace(partial)
            os.replace(partial, self.trace_path)
            self.exported = True
        except OSError as error:  # ENOSPC, EDQUOT, EIO: the trace is lost, the measurement is not
            with contextlib.suppress(OSError):
                os.remove(partial)
            self.write_error = f"could not write {self.trace_path}: {_why(error)}"
            print(f"trace: {self.write_error}", file=sys.stderr)
        if self.world_size > 1:
            with contextlib.suppress(OSError):  # rank 0 reads this rank's trace only once it is whole
                with open(self.done_path, "w") as f:
                    f.write(self.write_error)  # empty: written; else why not

    def report(self, status: str, phase_times: dict[str, list[float]], peak_memory_bytes: int | None) -> dict:
        """The record's `trace_summary` and warnings, once the run's phase times are known; {} without a trace."""
        if self.write_error:  # with several ranks, no overlap figures either: they need every rank's trace
            return {"warnings": [f"trace: {self.write_error}"]}
        if not self.exported:
            print(f"trace: none written for {self.spec.label} (the run failed before its measured steps)",
                  file=sys.stderr)
            return {}
        n = self.steps_done
        measured = {phase: sum(phase_times.get(phase, [])[:n]) for phase in PHASES}
        try:
            events = load_trace(self.trace_path)
        except (OSError, EOFError, ValueError) as error:  # the profiler's own JSON, cut short where its disk filled
            with contextlib.suppress(OSError):
                os.remove(self.trace_path)
            return {"warnings": [f"trace: {self.trace_path} was not written whole ({type(error).__name__}: "
                                 f"{str(error)[:100]}); removed"]}
        summary = summarise_trace(events, self.spec.device, measured, n)
        text = summary.markdown(f"Where the time went: {self.spec.label}")
        text += f"\ntrace: {self.trace_path} (open at https://ui.perfetto.dev or chrome://tracing)\n"
        if status != "ok":
            text += f"the run ended with status {status!r}; the trace holds the steps before it\n"
        warnings = [f"trace: {note}" for note in summary.warnings()]
        table = _write_text(self.table_path, text)
        if not table:
            warnings.append(f"trace: could not write {self.table_path}; the table is in trace_summary")
        print(text, file=sys.stderr)
        # per-step figures as fields of their own, so that the A/B report (src/reports/compare.py) can set two rows'
        # categories side by side; with several ranks the row is rank 0's, and so are they
        fields = {"trace_summary": {**summary.to_dict(), "trace": self.trace_path, "table": table},
                  **summary.per_step_fields(), "warnings": warnings}
        if self.world_size > 1 and self.rank == 0:
            fields = self._with_overlap(fields, n)
        return fields

    def _with_overlap(self, fields: dict, steps: int) -> dict:
        """Rank 0: the measured overlap of every rank's trace, once all are written (or the wait is over)."""
        from src.instruments.overlap import overlap_from_files

        deadline = time.monotonic() + OTHER_RANKS_WAIT_S
        while not all(os.path.exists(p + ".done") for p in self.rank_paths) and time.monotonic() < deadline:
            time.sleep(0.2)
        missing = [r for r, p in enumerate(self.rank_paths) if not os.path.exists(p + ".done")]
        if missing:
            return {**fields, "warnings": fields["warnings"] + [f"trace: no overlap figures: rank(s) {missing} wrote "
                                                                f"no trace within {OTHER_RANKS_WAIT_S:.0f} s"]}
        failed = {r: _read_text(p + ".done") for r, p in enumerate(self.rank_paths)}
        failed = {r: why for r, why in failed.items() if why}
        if failed:
            return {**fields, "warnings": fields["warnings"] + [
                f"trace: no overlap figures: rank {r} {why}" for r, why in failed.items() if r != self.rank]}
        overlap, table = overlap_from_files(self.rank_paths, steps, f"Computation and communication: {self.spec.label}")
        print(table, file=sys.stderr)
        if not _write_text(self.overlap_path, table):
            return {**fields, **overlap, "warnings": fields["warnings"] + [
                f"trace: could not write {self.overlap_path}; the overlap figures are in the row"]}
        return {**fields, **overlap, "overlap_table": self.overlap_path}


def _why(error: OSError) -> str:
    return "no space left on the device" if error.errno == errno.ENOSPC else f"{type(error).__name__}: {error}"


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as error:
        return f"left an unreadable marker ({_why(error)})"


def _write_text(path: str, text: str) -> str:
    """Write `text` to `path` whole or not at all; the path, or "" when it could not be written."""
    try:
        with open(path, "w") as f:
            f.write(text)
        return path
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(path)
        return ""
