"""The printed table: the original benchmark's columns first, exactly as it printed them, then the new ones."""

import pandas as pd

ORIGINAL_COLUMNS = [
    "d_model", "d_ff", "num_heads", "num_layers", "warmup_steps", "benchmark_steps",
    "mean_time_forward", "std_time_forward", "mean_time_backward", "std_time_backward",
]
NEW_COLUMNS = [
    "size", "context_length", "batch_size", "precision", "mode", "attention", "activation_checkpointing", "optimizer",
    "median_time_forward", "min_time_forward", "median_time_backward", "min_time_backward",
    "mean_time_optimizer", "median_time_optimizer", "tokens_per_second", "tflops", "mfu", "speed_of_light_pct",
    "peak_memory_gb", "estimated_memory_gb", "compile_time_s", "status",
]
CONFIG_COLUMNS = {"d_model", "d_ff", "num_heads", "num_layers", "warmup_steps", "benchmark_steps", "size",
                  "context_length", "batch_size", "precision", "mode", "attention", "activation_checkpointing",
                  "optimizer"}


def _format(value):
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return value


def table_row(record: dict) -> dict:
    config = record.get("config", {})
    row = {}
    for column in ORIGINAL_COLUMNS + NEW_COLUMNS:
        if column in CONFIG_COLUMNS:
            value = config.get(column)
        elif column == "estimated_memory_gb":
            value = record.get("estimated_memory_bytes")
            value = value / 1e9 if value is not None else None
        elif column == "attention" and config.get("compile"):
            value = f"{config.get('attention')}+compile"
        else:
            value = record.get(column)
        row[column] = value
    if config.get("recipe"):
        row["attention"] = f"{row['attention']} ({config['recipe']} recipe)"
    return row


def format_table(records: list[dict]) -> str:
    frame = pd.DataFrame([table_row(r) for r in records], columns=ORIGINAL_COLUMNS + NEW_COLUMNS)
    return frame.map(_format).to_markdown()


def progress_line(index: int, total: int, record: dict, width: int = 20) -> str:
    done = round(width * (index + 1) / total)
    bar = "#" * done + "." * (width - done)
    row = table_row(record)
    times = " ".join(f"{p} {row[f'mean_time_{p}']:.4g}s" for p in ("forward", "backward")
                     if isinstance(row.get(f"mean_time_{p}"), float))
    if isinstance(row.get("mean_time_optimizer"), float):
        times += f" optimizer {row['mean_time_optimizer']:.4g}s"
    return f"[{bar}] {index + 1}/{total} {record['config'].get('size')} ctx={row['context_length']} " \
           f"{row['mode']} {row['precision']} warmup={row['warmup_steps']}: {times} {record['status']}"


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
