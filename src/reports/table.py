"""The printed table: the original benchmark's columns first, exactly as it printed them, then the new ones."""

import pandas as pd

from src.harness.record import PHASES, config_of, stat_field
from src.spec import RunSpec

ORIGINAL_COLUMNS = [
    "d_model", "d_ff", "num_heads", "num_layers", "warmup_steps", "benchmark_steps",
    "mean_time_forward", "std_time_forward", "mean_time_backward", "std_time_backward",
]
NEW_COLUMNS = [
    "size", "context_length", "batch_size", "precision", "mode", "attention", "compile", "recipe",
    "activation_checkpointing", "optimizer",
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
CONFIG_COLUMNS = {"d_model", "d_ff", "num_heads", "num_layers", "warmup_steps", "benchmark_steps", "size",
                  "context_length", "batch_size", "precision", "mode", "attention", "compile", "recipe", "parallel",
                  "activation_checkpointing", "optimizer"}


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


def format_table(records: list[dict]) -> str:
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
                f"CUDA {env.get('cuda_version') or '-'}, torch {env.get('torch_version')}, "
                f"triton {env.get('triton_version') or '-'}, commit {env.get('git_commit') or '-'}, "
                f"host {env.get('hostname')}, {str(env.get('timestamp', ''))[:10]}")
        if line not in seen:
            seen.append(line)
    return seen
