"""Issue 19's "where fp8 pays" table from the rows scripts/gpu_fp8_table.sh wrote: per model, bf16 against each
torchao float8 recipe, the speed-up, the share of FLOPs that ran in fp8, and, where the rows were traced, where
the step's time went by category (matmul, copies and casts, elementwise, ...), fp8 less bf16.

    python3 scripts/fp8_table.py OUT/fp8_table.jsonl [MORE.jsonl ...]

A model measured at two depths (the 10B and Llama 3.1 8B shapes at 2 and 4 layers: whole, they do not fit on one
GPU with AdamW's state) also gets per-layer figures: the difference of the two steps over the difference in depth,
which cancels what does not grow with depth (embedding, head, loss).
"""

import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from src.harness.results import read_records  # noqa: E402
from src.instruments import op_categories  # noqa: E402

CATEGORIES = (*op_categories.CATEGORIES, "idle")


FP32_WEIGHTS = ("default", "fused")  # torch's AdamW over fp32 weights; ours keeps bf16 weights with fp32 masters
OTHER_OPTIMIZERS = ("overlap", "in_backward")  # bf16 weights too, stepped inside the backward


def recipe(config: dict) -> str:
    """The row's label: bf16, or the fp8 recipe, said "fp32 weights" where the AdamW kept fp32 weights (the fast
    recipe's fp8 rows before 2026-12-03's third run, and torchtitan's): its weight scaling reads twice the bytes.
    A compile mode other than the default and an optimizer other than the recipe's are named."""
    mode = config.get("compile_mode") or "default"
    how = (f", {mode}" if mode != "default" else "") + (f", adamw {config['optimizer']}"
                                                        if config.get("optimizer") in OTHER_OPTIMIZERS else "")
    if config.get("precision") != "fp8":
        return "bf16" + how
    weights = ", fp32 weights" if config.get("optimizer") in FP32_WEIGHTS else ""
    return f"fp8 {config.get('fp8_recipe') or 'tensorwise'}{weights}{how}"


def bf16_baseline(recipes: dict, traced: bool = False) -> tuple[str, dict | None]:
    """The fastest bf16 row of a model (of those traced, where asked): what each fp8 row is compared with."""
    rows = [(step_ms(row), r) for r, row in recipes.items()
            if r.startswith("bf16") and (row.get("trace_ms_per_step") or not traced)]
    fastest = min(rows)[1] if rows else ""
    return fastest, recipes.get(fastest)


def model(config: dict) -> str:
    return config.get("model") or config["size"]


def backend(config: dict) -> str:
    scope = config.get("compile_scope") or ("model" if config.get("compile") or config.get("recipe") else "")
    return f"{config.get('backend') or 'ours'}, {config.get('recipe') or 'compile'} ({scope})"


def step_ms(row: dict) -> float:
    return row["median_time_step"] * 1e3


def load(paths: list[str]) -> dict:
    """{(model, backend): {layers: {recipe: row}}}, the last ok row of each (a re-run replaces its earlier row)."""
    table = defaultdict(lambda: defaultdict(dict))
    for path in paths:
        rows, warnings = read_records(path)
        for warning in warnings:
            print(f"{path}: {warning}", file=sys.stderr)
        for row in rows:
            if row.get("status") == "ok" and row.get("median_time_step"):
                c = row["config"]
                table[(model(c), backend(c))][c["num_layers"]][recipe(c)] = row
    return table


def main(paths: list[str]) -> int:
    try:
        table = load(paths)
    except (OSError, ValueError) as error:
        print(f"fp8_table.py: {error}", file=sys.stderr)
        return 2
    if not table:
        print("fp8_table.py: no ok rows in " + ", ".join(paths), file=sys.stderr)
        return 1
    print("| model | layers | system | recipe | step ms | x bf16 | fp8 share of FLOPs | TFLOP/s | MFU (its peak) "
          "| bf16-equiv. MFU | peak GB | compile s |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, how), depths in table.items():
        for layers, recipes in sorted(depths.items()):
            _, bf16 = bf16_baseline(recipes)
            for r, row in sorted(recipes.items()):
                speedup = f"{step_ms(bf16) / step_ms(row):.2f}" if bf16 else ""
                mfu_eq = row.get("mfu_bf16_equivalent") if not r.startswith("bf16") else row.get("mfu")
                print(f"| {name} | {layers} | {how} | {r} | {step_ms(row):.1f} | {speedup} "
                      f"| {row.get('fp8_flops_fraction') or 0:.0%} | {row.get('tflops') or 0:.0f} "
                      f"| {row.get('mfu') or 0:.1%} | {mfu_eq or 0:.1%} | {row.get('peak_memory_gb') or 0:.1f} "
                      f"| {row.get('compile_time_s') or 0:.0f} |")
    per_layer(table)
    where_it_went(table)
    return 0


def per_layer(table: dict) -> None:
    lines = []
    for (name, how), depths in table.items():
        if len(depths) < 2:
            continue
        lo, hi = min(depths), max(depths)
        base = bf16_baseline(depths[hi])[1], bf16_baseline(depths[lo])[1]
        for r in sorted(set(depths[lo]) & set(depths[hi])):
            ms = (step_ms(depths[hi][r]) - step_ms(depths[lo][r])) / (hi - lo)
            speedup = ""
            if all(base):
                bf16_ms = (step_ms(base[0]) - step_ms(base[1])) / (hi - lo)
                speedup = f"{bf16_ms / ms:.2f}"
            lines.append(f"| {name} | {how} | {r} | {ms:.2f} | {speedup} |")
    if lines:
        print("\nPer layer: (step at the larger depth - step at the smaller) / layers between them.\n")
        print("| model | system | recipe | ms per layer | x bf16 |\n|---|---|---|---:|---:|")
        print("\n".join(lines))


def where_it_went(table: dict) -> None:
    """Traced rows: each fp8 row's categories less its bf16 row's, ms per profiled step."""
    lines = []
    for (name, how), depths in table.items():
        for layers, recipes in sorted(depths.items()):
            name_bf16, bf16 = bf16_baseline(recipes, traced=True)
            if not bf16:
                continue
            cats = lambda row: {**row["trace_ms_per_step"], "idle": row.get("trace_idle_ms_per_step") or 0.0}
            base = cats(bf16)
            share = base.get("matmul", 0.0) / bf16["trace_step_ms"]
            lines.append(f"| {name} | {name_bf16} | {bf16['trace_step_ms']:.1f} | "
                         + " | ".join(f"{base.get(c, 0.0):.1f}" for c in CATEGORIES) + f" | {share:.0%} |")
            for r, row in sorted(recipes.items()):
                if r.startswith("bf16") or not row.get("trace_ms_per_step"):
                    continue
                got = cats(row)
                lines.append(f"| {name} | {r} - bf16 | {row['trace_step_ms'] - bf16['trace_step_ms']:+.1f} | "
                             + " | ".join(f"{got.get(c, 0.0) - base.get(c, 0.0):+.1f}" for c in CATEGORIES) + " | |")
    if lines:
        print("\nWhere the time went (--trace, ms per profiled step; fp8 rows as the difference from bf16; the "
              "matmul share is of the bf16 step):\n")
        print("| model | row | step | " + " | ".join(CATEGORIES) + " | matmul share |")
        print("|---|---|---:|" + "---:|" * len(CATEGORIES) + "---:|")
        print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python3 scripts/fp8_table.py RESULTS.jsonl [MORE ...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
