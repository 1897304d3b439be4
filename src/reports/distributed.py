"""The report's multi-process figures and tables: scaling with world size, measured overlap, collective bandwidth.

Which rows feed which figure, by the fields they carry:
- scaling:   benchmark rows with `config.parallel`; world size from the row's `world_size` (else
             `config.nproc_per_node`, else 1); tokens/s per GPU from `tokens_per_second_per_gpu` (else the
             group's `tokens_per_second` / world size). Efficiency = tokens/s per GPU at n / at world size 1 of
             the same configuration (same strategy, else `parallel=none`), when the sweep has it.
- overlap:   rows with `compute_time_s`, `comm_time_s`, `overlap_time_s`, `exposed_comm_time_s` (seconds per
             step, src/instruments/overlap.py): stacked compute only / overlapped / exposed communication.
- bandwidth: collective rows (`kind` == "collective", python -m src.profiling.collectives): bus bandwidth against
             size, one line per operation x world size, the link's peak dashed when given.
- pick:      per world size (and whatever else varies), the fastest strategy that ran ok, its margin over the
             next, and the ones that ran out of memory (src/reports/pick.py).
A scaling efficiency above anomalies.EFFICIENCY_CEILING is flagged under the table: it cannot be a real speed-up.
A CSV file keeps unknown config fields as plain columns, so every field is looked up in `config`, then the row.
"""

import os

import numpy as np
from tabulate import tabulate

from src.harness.record import world_size_of
from src.reports.anomalies import efficiency_above_one
from src.reports.compare import SINGLE_RUN_NOISE, gpu_label, normalized
from src.reports.labels import field_label, is_ok, short_status, sort_key
from src.reports.pick import Choice, describe, pick
from src.reports.plots import SERIES_COLORS, legend_below, panel_grid, save

OVERLAP_FIELDS = ("compute_time_s", "comm_time_s", "overlap_time_s", "exposed_comm_time_s")
OVERLAP_COLORS = ("#4C72B0", "#8172B3", "#C44E52")  # compute only, overlapped, exposed communication
WORLD_FIELDS = ("world_size", "nproc_per_node")  # the x axis of scaling, never a series
COLLECTIVE_KEY = ("op", "size_bytes", "dtype", "world_size", "dist_backend", "device")


def format_bytes(nbytes: int) -> str:
    # imported on use: src.distributed loads torch, which a report of benchmark rows alone never needs
    from src.distributed.comm_range import format_bytes as format_with_units

    return format_with_units(nbytes)


def value(record: dict, field: str):
    config = record.get("config") or {}
    return normalized(config[field]) if field in config else normalized(record.get(field))


def is_collective(record: dict) -> bool:
    return value(record, "kind") == "collective"


def tokens_per_gpu(record: dict) -> float | None:
    per_gpu = value(record, "tokens_per_second_per_gpu")
    if per_gpu is not None:
        return float(per_gpu)
    group = value(record, "tokens_per_second")
    return float(group) / world_size_of(record) if group is not None else None


def _varying(records: list[dict], leave_out=()) -> list[str]:
    """Config fields with more than one value across `records`, in first-seen order."""
    fields = list(dict.fromkeys(k for r in records for k in (r.get("config") or {})))
    return [f for f in fields if f not in leave_out and len({str(value(r, f)) for r in records}) > 1]


def _label(record: dict, fields: list[str]) -> str:
    return ", ".join(field_label(f, value(record, f)) for f in fields) or "all rows"


# ---- scaling -------------------------------------------------------------------------------------------------

def scaling_records(records: list[dict]) -> list[dict]:
    return [r for r in records if is_ok(r) and value(r, "parallel") is not None and tokens_per_gpu(r)]


def _series_fields(records: list[dict]) -> list[str]:
    """The strategy, then what else varies; the backend only where it varies among multi-process rows (a
    single process has none, which must not split it from its own scaling line)."""
    fields = ["parallel"] + _varying(records, leave_out=("parallel", "dist_backend", *WORLD_FIELDS))
    backend_varies = "dist_backend" in _varying([r for r in records if world_size_of(r) > 1])
    return fields + (["dist_backend"] if backend_varies else [])


def scaling_table(records: list[dict]) -> list[tuple[str, int, float, float | None]]:
    """(series, world size, tokens/s per GPU, efficiency against world size 1 or None), series then n sorted."""
    rows = scaling_records(records)
    fields = _series_fields(rows)
    other = [f for f in fields if f not in ("parallel", "dist_backend")]
    single = {}  # (series without the strategy, strategy) -> tokens/s per GPU at world size 1
    for r in rows:
        if world_size_of(r) == 1:
            single[(tuple(str(value(r, f)) for f in other), str(value(r, "parallel")))] = tokens_per_gpu(r)
    out = []
    for r in rows:
        key = tuple(str(value(r, f)) for f in other)
        base = single.get((key, str(value(r, "parallel")))) or single.get((key, "none"))
        per_gpu = tokens_per_gpu(r)
        out.append((_label(r, fields), world_size_of(r), per_gpu, per_gpu / base if base else None))
    return sorted(out, key=lambda row: sort_key((row[0], row[1])))


def plot_scaling(records: list[dict], path: str) -> str:
    table = scaling_table(records)
    series = list(dict.fromkeys(label for label, *_ in table))
    fig, (ax,) = panel_grid(1, 1, 4.5, f"Tokens/s per GPU against world size\n{gpu_label(records)}")
    handles = []
    for i, name in enumerate(series):
        points = [(n, per_gpu) for label, n, per_gpu, _ in table if label == name]
        handles += ax.plot(*zip(*points), marker="o", color=SERIES_COLORS[i % len(SERIES_COLORS)], label=name)
    sizes = sorted({n for _, n, _, _ in table})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("world size (processes)")
    ax.set_ylabel("tokens/s per GPU")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    legend_below(fig, handles)
    return save(fig, path)


def scaling_markdown(records: list[dict]) -> str:
    rows = [[label, n, f"{per_gpu:,.0f}", f"{100 * eff:.0f}%" if eff is not None else "-"]
            for label, n, per_gpu, eff in scaling_table(records)]
    return tabulate(rows, ["configuration", "world size", "tokens/s per GPU", "scaling efficiency"],
                    tablefmt="github", disable_numparse=True)


def scaling_warnings(records: list[dict]) -> list[str]:
    """A line per scaling-table row whose efficiency is too high to be real (src/reports/anomalies.py)."""
    return [f"- {label}, n={n}: {warning}" for label, n, _, eff in scaling_table(records)
            if (warning := efficiency_above_one(eff))]


# ---- which strategy to pick ----------------------------------------------------------------------------------

def pick_lines(records: list[dict]) -> list[str]:
    """Per world size (and other varying settings) with two strategies or more: the fastest that ran ok, by its
    tokens/s per GPU, its margin over the next, and those that ran out of memory. Failed rows are not options."""
    rows = [r for r in records if value(r, "parallel") is not None and not is_collective(r)
            and (is_ok(r) and tokens_per_gpu(r) or short_status(r) == "OOM")]
    other = [f for f in _series_fields(rows) if f not in ("parallel", "dist_backend")]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((world_size_of(r), tuple(str(value(r, f)) for f in other)), []).append(r)
    lines = []
    for (n, _), group in sorted(groups.items(), key=lambda item: sort_key((item[0][0], *item[0][1]))):
        if len({str(value(r, "parallel")) for r in group}) < 2:
            continue
        choices = [Choice(str(value(r, "parallel")), tokens_per_gpu(r) if is_ok(r) else None, is_ok(r)) for r in group]
        where = ", ".join([f"n={n}", *(field_label(f, value(group[0], f)) for f in other)])
        lines.append(f"- {where}: {describe(pick(choices), SINGLE_RUN_NOISE, choices)}")
    return lines


# ---- overlap -------------------------------------------------------------------------------------------------

def overlap_records(records: list[dict]) -> list[dict]:
    return [r for r in records if all(value(r, f) is not None for f in OVERLAP_FIELDS)]


def overlap_table(records: list[dict]) -> list[tuple[str, float, float, float, float]]:
    """(configuration, compute only, overlapped, exposed communication, share of communication hidden) per step."""
    rows = overlap_records(records)
    fields = _series_fields(rows)
    out = []
    for r in rows:
        compute, comm, both, exposed = (float(value(r, f)) for f in OVERLAP_FIELDS)
        label = f"{_label(r, fields)}, n={world_size_of(r)}"
        out.append((label, compute - both, both, exposed, both / comm if comm else None))
    return out


def plot_overlap(records: list[dict], path: str) -> str:
    table = overlap_table(records)
    height = 1.5 + 0.45 * len(table)
    fig, (ax,) = panel_grid(1, 1, height, f"Compute and communication per step, from the profiler traces\n"
                                          f"{gpu_label(records)}")
    y = np.arange(len(table))
    left = np.zeros(len(table))
    names = ("compute only", "overlapped (communication hidden)", "exposed communication")
    for column, (name, color) in enumerate(zip(names, OVERLAP_COLORS)):
        widths = np.array([row[1 + column] for row in table]) * 1e3
        ax.barh(y, widths, left=left, color=color, label=name)
        left += widths
    for i, row in enumerate(table):
        if row[4] is not None:
            ax.text(left[i], i, f"  {100 * row[4]:.0f}% hidden", va="center", fontsize=8)
    ax.set_yticks(y, [row[0] for row in table])
    ax.invert_yaxis()
    ax.set_xlabel("ms per step (busy time: compute or communication active)")
    ax.set_xlim(right=left.max() * 1.2 if len(left) and left.max() > 0 else 1)
    legend_below(fig, ax.get_legend_handles_labels()[0])
    return save(fig, path)


def overlap_markdown(records: list[dict]) -> str:
    rows = [[label, f"{compute * 1e3:.2f}", f"{both * 1e3:.2f}", f"{exposed * 1e3:.2f}",
             f"{100 * hidden:.0f}%" if hidden is not None else "-"]
            for label, compute, both, exposed, hidden in overlap_table(records)]
    return tabulate(rows, ["configuration", "compute only ms", "overlapped ms", "exposed comm ms", "comm hidden"],
                    tablefmt="github", disable_numparse=True)


# ---- collectives ---------------------------------------------------------------------------------------------

def latest_collectives(records: list[dict]) -> list[dict]:
    """One collective row per (op, size, dtype, world size, backend, device): the last ok one, else the last."""
    chosen = {}
    for r in records:
        key = tuple(str(value(r, f)) for f in COLLECTIVE_KEY)
        if key not in chosen or is_ok(r) or not is_ok(chosen[key]):
            chosen[key] = r
    return list(chosen.values())


def _bandwidth_series(records: list[dict]) -> dict[tuple, list[dict]]:
    """(panel label, line label) -> ok rows by size; panels split by dtype and backend where they vary."""
    ok = [r for r in records if is_collective(r) and is_ok(r) and value(r, "busbw_gbps") is not None]
    panel_fields = _varying(ok, leave_out=("op", "size_bytes", "world_size", "iters", "warmup"))
    series: dict[tuple, list[dict]] = {}
    for r in ok:
        panel = _label(r, panel_fields) if panel_fields else ""
        line = f"{value(r, 'op')}, n={world_size_of(r)}"
        series.setdefault((panel, line), []).append(r)
    for rows in series.values():
        rows.sort(key=lambda r: value(r, "size_bytes"))
    return dict(sorted(series.items(), key=lambda item: sort_key(item[0])))


def plot_bus_bandwidth(records: list[dict], path: str, link_peak_gbps: float | None = None) -> str:
    series = _bandwidth_series(records)
    panels = list(dict.fromkeys(panel for panel, _ in series))
    common = [f"{field_label(f, value(records[0], f))}" for f in ("dist_backend", "dtype")
              if len({str(value(r, f)) for r in records if is_collective(r)}) == 1]
    fig, axes = panel_grid(len(panels), 2, 4.0, "Bus bandwidth against size (nccl-tests' busbw)\n"
                           + " | ".join([gpu_label([r for r in records if is_collective(r)]), *common]))
    lines = list(dict.fromkeys(line for _, line in series))
    colors = {line: SERIES_COLORS[i % len(SERIES_COLORS)] for i, line in enumerate(lines)}
    handles = {}
    for ax, panel in zip(axes, panels):
        for (p, line), rows in series.items():
            if p == panel:
                handles[line], = ax.plot([value(r, "size_bytes") for r in rows], [value(r, "busbw_gbps") for r in rows],
                                         marker="o", markersize=3, color=colors[line], label=line)
        if link_peak_gbps:
            handles["peak"] = ax.axhline(link_peak_gbps, color="black", linestyle="--",
                                         label=f"link peak {link_peak_gbps:g} GB/s")
        sizes = sorted({value(r, "size_bytes") for (p, _), rows in series.items() if p == panel for r in rows})
        ax.set_xscale("log", base=2)
        ticks = sizes[::max(1, len(sizes) // 8)]
        ax.set_xticks(ticks, [format_bytes(s) for s in ticks], fontsize=8)
        ax.set_xlabel("size (nccl-tests' convention: the whole tensor)")
        ax.set_ylabel("busbw GB/s")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if panel:
            ax.set_title(panel, fontsize=10)
    legend_below(fig, list(handles.values()))
    return save(fig, path)


def bandwidth_markdown(records: list[dict], link_peak_gbps: float | None = None) -> str:
    """Per line of the figure: the best bus bandwidth, the size it came at, and its share of the link's peak."""
    rows = []
    for (panel, line), series in _bandwidth_series(records).items():
        best = max(series, key=lambda r: value(r, "busbw_gbps"))
        busbw = value(best, "busbw_gbps")
        rows.append([", ".join(p for p in (line, panel) if p), f"{busbw:.3g}", format_bytes(value(best, "size_bytes")),
                     f"{100 * busbw / link_peak_gbps:.0f}%" if link_peak_gbps else "-"])
    return tabulate(rows, ["operation", "best busbw GB/s", "at size", "of link peak"], tablefmt="github",
                    disable_numparse=True)


def collectives_failed(records: list[dict]) -> list[str]:
    return [f"- {value(r, 'op')}, n={world_size_of(r)}, {format_bytes(value(r, 'size_bytes') or 0)}: {r.get('status')}"
            for r in records if is_collective(r) and not is_ok(r)]


def distributed_sections(records: list[dict], out: str, link_peak_gbps: float | None = None) -> list[str]:
    """The report's markdown lines and PNGs for whichever of the three kinds of rows `records` holds."""
    lines = []
    if len({world_size_of(r) for r in scaling_records(records)}) > 1:
        plot_scaling(records, os.path.join(out, "scaling.png"))
        lines += ["## Scaling", "", scaling_markdown(records), ""]
        warnings = scaling_warnings(records)
        if warnings:
            lines += ["Rows that look wrong (measure again, on an idle host):", "", *warnings, ""]
        lines += ["![scaling](scaling.png)", ""]
    picks = pick_lines(records)
    if picks:
        lines += ["## Which strategy to pick (the fastest that fits in memory)", "", *picks, ""]
    if overlap_records(records):
        plot_overlap(records, os.path.join(out, "overlap.png"))
        lines += ["## Communication overlap (per step, averaged over ranks)", "", overlap_markdown(records), "",
                  "![overlap](overlap.png)", ""]
    collectives = latest_collectives([r for r in records if is_collective(r)])
    if collectives:
        if any(is_ok(r) for r in collectives):
            plot_bus_bandwidth(collectives, os.path.join(out, "bus_bandwidth.png"), link_peak_gbps)
            lines += ["## Collectives", "", bandwidth_markdown(collectives, link_peak_gbps), "",
                      "![bus bandwidth](bus_bandwidth.png)", ""]
        failed = collectives_failed(collectives)
        if failed:
            lines += ["### Collectives not ok", "", *failed, ""]
    return lines
