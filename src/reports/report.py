"""The report of a benchmark sweep, or an A/B comparison of two sweeps: a markdown summary and PNG plots.

The command is `python -m src.profiling.report` (src/profiling/report.py); this module holds what it writes.
"""


import csv
import os
from dataclasses import dataclass

import numpy as np
from tabulate import tabulate

from src.reports import compare, distributed, labels, plots
from src.harness.results import CONFIG_FIELDS, check_writable, read_records
from src.reports.anomalies import anomalies, host_busy
from src.harness.record import counted_phase_times, counted_step_times, measured_step_times, phase_field
from src.reports.steady_state import step_curve, steady_start

SWEEP_PLOTS = (("phase_times.png", plots.plot_phase_times), ("throughput.png", plots.plot_throughput),
               ("memory.png", plots.plot_memory), ("warmup.png", plots.plot_warmup))


ALWAYS_SHOWN_PHASES = ("forward", "backward", "optimizer")
PHASE_ABBREVIATIONS = {"forward": "fwd", "backward": "bwd", "optimizer": "opt"}


class InputError(Exception):
    """A problem with the command line or its files, said in one line."""


# ---- reading -------------------------------------------------------------------------------------------------

@dataclass
class Sweep:
    """One results file as the report reads it: a record per configuration (a rerun replaces the earlier row),
    the measured step times of every ok run of each (what an A/B comparison resamples), and warnings."""
    records: list[dict]
    warnings: list[str]
    runs: dict[tuple, list[np.ndarray]]  # compare.config_key(record, ignored=()) -> one array per ok run

    def runs_of(self, record: dict) -> list[np.ndarray]:
        return self.runs.get(compare.config_key(record, ignored=())) or [counted_step_times(record)]


def load(path: str) -> Sweep:
    """The records of one results file, one per configuration, with every ok run of each kept apart."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory, not a results file")
    try:
        records, warnings = read_records(path)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if not records:
        raise InputError(f"{path} has no rows")
    collectives = [r for r in records if distributed.is_collective(r)]  # read_records hands back only rows
    records = [r for r in records if not distributed.is_collective(r)]
    if not all(r["config"].get("size") for r in records):
        raise InputError(f"{path} does not look like a results file: some rows have no config size")
    unique = list(compare.latest_by_config(records, ignored=()).values())
    runs = {}
    if len(unique) < len(records):
        warnings.append(f"{path}: {len(records) - len(unique)} rows repeat a configuration; the last ok one is "
                        "shown, and an A/B comparison uses every ok run of it (runs resampled, then steps)")
        for record in unique:
            key = compare.config_key(record, ignored=())
            runs[key] = [counted_step_times(r) for r in records
                         if compare.config_key(r, ignored=()) == key and labels.is_ok(r)]
    return Sweep(unique + distributed.latest_collectives(collectives), warnings, runs)  # collectives keyed by op and size


def output_dir(args) -> str:
    if args.out:
        return args.out
    first = os.path.splitext(args.results[0])
    name = os.path.basename(first[0])
    if len(args.results) == 2:
        name += "_vs_" + os.path.basename(os.path.splitext(args.results[1])[0])
    elif getattr(args, "pair_on", None):  # one file, two sides of it: not the sweep report's directory
        name += f"_by_{args.pair_on}"
    return os.path.join(os.path.dirname(first[0]), name + "_report")


def check_output_dir(path: str) -> None:
    try:
        check_writable(path, directory=True)
    except ValueError as error:
        raise InputError(f"--out: {error}") from None


# ---- formatting helpers --------------------------------------------------------------------------------------

def fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def failed_lines(records: list[dict], fields: list[str]) -> list[str]:
    return [f"- {labels.config_label(r, fields)}: {r.get('status') or 'no status'}"
            for r in records if not labels.is_ok(r)]


def environment_line(records: list[dict]) -> str:
    env = [("driver", "driver_version"), ("CUDA", "cuda_version"), ("torch", "torch_version"),
           ("triton", "triton_version"), ("commit", "git_commit"), ("host", "hostname")]
    parts = [compare.gpu_label(records)]
    parts += [f"{name} {', '.join(compare.distinct_values(records, field))}" for name, field in env
              if compare.distinct_values(records, field) != ["(not recorded)"]]
    stamps = [s for s in compare.distinct_values(records, "timestamp") if s != "(not recorded)"]
    if stamps:
        parts.append(f"measured {stamps[0]}" + (f" to {stamps[-1]}" if len(stamps) > 1 else ""))
    memory = {(r.get("env") or {}).get("gpu_memory_bytes") for r in records} - {None}
    if memory:
        parts.insert(1, "memory " + ", ".join(f"{m / plots.GIB:.1f} GiB" for m in sorted(memory)))
    return "Environment: " + " | ".join(parts)


def constant_line(records: list[dict]) -> str:
    varying = labels.varying_fields(records)
    config = records[0].get("config") or {}
    same = [f"{f}={config.get(f)}" for f in CONFIG_FIELDS
            if f not in varying + list(labels.SIZE_FIELDS + labels.NOT_A_VARIANT) and config.get(f) not in (None, "")]
    return "Same for every row: " + ", ".join(same)


# ---- one sweep -----------------------------------------------------------------------------------------------

def sweep_table(ok: list[dict], fields: list[str]) -> tuple[str, list[str]]:
    """The markdown table of the ok rows, smallest size first, and lines for rows still warming up."""
    order = {size: i for i, size in enumerate(labels.size_order(ok))}
    ok = sorted(ok, key=lambda r: (order[r["config"]["size"]],
                                   labels.sort_key(tuple(r["config"].get(f) for f in fields[1:]))))
    # forward, backward and optimizer are always columns ("-" where a mode skips one: the tables of every file
    # written before other phases existed read as they did); a later phase (sync) is one where some row timed it
    phases = [(field, name) for field, name in plots.PHASES
              if name in ALWAYS_SHOWN_PHASES or any(r.get(field) for r in ok)]
    rows, late = [], []
    for r in ok:
        steps = counted_step_times(r)  # the steps the statistics count (past profiled ones)
        counted = {phase_field(phase): times for phase, times in counted_phase_times(r).items()}
        q20, q50, q80 = np.percentile(steps, [20, 50, 80]) if steps.size else (np.nan,) * 3
        warmup = len(step_curve(r)) - measured_step_times(r).size
        start = steady_start(step_curve(r))
        steady = "never" if start is None else str(start)
        if start is None or start > warmup:
            late.append(f"- {labels.config_label(r, fields)}: steady from step {steady}, after {warmup} warm-up steps")
            steady += " (late)"
        mfu = r.get("mfu")
        rows.append([*(r["config"].get(f) for f in fields)]
                    + [fmt(np.median(counted[p]), 1e3, 2) if counted.get(p) else "-" for p, _ in phases]
                    + [fmt(q50, 1e3, 2), fmt((q80 - q20) / q50, 100), fmt(r.get("tokens_per_second"), 1, 0),
                       fmt(r.get("tflops")), fmt(mfu, 100) if mfu is not None else "-",
                       fmt(r.get("speed_of_light_pct")), fmt(r.get("peak_memory_bytes"), 1 / plots.GIB, 2), steady])
    headers = fields + [f"{PHASE_ABBREVIATIONS.get(name, name)} ms" for _, name in phases] + [
        "step ms", "p20-p80 %", "tokens/s", "TFLOP/s", "MFU %", "SOL %", "peak GiB", "steady from step"]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True), late


def sweep_report(path: str, records: list[dict], warnings: list[str], out: str,
                 link_peak_gbps: float | None = None) -> str:
    benchmark = [r for r in records if not distributed.is_collective(r)]
    if benchmark:
        lines = benchmark_sections(path, benchmark, out)
    else:
        lines = [f"# Collectives report: {path}", "", environment_line(records)]
    more = distributed.distributed_sections(records, out, link_peak_gbps)
    if more:
        lines += ["", *more]
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in warnings)]
    return "\n".join(lines).rstrip("\n") + "\n"


def benchmark_sections(path: str, records: list[dict], out: str) -> list[str]:
    fields = ["size"] + labels.varying_fields(records)
    ok = [r for r in records if labels.is_ok(r)]
    lines = [f"# Benchmark report: {path}", "", labels.subtitle(records), "", environment_line(records), "",
             constant_line(records), "", f"{len(records)} configurations: {len(ok)} ok, {len(records) - len(ok)} "
             "not ok.", ""]
    if ok:
        table, late = sweep_table(ok, fields)
        lines += ["## Results (medians over the measured steps; step = forward + backward + optimizer)", "", table,
                  "", "## Warm-up", ""]
        lines += (["These configurations were not steady when measurement began; their medians include warm-up "
                   "(rerun with more warm-up steps):", *late] if late
                  else ["Every configuration was steady by the end of its warm-up steps."])
        lines += ["", "## Plots", ""]
        for name, plot in SWEEP_PLOTS:
            plot(ok + [r for r in records if not labels.is_ok(r)], os.path.join(out, name))
            lines.append(f"![{name[:-4]}]({name})")
    else:
        lines.append("No configuration ran ok: nothing to tabulate or plot.")
    found = anomalies(records)
    if found:
        lines += ["", "## Rows that look wrong (measure again; look at a trace)", "",
                  *(f"- {labels.config_label(r, fields)}: {w}" for r, w in found)]
    failed = failed_lines(records, fields)
    if failed:
        lines += ["", "## Not ok (listed here, not plotted)", "", *failed]
    return lines


# ---- two sweeps ----------------------------------------------------------------------------------------------

def why_nothing_in_common(records_a: list[dict], records_b: list[dict], ignored: tuple[str, ...]) -> str:
    disjoint = []
    for field in CONFIG_FIELDS:
        a, b = (set(compare.distinct_values(rs, field, "config")) for rs in (records_a, records_b))
        if field not in ignored and not a & b:
            disjoint.append(f"{field}: A {', '.join(sorted(a))}, B {', '.join(sorted(b))}")
    reason = f" ({'; '.join(disjoint)})" if disjoint else ""
    return f"no configuration in common{reason}; --ignore FIELD matches configurations across a field"


def comparison_report(paths: list[str], sweep_a: Sweep, sweep_b: Sweep, ignored: tuple[str, ...],
                      min_effect: float, out: str, pair_on: str = "") -> str:
    """The A/B report; `pair_on`, a config field in `ignored`, is named in each pair's label with A's and B's value."""
    records_a, records_b = sweep_a.records, sweep_b.records
    pairs, only_a, only_b = compare.match(records_a, records_b, ignored)
    fields = ["size"] + [f for f in labels.varying_fields([a for _, a, _ in pairs] + [b for _, _, b in pairs])
                         if f not in ignored]

    def pair_label(a, b):
        label = labels.config_label(a, fields)
        if pair_on:
            label += f"; {pair_on}: {(a.get('config') or {}).get(pair_on)} vs {(b.get('config') or {}).get(pair_on)}"
        return label

    gpu_a, gpu_b = compare.gpu_label(records_a), compare.gpu_label(records_b)
    lines = []
    if gpu_a != gpu_b:
        lines += [f"**Different GPUs: A ran on {gpu_a}, B on {gpu_b}; every ratio below mixes the hardware "
                  "difference with any software change.**", ""]
    paired = f"Rows are paired across {pair_on} (A's value against B's) and " if pair_on else "Configurations "
    lines += [f"# A/B comparison: B = {paths[1]} against A = {paths[0]}", "",
              f"{paired}match on every config field except {', '.join(ignored)}: {len(pairs)} in common, "
              f"{len(only_a)} only in A, {len(only_b)} only in B.", "",
              f"Method: ratio of median step time (forward + backward + optimizer per measured step) B/A; "
              f"{compare.CONFIDENCE:.0%} percentile bootstrap CI ({compare.N_BOOTSTRAP} resamples, seed "
              f"{compare.SEED}). A row is faster or slower only if the CI excludes 1 and the change is at least "
              f"{min_effect:.0%} and beyond the run-to-run noise (column `noise`): the spread of a configuration's "
              f"repeated runs when both files repeat it, else {compare.SINGLE_RUN_NOISE:.0%}, as two processes of the "
              "same code differed; no verdict for a row measured on a busy host. Run the same command again into "
              "the same file to resolve smaller changes (src/reports/compare.py).",
              "", "## Environment", ""]
    differ, same = compare.environment_differences(records_a, records_b, ignored)
    if differ:
        lines += [tabulate([[f, ", ".join(a), ", ".join(b)] for f, a, b in differ], ["differs", "A", "B"],
                           tablefmt="github"), ""]
    lines += [f"Same in both: {', '.join(same) or 'nothing'}.", "", "## Results", ""]
    rows, plotted, skipped, counts, traced = [], [], [], {}, []
    for _, a, b in pairs:
        label = pair_label(a, b)
        if not (labels.is_ok(a) and labels.is_ok(b)):
            skipped.append(f"- {label}: A {a.get('status') or 'no status'}, B {b.get('status') or 'no status'}")
            continue
        # Traces are compared whether or not the step times allow a verdict: a traced row measures few steps (the
        # profiled ones and the next are left out of its statistics), and its categories are what the user asks.
        traced.append((label, a, b))
        runs_a, runs_b = sweep_a.runs_of(a), sweep_b.runs_of(b)
        try:
            est = compare.compare_samples(runs_a, runs_b, min_effect, busy_host=bool(host_busy(a) or host_busy(b)))
        except ValueError as e:
            both_traced = compare.has_trace(a) and compare.has_trace(b)
            skipped.append(f"- {label}: {e}{'; its traces are compared above' if both_traced else ''}")
            continue
        counts[est.verdict] = counts.get(est.verdict, 0) + 1
        plotted.append((label, est))
        pooled_a, pooled_b = np.concatenate(runs_a), np.concatenate(runs_b)
        rows.append([label, fmt(np.median(pooled_a), 1e3, 2), fmt(np.median(pooled_b), 1e3, 2), f"{est.ratio:.3f}",
                     f"{est.low:.3f}-{est.high:.3f}", est.noise, est.verdict])
    if rows:
        lines += [tabulate(rows, ["configuration", "A step ms", "B step ms", "B/A", "95% CI", "noise", "verdict"],
                           tablefmt="github", disable_numparse=True), "",
                  "Summary: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", ""]
        title = (f"Median step time, B against A\nA: {os.path.basename(paths[0])} ({gpu_a})   "
                 f"B: {os.path.basename(paths[1])} ({gpu_b})")
        plots.plot_ratios(plotted, min_effect, title, os.path.join(out, "ratios.png"))
        lines += ["![ratios](ratios.png)", ""]
    else:
        lines += ["No configuration in common ran ok in both: nothing to compare.", ""]
    lines += where_the_time_went(traced)
    if skipped:
        lines += ["## Not compared (listed here, not plotted)", "", *skipped, ""]
    # a row's key holds its matched fields only: the ignored ones (pair_on among them) are not in it
    label_fields = ["size"] + [f for f in labels.varying_fields(records_a + records_b) if f not in ignored]
    for name, keys in (("A", only_a), ("B", only_b)):
        if keys:
            names = [labels.config_label({"config": dict(key)}, label_fields) for key in keys]
            lines += [f"## Only in {name}", "", *(f"- {label}" for label in names), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


PHASE_CELLS = 6  # phase x category cells shown per pair: 24 would bury the few that differ


def where_the_time_went(pairs: list[tuple[str, dict, dict]]) -> list[str]:
    """Per compared pair that both ran with --trace: ms per profiled step by category (idle among them), launches,
    the phase x category cells and the kernels that differ most (src/reports/compare.py trace_differences)."""
    both = [(label, a, b) for label, a, b in pairs if compare.has_trace(a) and compare.has_trace(b)]
    one = [label for label, a, b in pairs if compare.has_trace(a) != compare.has_trace(b)]
    if not both and not one:
        return []
    lines = ["## Where the time went (--trace, ms per profiled step)", "",
             "From each row's trace: busy time by category (GPU kernel time on CUDA, self CPU time of ops on CPU) "
             "and idle (the harness's step time less busy: on CUDA the GPU waiting for the host, launch overhead, "
             "which shows as many small kernels and idle), per profiled step, largest difference first. The step "
             "here is the harness's time of the profiled steps, profiler overhead included, so it can differ from "
             "the median above; the shares of its difference add up to 100%.", ""]
    for label, a, b in both:
        step = b["trace_step_ms"] - a["trace_step_ms"]
        share = lambda v: "-" if v is None else f"{100 * v:.1f}%"
        rows = [[name, fmt(x, 1, 3), fmt(y, 1, 3), f"{d:+.3f}", share(v)]
                for name, x, y, d, v in compare.trace_differences(a, b)]
        rows.append(["**step**", fmt(a["trace_step_ms"], 1, 3), fmt(b["trace_step_ms"], 1, 3), f"{step:+.3f}",
                     "100.0%" if step else "-"])
        ka, kb = a.get("trace_kernels_per_step"), b.get("trace_kernels_per_step")
        what = "kernels" if a.get("trace_device") == "cuda" else "ops"
        rows.append([f"{what} per step", fmt(ka, 1, 0), fmt(kb, 1, 0),
                     f"{kb - ka:+,.0f}" if None not in (ka, kb) else "-", ""])
        lines += [f"### {label}", "",
                  f"A: {a.get('trace_steps')} profiled step(s) on {a.get('trace_device')}, B: {b.get('trace_steps')} "
                  f"on {b.get('trace_device')}.", ""]
        if a.get("trace_device") != b.get("trace_device"):
            lines += ["**A and B were traced on different devices: their busy times measure different things.**", ""]
        lines += [tabulate(rows, ["category", "A ms/step", "B ms/step", "B-A ms", "share of step difference"],
                           tablefmt="github", disable_numparse=True), ""]
        waits = compare.host_wait_differences(a, b)
        if waits:
            lines += ["Host waits that differ (each drains the launch queue, so the GPU idles while the host "
                      "catches up):", "", tabulate([[key, fmt(x, 1, 1), fmt(y, 1, 1)] for key, x, y in waits],
                                                  ["host wait", "A calls/step", "B calls/step"],
                                                  tablefmt="github", disable_numparse=True), ""]
        cells = compare.phase_category_differences(a, b, PHASE_CELLS)
        if cells:
            lines += [tabulate([[p, c, fmt(x, 1, 3), fmt(y, 1, 3), f"{d:+.3f}"] for p, c, x, y, d in cells],
                               ["phase", "category", "A ms/step", "B ms/step", "B-A ms"], tablefmt="github",
                               disable_numparse=True), ""]
        kernels = compare.kernel_differences(a, b)
        if kernels:
            shown = lambda name: f"`{name if len(name) <= 90 else name[:87] + '...'}`"
            lines += [tabulate([[shown(name), fmt(x, 1, 3) if x is not None else "not listed",
                                 fmt(y, 1, 3) if y is not None else "not listed", f"{bound}{d:+.3f}"]
                                for name, x, y, d, bound in kernels],
                               [f"{what[:-1]} (largest differences)", "A ms/step", "B ms/step", "B-A ms"],
                               tablefmt="github", disable_numparse=True), ""]
            if any(bound for *_, bound in kernels):
                lines += ["A row lists only its largest kernels: one it did not list ran less than its smallest "
                          "listed one, so B-A is bounded (`>` or `<`), computed with that smallest time.", ""]
    lines += [f"- {label}: only one side ran with --trace; trace both to see where the time went" for label in one]
    return lines + ([""] if one else [])
