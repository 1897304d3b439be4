"""The predictor's figure: scaling efficiency and memory per rank against world size, one line per strategy."""

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


def plot_scaling(predictions: dict[str, list[Prediction]], device_memory_bytes: float, title: str, path: str) -> str:
    """Two panels side by side, world size on a log2 axis; rows a strategy cannot run (status n/a) are left out,
    and memory above the device's is drawn but the device's size is a dashed line."""
    fig, (eff_ax, mem_ax) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
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
    for ax in (eff_ax, mem_ax):
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = mem_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.04 * math.floor(len(labels) / 7), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
