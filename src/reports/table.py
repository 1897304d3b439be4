"""The printed table: the original benchmark's columns first, exactly as it printed them, then the new ones; or a
compact view of a dozen columns that fits a terminal (`--columns compact`)."""

import pandas as pd

from src.harness.record import PHASES, config_of, stat_field
from src.reports.compare import env_value
from src.reports.labels import says_nothing
from src.spec import RunSpec

ORIGINAL_COLUMNS = [
    "d_model", "d_ff", "num_heads", "num_layers", "warmup_steps", "benchmark_steps",
    "mean_time_forward", "std_time_forward", "mean_time_backward", "std_time_backward",
]
NEW_COLUMNS = [
    "size", "context_length", "batch_size", "precision", "mode", "attention", "compile", "recipe",
    "compile_scope", "compile_mode", "activation_checkpointing", "optimizer",
    "median_time_forward", "min_time_forward", "median_time_backward", "min_time_backward",
    "mean_time_optimizer", "median_time_optimizer", "tokens_per_second", "tflops", "mfu", "speed_of_light_pct",
    "peak_memory_gb", "estimated_memory_gb", "compile_time_s", "status",
]
# Shown when a row ran a --parallel strategy: times are rank 0's, the step's spread across ranks beside them.
DISTRIBUTED_COLUMNS = [
    "parallel", "world_size", "median_time_sync", "min_time_step_across_ranks", "max_time_step_across_ranks",
    "slowest_rank", "tokens_per_second_per_gpu", "comm_bytes_all_reduce", "comm_bytes_all_gather",
    "comm_bytes_reduce_scatter", "comm_bytes_broadcast",
]
# The compact view: what tells rows apart and what they measured, times in ms; about 130 characters wide for the
# seed's sizes (the default view is 34-45 columns, ~870 characters). Columns empty in every row (MFU and peak memory
# on CPU, the optimizer outside train mode, the strategy columns without --parallel) are left out.
COMPACT_COLUMNS = [
    ("size", "size"), ("context_length", "ctx"), ("batch_size", "batch"), ("precision", "prec"), ("mode", "mode"),
    ("attention", "attn"), ("parallel", "parallel"), ("world_size", "n"),
    ("median_time_forward", "fwd ms"), ("median_time_backward", "bwd ms"), ("median_time_optimizer", "opt ms"),
    ("median_time_step", "step ms"), ("tokens_per_second", "tokens/s"), ("tflops", "TFLOP/s"), ("mfu", "MFU"),
    ("peak_memory_gb", "peak GB"), ("status", "status"),
]
MILLISECONDS = {"median_time_forward", "median_time_backward", "median_time_optimizer", "median_time_step"}
COMPACT_STATUS_CHARS = 40  # a crash row's status runs to 400 characters; the results file keeps all of it
COLUMN_VIEWS = ("default", "compact")

CONFIG_COLUMNS = {"d_model", "d_ff", "num_heads", "num_layers", "warmup_steps", "benchmark_steps", "size",
                  "context_length", "batch_size", "precision", "mode", "attention", "compile", "recipe", "parallel",
                  "compile_scope", "compile_mode", "activation_checkpointing", "optimizer", "backend", "num_kv_heads",
                  "tie_embeddings"}


def _format(value):
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return value


def table_row(record: dict) -> dict:
    config = config_of(record)
    row = {}
    for column in ORIGINAL_COLUMNS + NEW_COLUMNS + DISTRIBUTED_COLUMNS:
        if column in CONFIG_COLUMNS:
            value = config.get(column)
        elif column == "estimated_memory_gb":
            value = record.get("estimated_memory_bytes")
            value = value / 1e9 if value is not None else None
        else:
            value = record.get(column)
        row[column] = value
    return row


def _other_varying(records: list[dict]) -> list[str]:
    """Table fields of the configuration that vary across `records` but have no compact column (warm-up steps in
    the seed's sweep, a recipe, an optimizer): the compact view shows them in one column, `other`."""
    shown = {column for column, _ in COMPACT_COLUMNS} | {"d_model", "d_ff", "num_heads", "num_layers"}
    fields = [c for c in ORIGINAL_COLUMNS + NEW_COLUMNS + ["backend", "num_kv_heads", "tie_embeddings"]
              if c in CONFIG_COLUMNS and c not in shown]
    return [f for f in fields if len({str(config_of(r).get(f)) for r in records}) > 1]


def compact_row(record: dict, other: list[str] = ()) -> dict:
    config = config_of(record)
    row = {}
    for column, title in COMPACT_COLUMNS:
        value = config.get(column) if column in CONFIG_COLUMNS else record.get(column)
        if column in MILLISECONDS and isinstance(value, (int, float)):
            value *= 1e3
        elif column == "status" and isinstance(value, str) and len(value) > COMPACT_STATUS_CHARS:
            value = value[:COMPACT_STATUS_CHARS - 3] + "..."
        row[title] = value
        if column == "world_size" and other:
            row["other"] = ", ".join(_setting(f, config.get(f)) for f in other
                                     if not (config.get(f) is False or config.get(f) is None or config.get(f) == ""
                                             or _implied(f, config)))
    return row


def _implied(field: str, config: dict) -> bool:
    """Settings the compact view leaves out because another says them or because they are the default, as an
    eager step goes without "compile": the fast recipe and a per-block scope always compile, a compile's scope is
    the whole model unless it says blocks, a row without a backend is our model (2.7B side by side: 184, then 171
    characters wide without these), and as many k/v heads as heads is plain multi-head attention (the sizes of
    fp8_sizes_h200_2026-12-04.jsonl: 169 characters wide with "num_kv_heads 12" .. "25" in every row)."""
    return ((field == "compile" and (config.get("recipe") == "fast" or config.get("compile_scope") == "blocks"))
            or (field == "compile_scope" and config.get(field) == "model")
            or (field == "compile_mode" and config.get(field) == "default")
            or (field == "num_kv_heads" and says_nothing(field, config))
            or (field == "backend" and config.get(field) == "ours"))


SHORT_NAMES = {"recipe": "", "optimizer": "adamw", "backend": "", "compile_scope": "", "compile_mode": ""}
# -> "fast", "adamw fused", "hf_llama", "per-block", "reduce-overhead"
# torchtitan's word for a scope of blocks: "compile blocks, reduce-overhead" made a committed file's compact view 164
# characters wide (cudnn_heads_inner_reverted_h200_2026-12-04b.jsonl), over a terminal's 160
SHORT_VALUES = {("compile_scope", "blocks"): "per-block"}


def _setting(field: str, value) -> str:
    """One varying setting, as short as it stays clear: "compile" for True, "fast", "adamw fused", "warmup_steps 0"."""
    if value is True:
        return field
    value = SHORT_VALUES.get((field, value), value)
    name = SHORT_NAMES.get(field, field)
    return f"{name} {value}" if name else str(value)


def format_table(records: list[dict], columns: str = "default") -> str:
    """The markdown table of `records`: every column (`default`, the seed's first), or the `compact` view."""
    if columns == "compact":
        other = _other_varying(records)
        titles = [title for _, title in COMPACT_COLUMNS]
        if other:
            titles.insert(titles.index("n") + 1, "other")
        frame = pd.DataFrame([compact_row(r, other) for r in records], columns=titles)
        if not any(config_of(r).get("parallel", "none") != "none" for r in records):
            frame = frame.drop(columns=["parallel", "n"])
        frame = frame.dropna(axis="columns", how="all")
        settings = [title for column, title in COMPACT_COLUMNS if column in CONFIG_COLUMNS and column != "size"]
        same = [t for t in settings if t in frame and frame[t].astype(str).nunique() == 1]  # one row: all of them
        line = ", ".join(f"{t} {_format(frame[t].iloc[0])}" for t in same)
        table = frame.drop(columns=same).map(_format).to_markdown(index=False)
        return (f"every row: {line}\n\n" if line else "") + table
    columns = ORIGINAL_COLUMNS + NEW_COLUMNS
    if any(r.get("config", {}).get("parallel", "none") != "none" for r in records):
        columns = columns[:-1] + DISTRIBUTED_COLUMNS + columns[-1:]  # status stays last
    frame = pd.DataFrame([table_row(r) for r in records], columns=columns)
    return frame.map(_format).to_markdown()


def progress_line(index: int, total: int, record: dict, width: int = 20) -> str:
    """One line per finished configuration, named by RunSpec.label: every swept option tells the lines apart."""
    done = round(width * (index + 1) / total)
    bar = "#" * done + "." * (width - done)
    times = " ".join(f"{p} {record[stat_field('mean', p)]:.4g}s" for p in PHASES
                     if isinstance(record.get(stat_field("mean", p)), float))
    label = RunSpec.from_dict(config_of(record)).label
    return f"[{bar}] {index + 1}/{total} {label} steps={config_of(record).get('benchmark_steps')}: {times} " \
           f"{record['status']}"


def environment_lines(records: list[dict]) -> list[str]:
    """One line per distinct environment in the records: what a committed table must carry."""
    seen = []
    for record in records:
        env = record.get("env") or {}
        line = (f"GPU {env.get('gpu_name') or 'none (' + str(env.get('cpu')) + ')'}, driver {env.get('driver_version') or '-'}, "
                f"CUDA {env_value(record, 'cuda_version') or '-'}, torch {env.get('torch_version')}, "
                f"triton {env.get('triton_version') or '-'}, commit {env.get('git_commit') or '-'}, "
                f"host {env.get('hostname')}, {str(env.get('timestamp', ''))[:10]}")
        if line not in seen:
            seen.append(line)
    return seen
