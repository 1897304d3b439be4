"""--trace on a full disk: the measurement stays (status ok), the row says the trace could not be written, and no
partial .json.gz is left; with several ranks a rank whose trace failed is named by rank 0 instead of waited for."""

import errno
import os

import torch

from src.harness.runner import run_spec_with_environment
from src.harness.results import read_records
from src.profiling.benchmark import build_parser, main, resolve
from src.instruments.torch_trace import TorchTrace
from tests.instruments.test_instruments import small_and_quick
from tests.profiling.test_benchmark_parallel import TINY_2


def _disk_fills_after_a_few_bytes(self, path):
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b partial")  # the start of a gzip stream, as a real export cut short leaves it
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def test_a_full_disk_costs_the_trace_not_the_measurement(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.profiler.profile, "export_chrome_trace", _disk_fills_after_a_few_bytes)
    spec = small_and_quick(trace=str(tmp_path))
    record = run_spec_with_environment(spec)
    assert record["status"] == "ok" and len(record["time_forward"]) == spec.benchmark_steps
    (warning,) = [w for w in record["warnings"] if w.startswith("trace:")]
    assert warning == f"trace: could not write {TorchTrace(spec).trace_path}: no space left on the device"
    assert "trace_summary" not in record
    assert os.listdir(tmp_path) == []  # neither the trace nor its partial export nor a table
    assert "failed before its measured steps" not in capsys.readouterr().err


def test_a_rank_whose_trace_cannot_be_written_is_named_in_rank_0s_row(tmp_path, capsys):
    """Rank 1's export goes to /dev/full (a symlink where its partial file would be): ENOSPC on its first write."""
    output, traces = tmp_path / "rows.jsonl", tmp_path / "traces"
    argv = TINY_2 + ["--parallel", "ddp_flat", "--trace", str(traces), "--output", str(output)]
    (spec,), _ = resolve(build_parser().parse_args(argv))
    rank1 = TorchTrace(spec).trace_path.replace(".json.gz", "_rank1.json.gz")
    traces.mkdir()
    os.symlink("/dev/full", rank1.replace(".json.gz", ".partial.json.gz"))
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    (row,), _ = read_records(str(output))
    assert row["status"] == "ok"
    assert f"trace: no overlap figures: rank 1 could not write {rank1}: no space left on the device" in row["warnings"]
    assert "comm_time_s" not in row
    names = sorted(os.listdir(traces))
    assert not [n for n in names if "rank1" in n and n.endswith(".json.gz")]  # no partial trace, no link left
    assert [n for n in names if n.endswith(".json.gz")] == [os.path.basename(rank1).replace("rank1", "rank0")]
