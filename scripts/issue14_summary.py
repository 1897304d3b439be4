"""The short table printed at the end of scripts/gpu_issue14.sh: one line per row of the given results files.

    python3 scripts/issue14_summary.py OUT/*.jsonl

Per row: its file, size, mode, context x batch, what varies (recipe, compile, attention, checkpointing, AdamW),
status, median phase and step times, TFLOP/s, measured peak and the analytic estimate (GB); then the rows that
look wrong (src/reports/anomalies.py), file by file.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from src.harness.results import read_records  # noqa: E402
from src.reports.anomalies import anomalies  # noqa: E402


def ms(value) -> str:
    return "" if value is None else f"{value * 1e3:.1f}"


def gb(value) -> str:
    return "" if value is None else f"{value / 1e9:.1f}"


def variant(config: dict) -> str:
    parts = [f"recipe {config['recipe']}" if config.get("recipe") else "",
             "compile" if config.get("compile") else "", config.get("precision", ""), config.get("attention", ""),
             f"checkpoint {config['activation_checkpointing']}"
             if config.get("activation_checkpointing") not in (None, "none") else "",
             f"AdamW {config['optimizer']}" if config.get("optimizer") and config.get("mode") == "train" else ""]
    return ", ".join(p for p in parts if p)


def main(paths: list[str]) -> int:
    print("| file | size | mode | ctx x batch | variant | status | fwd ms | bwd ms | opt ms | step ms | TFLOP/s "
          "| peak GB | estimate GB |")
    print("|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    found = []
    for path in paths:
        if not os.path.exists(path):
            print(f"| {os.path.basename(path)} | (no file: that part did not run) |")
            continue
        records, _ = read_records(path)
        for r in records:
            c = r.get("config") or {}
            tflops = r.get("tflops")
            print(f"| {os.path.basename(path)} | {c.get('size')} | {c.get('mode')} | {c.get('context_length')} x "
                  f"{c.get('batch_size')} | {variant(c)} | {str(r.get('status'))[:60]} | "
                  f"{ms(r.get('median_time_forward'))} | {ms(r.get('median_time_backward'))} | "
                  f"{ms(r.get('median_time_optimizer'))} | {ms(r.get('median_time_step'))} | "
                  f"{'' if tflops is None else f'{tflops:.0f}'} | {gb(r.get('peak_memory_bytes'))} | "
                  f"{gb(r.get('estimated_memory_bytes'))} |")
        found += [(os.path.basename(path), r, w) for r, w in anomalies(records)]
    if found:
        print("\nRows that look wrong:")
        for name, r, w in found:
            c = r["config"]
            print(f"- {name}: {c.get('size')} {c.get('mode')} {variant(c)}: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
