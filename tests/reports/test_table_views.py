"""The printed table's two views: the default keeps every column, the seed's first and exact; compact fits a
terminal and still tells every row apart."""

import glob
import os

import pytest

from src.harness.results import read_records
from src.profiling.benchmark import main as benchmark_main
from src.profiling.table import main as table_main
from src.reports.table import ORIGINAL_COLUMNS, format_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARK_FILES = [p for p in sorted(glob.glob(os.path.join(REPO, "docs", "results", "*.jsonl")))
                   if "size" in (read_records(p)[0][0].get("config") or {})]
TERMINAL = 160  # a maximised terminal on a laptop screen; the default view was ~870 characters


def header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("|"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.parametrize("path", BENCHMARK_FILES, ids=os.path.basename)
def test_the_compact_view_of_every_committed_file_fits_and_tells_rows_apart(path):
    records, _ = read_records(path)
    compact = format_table(records, "compact")
    assert max(len(line) for line in compact.splitlines()) <= TERMINAL
    rows = [line for line in compact.splitlines() if line.startswith("|")][2:]
    assert len(rows) == len(records) and header(compact)[0] == "size" and header(compact)[-1] == "status"
    default = format_table(records)
    assert header(default)[1:11] == ORIGINAL_COLUMNS and default == format_table(records, "default")


def test_the_seed_sweep_keeps_its_warmup_rows_apart_in_compact(capsys):
    path = os.path.join(REPO, "docs", "results", "original_fp32_h100_2026-11-24.jsonl")
    assert table_main([path, "--columns", "compact"]) == 0
    out = capsys.readouterr().out
    assert "every row: ctx 128, batch 4, prec fp32, mode forward_backward, attn naive" in out
    assert out.count("warmup_steps 5") == out.count("warmup_steps 0") == out.count("warmup_steps 1") == 5


def test_the_benchmark_prints_the_compact_view_when_asked(capsys):
    tiny = ["--sizes", "tiny", "--device", "cpu", "--warmup_steps", "1", "--benchmark_steps", "2", "--context_length",
            "16"]
    assert benchmark_main(tiny + ["--columns", "compact"]) == 0
    out = capsys.readouterr().out
    # one row: its settings go to the line above the table, which then starts with the measurements
    assert "every row: ctx 16, batch 4, prec fp32" in out
    assert header(out[out.index("|"):])[:2] == ["size", "fwd ms"] and "mean_time_forward" not in out
    assert benchmark_main(tiny + ["--columns", "wide"]) == 2


def test_compact_leaves_out_what_is_implied_and_names_what_is_not():
    """As many k/v heads as heads (plain multi-head attention) and torch's default compile mode go unsaid; GQA and
    reduce-overhead are named."""
    from src.harness.record import new_record
    from tests.specs import tiny_spec

    def record(**changes):
        r = new_record(tiny_spec(compile=True))
        r["config"].update(changes)
        return r

    assert tiny_spec().num_heads == 4
    records = [record(num_kv_heads=0), record(num_kv_heads=4), record(compile_mode="reduce-overhead"),
               record(num_kv_heads=2, compile_mode="default")]
    other = [line.split("|")[2].strip() for line in format_table(records, "compact").splitlines()[4:]]
    assert other == ["", "", "reduce-overhead", "num_kv_heads 2"], other
