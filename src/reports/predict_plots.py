"""The predictor's figure: scaling efficiency and memory per rank against world size, one line per strategy, and,
when a tensor-parallel strategy is predicted, where TP becomes necessary (nothing without it fits) and what its
step is made of (compute at constant MFU, the split probe's extra, exposed communication, overlap slowdown)."""

import itertools
import math
import os

import matplotlib

from src.predict.scaling import Prediction

matplotlib.use("Agg")  # headless machines; choose the backend before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

GB = 1e9


def plot_paths(path: str, sizes: list[str]) -> dict[str, str]:
    """{size: the PNG to write}: `path` itself for one size; for several, one plot each with the size before the
    suffix (p.png -> p_small.png, p_xl.png), so that no size's plot replaces another's. A path without a suffix
    gets .png, which matplotlib would add anyway (then the name printed is the file written)."""
    stem, suffix = os.path.splitext(path)
    suffix = suffix or ".png"
    sizes = list(dict.fromkeys(sizes))
    if len(sizes) == 1:
        return {sizes[0]: stem + suffix}
    return {size: f"{stem}_{size}{suffix}" for size in sizes}


def tp_needed(predictions: dict[str, list[Prediction]]) -> list[int]:
    """World sizes where no prediction without tensor parallelism fits in memory and one with it does."""
    fits: dict[int, list[bool]] = {}  # world size -> [some non-TP row fits, some TP row fits]
    for rows in predictions.values():
        for p in rows:
            if p.status == "ok":
                fits.setdefault(p.world_size, [False, False])[p.tp > 1] |= p.fits
    return sorted(n for n, (without, with_tp) in fits.items() if with_tp and not without)


def step_parts(p: Prediction) -> dict[str, float]:
    """A step in ms by what it costs: its parts add up to step_s."""
    return {"compute at constant MFU": (p.compute_s - p.split_cost_s) * 1e3,
            "split (probe)": p.split_cost_s * 1e3,
            "exposed communication": p.exposed_comm_s * 1e3,
            "overlap slowdown (probe)": p.overlap_cost_s * 1e3}


def plot_scaling(predictions: dict[str, list[Prediction]], device_memory_bytes: float, title: str, path: str) -> str:
    """Panels side by side, world size on a log2 axis; rows a strategy cannot run (status n/a) are left out,
    and memory above the device's is drawn but the device's size is a dashed line. With a TP strategy, a third
    panel stacks each TP row's step by part beside the fastest step without TP that fits, and the world sizes
    where only TP fits are shaded on the memory and cost panels."""
    tp_rows = {s: [p for p in rows if p.status == "ok" and p.tp > 1] for s, rows in predictions.items()}
    tp_rows = {s: rows for s, rows in tp_rows.items() if rows}
    fig, axes = plt.subplots(1, 3 if tp_rows else 2, figsize=(18 if tp_rows else 12, 4.8), dpi=100)
    eff_ax, mem_ax = axes[0], axes[1]
    styles = itertools.cycle(itertools.product(("-", "--", ":"), ("o", "s", "^")))  # tp and fsdp_tp coincide to 8
    colors = itertools.cycle(plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2])  # 20 distinct
    for strategy, rows in predictions.items():
        (linestyle, marker), color = next(styles), next(colors)
        ok = [p for p in rows if p.status == "ok"]
        if not ok:
            continue
        x = [p.world_size for p in ok]
        line, = eff_ax.plot(x, [p.scaling_efficiency for p in ok], marker=marker, ms=4, ls=linestyle, color=color,
                            label=strategy)
        mem_ax.plot(x, [p.memory_total_bytes / GB for p in ok], marker=marker, ms=4, ls=linestyle,
                    color=line.get_color(), label=strategy)
        misses = [p for p in ok if not p.fits]
        if misses:
            mem_ax.scatter([p.world_size for p in misses], [p.memory_total_bytes / GB for p in misses],
                           marker="x", color=line.get_color(), s=30, zorder=3)
    eff_ax.set(xlabel="GPUs", ylabel="scaling efficiency (tokens/s per GPU vs 1 GPU)",
               title="scaling efficiency")
    eff_ax.set_xscale("log", base=2)
    eff_ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    eff_ax.set_ylim(bottom=0)
    mem_ax.set_xscale("log", base=2)
    mem_ax.set_yscale("log")
    mem_ax.yaxis.set_major_formatter(ScalarFormatter())
    mem_ax.axhline(device_memory_bytes / GB, color="black", lw=1, ls="--", label="device memory")
    mem_ax.set(xlabel="GPUs", ylabel="GB per rank (x: does not fit)", title="memory per rank")
    needed = tp_needed(predictions)
    if tp_rows:
        _plot_tp_cost(axes[2], predictions, tp_rows)
    for ax in axes[1:]:
        for i, n in enumerate(needed):
            ax.axvspan(n / 2**0.5, n * 2**0.5, color="gold", alpha=0.25, lw=0, zorder=0,
                       label="only TP fits" if i == 0 and ax is mem_ax else None)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = [], []
    for ax in axes[1:]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.04 * math.floor(len(labels) / 7), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_tp_cost(ax, predictions: dict[str, list[Prediction]], tp_rows: dict[str, list[Prediction]]) -> None:
    """Stacked bars of each TP strategy's step by part (side by side per world size), and a line of the fastest
    step without TP that fits."""
    part_colors = dict(zip(step_parts(next(iter(tp_rows.values()))[0]), plt.get_cmap("Set2").colors))
    spread = 2 ** 0.35  # bars of a world size sit within a factor 2**0.35 of it on the log2 axis
    offsets = [spread ** (i - (len(tp_rows) - 1) / 2) for i in range(len(tp_rows))]
    for (strategy, rows), offset in zip(tp_rows.items(), offsets):
        x = [p.world_size * offset for p in rows]
        widths = [p.world_size * offset * (spread - 1) * 0.8 for p in rows]
        bottom = [0.0] * len(rows)
        for part, color in part_colors.items():
            heights = [step_parts(p)[part] for p in rows]
            ax.bar(x, heights, widths, bottom=bottom, color=color, edgecolor="white", lw=0.5,
                   label=part if strategy == next(iter(tp_rows)) else None)
            bottom = [b + h for b, h in zip(bottom, heights)]
        for xi, top in zip(x, bottom):
            ax.annotate(strategy, (xi, top), fontsize=6, ha="center", va="bottom", rotation=90)
    best = {}
    for rows in predictions.values():
        for p in rows:
            if p.status == "ok" and p.tp <= 1 and p.fits and p.step_s * 1e3 < best.get(p.world_size, math.inf):
                best[p.world_size] = p.step_s * 1e3
    if best:
        ax.plot(sorted(best), [best[n] for n in sorted(best)], color="black", marker="o", ms=3, lw=1,
                label="fastest without TP that fits")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="GPUs", ylabel="ms per step", title="what TP costs: its step by part")
