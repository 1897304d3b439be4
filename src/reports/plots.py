"""The report's figures, one PNG each: phase times, throughput, peak memory, warm-up curves, A/B ratios.

Every function takes records that are already one per configuration and writes one PNG of a fixed width
(WIDTH_IN x DPI pixels) and a height that grows with the number of panels or rows. Sizes go left to right
by parameter count. Configuration fields that vary within the sweep become panels or series; the ones that
do not are said once in the title, next to the GPU. Rows whose status is not ok are marked by their status
(e.g. "OOM") where their bar or point would be, never drawn as zero.
"""

import math

import matplotlib
import numpy as np

from src.harness.record import PHASES as STEP_PHASES, measured_step_times, phase_field
from src.reports.compare import FASTER, SAME, SLOWER, RatioEstimate
from src.reports.labels import (config_label, distinct, field_label, find, is_ok, short_status, size_order,
                                subtitle, varying_fields)
from src.reports.steady_state import steady_band, step_curve, steady_start

matplotlib.use("Agg")  # the report runs on headless machines; choose the backend before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

DPI = 100
WIDTH_IN = 12.0
GIB = 2**30
PHASES = tuple((phase_field(p), p) for p in STEP_PHASES)  # (record field, legend name)
# (colour when one series, hatch when several) per phase, by name: a phase added to src/spec.py's PHASES needs
# its entry here, or its bars would borrow another phase's look (a KeyError says so first)
PHASE_STYLES = {"forward": ("#4C72B0", ""), "backward": ("#DD8452", "//"), "sync": ("#8172B3", "xx"),
                "optimizer": ("#55A868", "..")}
SERIES_COLORS = plt.get_cmap("tab10").colors
FAILED_COLOR = "#C44E52"
Y_CLIP = 2.5  # warm-up plots show steps up to 2.5x the steady level; slower ones are clipped and labelled


def panel_grid(n_panels: int, ncols: int, panel_height_in: float, title: str):
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH_IN, panel_height_in * nrows + 1.2), dpi=DPI,
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, list(axes.flat[:n_panels])


def save(fig, path: str) -> str:
    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": the image keeps the size the figure was given
    plt.close(fig)
    return path


def legend_below(fig, handles: list, fontsize: int = 9) -> None:
    """A legend under the panels, in as many columns as fit the figure's width (long labels wrap to rows)."""
    longest = max(len(h.get_label()) for h in handles)
    column_in = 0.6 + longest * fontsize * 0.55 / 72  # swatch + text; a character is ~0.55 em wide
    ncols = max(1, min(len(handles), int((WIDTH_IN - 0.5) // column_in)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=fontsize)


def mark_failed(ax, x: float, record: dict, y_axes: float = 0.03, color: str = FAILED_COLOR) -> None:
    """Write the status where the bar or point would be, from the bottom of the axes up."""
    ax.text(x, y_axes, short_status(record), transform=ax.get_xaxis_transform(), rotation=90, ha="center",
            va="bottom", color=color, fontsize=8, fontweight="bold")


def peak_tflops(record: dict) -> float | None:
    # the peak the run used; an old or hand-written file may only have the --peak_tflops override
    return record.get("device_peak_tflops") or (record.get("config") or {}).get("peak_tflops")


def median_ms(record: dict, field: str) -> float:
    values = record.get(field) or []
    return float(np.median(values)) * 1e3 if values else 0.0


# ---- the figures ---------------------------------------------------------------------------------------------

def plot_phase_times(records: list[dict], path: str) -> str:
    """Median time per step, stacked by phase, per size; one panel per context length / precision."""
    varying = varying_fields(records)
    panel_fields = [f for f in ("context_length", "precision") if f in varying]
    series_fields = [f for f in varying if f not in panel_fields]
    panels, series, sizes = distinct(records, panel_fields), distinct(records, series_fields), size_order(records)
    fig, axes = panel_grid(len(panels), 3, 3.8, "Median time per step by phase\n" + subtitle(records))
    width = 0.8 / len(series)
    for ax, panel in zip(axes, panels):
        for s, series_key in enumerate(series):
            for x, size in enumerate(sizes):
                where = dict(zip(panel_fields + series_fields, panel + series_key), size=size)
                record, pos = find(records, **where), x - 0.4 + width * (s + 0.5)
                if record is None:
                    continue
                if not is_ok(record):
                    mark_failed(ax, pos, record)
                    continue
                bottom = 0.0
                for field, name in PHASES:
                    height = median_ms(record, field)
                    if not height:  # a phase this mode does not run (forward-only)
                        continue
                    color, hatch = ((PHASE_STYLES[name][0], None) if len(series) == 1
                                    else (SERIES_COLORS[s % 10], PHASE_STYLES[name][1]))
                    ax.bar(pos, height, width * 0.9, bottom=bottom, color=color, hatch=hatch,
                           edgecolor="white", linewidth=0.5)
                    bottom += height
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_xlim(-0.5, len(sizes) - 0.5)  # status labels of failed rows do not widen the axes by themselves
        ax.set_title(", ".join(field_label(f, v) for f, v in zip(panel_fields, panel)))
        ax.set_ylabel("time per step (ms)")
        ax.set_xlabel("model size")
        ax.grid(axis="y", alpha=0.3)
    ran = [name for field, name in PHASES if any(r.get(field) for r in records)]  # forward-only: one phase
    if len(series) == 1:
        handles = [Patch(color=PHASE_STYLES[name][0], label=name) for name in ran]
    else:
        handles = [Patch(facecolor="gray", hatch=PHASE_STYLES[name][1], edgecolor="white", label=name)
                   for name in ran]
        handles += [Patch(color=SERIES_COLORS[s % 10], label=", ".join(field_label(f, v) for f, v in
                                                                        zip(series_fields, k)))
                    for s, k in enumerate(series)]
    legend_below(fig, handles)
    return save(fig, path)


def plot_throughput(records: list[dict], path: str) -> str:
    """Per size: achieved TFLOP/s (left), MFU and speed-of-light % (right); a row per precision, a line per variant.

    Precisions get rows of their own because their peaks differ ~15x (fp32 67 vs bf16 989 TFLOP/s on an H100):
    on one axis the fp32 lines would lie flat on the floor.
    """
    varying, sizes = varying_fields(records), size_order(records)
    panel_fields = [f for f in ("precision",) if f in varying]
    series_fields = [f for f in varying if f not in panel_fields]
    panels, series = distinct(records, panel_fields), distinct(records, series_fields)
    fig, axes = panel_grid(2 * len(panels), 2, 3.6, "Achieved throughput\n" + subtitle(records))
    for p, panel in enumerate(panels):
        left, right = axes[2 * p], axes[2 * p + 1]
        in_panel = [r for r in records if all(r["config"].get(f) == v for f, v in zip(panel_fields, panel))]
        for s, key in enumerate(series):
            color = SERIES_COLORS[s % 10]
            rows = [find(in_panel, size=size, **dict(zip(series_fields, key))) for size in sizes]
            ok = {x: r for x, r in enumerate(rows) if r is not None and is_ok(r)}

            def line(ax, field, scale, **style):
                # NaN where a size is missing or failed: the line breaks there instead of bridging the gap
                ys = [ok[x].get(field) if x in ok else None for x in range(len(sizes))]
                ax.plot(range(len(sizes)), [np.nan if y is None else y * scale for y in ys], color=color, **style)

            line(left, "tflops", 1.0, marker="o")
            line(right, "mfu", 100.0, marker="o")
            line(right, "speed_of_light_pct", 1.0, marker="^", linestyle="--")
            for x, r in enumerate(rows):
                if r is not None and not is_ok(r):
                    for ax in (left, right):  # side by side, centred on the size, when several variants failed
                        mark_failed(ax, x + 0.12 * (s - (len(series) - 1) / 2), r, color=color)
        peaks = sorted({peak_tflops(r) for r in in_panel if is_ok(r) and peak_tflops(r)})
        mfu = (f"MFU (peak {', '.join(f'{v:.0f}' for v in peaks)} TFLOP/s) and speed of light" if peaks
               else "speed of light (no MFU: peak TFLOP/s unknown for this device)")
        where = ", ".join(field_label(f, v) for f, v in zip(panel_fields, panel))
        left.set_title(f"{where + ': ' if where else ''}achieved TFLOP/s (model FLOPs / median step)", fontsize=10)
        left.set_ylabel("TFLOP/s")
        right.set_title(f"{where + ': ' if where else ''}{mfu}", fontsize=10)
        right.set_ylabel("% of peak / of speed of light")
        for ax in (left, right):
            ax.set_xticks(range(len(sizes)), sizes)
            ax.set_xlim(-0.5, len(sizes) - 0.5)
            ax.set_xlabel("model size")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=SERIES_COLORS[s % 10], marker="o",
                          label=", ".join(field_label(f, v) for f, v in zip(series_fields, key)) or "measured")
               for s, key in enumerate(series)]
    handles += [plt.Line2D([], [], color="gray", marker="o", label="MFU: achieved / peak TFLOP/s"),
                plt.Line2D([], [], color="gray", marker="^", linestyle="--",
                           label="speed of light: ideal step time / measured")]
    legend_below(fig, handles)
    return save(fig, path)


def plot_memory(records: list[dict], path: str) -> str:
    """Peak memory per size and context length (bars), the analytic estimate, OOMs, and the device's memory."""
    varying = varying_fields(records)
    panel_fields = [f for f in ("precision",) if f in varying]
    series_fields = [f for f in varying if f not in panel_fields]
    panels, series, sizes = distinct(records, panel_fields), distinct(records, series_fields), size_order(records)
    device_gib = max(((r.get("env") or {}).get("gpu_memory_bytes") or 0) for r in records) / GIB
    fig, axes = panel_grid(len(panels), 2, 4.2, "Peak memory\n" + subtitle(records))
    width = 0.8 / len(series)
    for ax, panel in zip(axes, panels):
        measured_any = False
        for s, key in enumerate(series):
            for x, size in enumerate(sizes):
                record = find(records, size=size, **dict(zip(panel_fields + series_fields, panel + key)))
                pos = x - 0.4 + width * (s + 0.5)
                if record is None:
                    continue
                if record.get("status") == "OOM" and device_gib:
                    ax.plot(pos, device_gib, marker="X", color=FAILED_COLOR, markersize=10, linestyle="none")
                if not is_ok(record):
                    mark_failed(ax, pos, record)
                    continue
                if record.get("peak_memory_bytes"):
                    measured_any = True
                    ax.bar(pos, record["peak_memory_bytes"] / GIB, width * 0.9, color=SERIES_COLORS[s % 10])
                if record.get("estimated_memory_bytes"):
                    ax.plot(pos, record["estimated_memory_bytes"] / GIB, marker="_", color="black",
                            markersize=14, markeredgewidth=2, linestyle="none")
        if device_gib:
            ax.axhline(device_gib, color="black", linestyle="--", linewidth=1)
        if not measured_any:
            ax.text(0.5, 0.5, "no peak memory recorded\n(CPU runs do not track it)", transform=ax.transAxes,
                    ha="center", va="center", color="gray")
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_xlim(-0.5, len(sizes) - 0.5)  # status labels of failed rows do not widen the axes by themselves
        ax.set_title(", ".join(field_label(f, v) for f, v in zip(panel_fields, panel)))
        ax.set_ylabel("peak memory (GiB)")
        ax.set_xlabel("model size")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=SERIES_COLORS[s % 10], label=", ".join(field_label(f, v) for f, v in
                                                                  zip(series_fields, key)) or "measured peak")
               for s, key in enumerate(series)]
    handles += [plt.Line2D([], [], marker="_", color="black", markersize=14, markeredgewidth=2, linestyle="none",
                           label="analytic estimate")]
    if device_gib:
        handles += [plt.Line2D([], [], color="black", linestyle="--", label=f"device memory ({device_gib:.0f} GiB)"),
                    plt.Line2D([], [], marker="X", color=FAILED_COLOR, linestyle="none", label="out of memory")]
    legend_below(fig, handles)
    return save(fig, path)


def plot_warmup(records: list[dict], path: str) -> str:
    """Each ok configuration's per-step times in the order they ran, with warm-up and steady start marked.

    The y axis stops at Y_CLIP x the steady level so that settling stays visible: a first step that compiles
    can take 100x the rest, and on a log axis a 10% slow-down would look flat. Clipped steps are drawn at the
    top edge with their value written next to them.
    """
    records = [r for r in records if is_ok(r)]
    varying = ["size"] + varying_fields(records)
    fig, axes = panel_grid(len(records), 4, 2.4, "Time of every step, in order (warm-up, then measured)\n"
                           + subtitle(records))
    for ax, record in zip(axes, records):
        curve = step_curve(record) * 1e3
        warmup = len(curve) - len(measured_step_times(record))
        start = steady_start(curve)
        level, half_width = steady_band(curve) if curve.size else (0.0, 0.0)
        top = Y_CLIP * level
        ax.plot(range(len(curve)), np.minimum(curve, top), marker=".", markersize=4, color=PHASE_STYLES["forward"][0])
        clipped = np.flatnonzero(curve > top)
        if clipped.size:  # one label for all of them: neighbouring labels would overprint
            ax.plot(clipped, np.full(clipped.size, top), "^", color=PHASE_STYLES["forward"][0], clip_on=False)
            values = ", ".join(f"{v:,.0f}" for v in curve[clipped[:3]]) + (", ..." if clipped.size > 3 else "")
            ax.annotate(f"{values} ms", (clipped[-1], top), xytext=(6, -3), textcoords="offset points",
                        fontsize=7, va="top")
        if warmup:
            ax.axvspan(-0.5, warmup - 0.5, color="gray", alpha=0.2, linewidth=0)
        ax.axhspan(level - half_width, level + half_width, color=PHASE_STYLES["optimizer"][0], alpha=0.3, linewidth=0)
        if start is not None:
            ax.axvline(start, color=PHASE_STYLES["optimizer"][0], linestyle="--")
        ax.set_ylim(0, top)
        ax.set_xlim(-0.5, len(curve) - 0.5)
        steady = f"steady from step {start}" if start is not None else "never steady"
        ax.set_title(f"{config_label(record, varying)}\n{steady}", fontsize=9,
                     color="black" if start is not None and start <= warmup else FAILED_COLOR)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("step time (ms)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = [Patch(color="gray", alpha=0.2, label="warm-up steps (not measured)"),
               plt.Line2D([], [], color=PHASE_STYLES["forward"][0], marker=".", label="step time"),
               plt.Line2D([], [], color=PHASE_STYLES["forward"][0], marker="^", linestyle="none",
                          label=f"above {Y_CLIP:g}x steady level (value in ms)"),
               Patch(color=PHASE_STYLES["optimizer"][0], alpha=0.3, label="steady band (see steady_state.py)"),
               plt.Line2D([], [], color=PHASE_STYLES["optimizer"][0], linestyle="--", label="detected steady start"),
               Patch(color=FAILED_COLOR, label="red title: not steady when measuring began")]
    legend_below(fig, handles)
    return save(fig, path)


def plot_ratios(rows: list[tuple[str, RatioEstimate]], min_effect: float, title: str, path: str) -> str:
    """A/B forest plot: ratio of median step times with its CI per configuration, coloured by verdict."""
    fig, (ax,) = panel_grid(1, 1, 0.32 * len(rows) + 1.0, title)
    colors = {FASTER: PHASE_STYLES["optimizer"][0], SLOWER: FAILED_COLOR}
    for y, (_, est) in enumerate(rows):
        ax.errorbar(est.ratio, y, xerr=[[est.ratio - est.low], [est.high - est.ratio]], fmt="o", capsize=3,
                    color=colors.get(est.verdict, "gray"))
    ax.axvline(1.0, color="black", linewidth=1)
    ax.axvspan(1 - min_effect, 1 + min_effect, color="gray", alpha=0.15, linewidth=0)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median step time B / A  (< 1: B faster), 95% bootstrap CI")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], color=PHASE_STYLES["optimizer"][0], marker="o", linestyle="none", label="B faster"),
               plt.Line2D([], [], color=FAILED_COLOR, marker="o", linestyle="none", label="B slower"),
               plt.Line2D([], [], color="gray", marker="o", linestyle="none", label=SAME),
               Patch(color="gray", alpha=0.15, label=f"within +-{min_effect:.0%}: too small to report")]
    legend_below(fig, handles)
    return save(fig, path)
