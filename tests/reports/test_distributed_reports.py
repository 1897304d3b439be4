"""Scaling, overlap and collectives bandwidth in the report: the numbers by hand, and the PNGs through the CLI."""

import matplotlib.image
import pytest

from src.distributed.collectives import bandwidths
from src.profiling.report import main
from src.reports import distributed
from tests.reports.test_report import make_record, write

# (strategy, world size, group tokens/s): ddp_overlap loses 10% per GPU at 2 ranks and 20% at 4
THROUGHPUT = [("none", 1, 1000.0), ("ddp_overlap", 1, 1000.0), ("ddp_overlap", 2, 1800.0), ("ddp_overlap", 4, 3200.0),
              ("fsdp", 2, 1500.0)]


def distributed_record(parallel, world, tokens, overlap=None):
    record = make_record()
    record["config"].update(parallel=parallel, nproc_per_node=world, dist_backend="nccl" if world > 1 else "")
    record["world_size"] = world
    record["tokens_per_second"] = tokens
    if overlap:
        record.update(zip(distributed.OVERLAP_FIELDS, overlap))
    return record


def collective_record(op, world, size, seconds, status="ok"):
    algbw, busbw = bandwidths(op, size, seconds, world)
    return {"kind": "collective", "status": status,
            "config": {"op": op, "size_bytes": size, "dtype": "bfloat16", "world_size": world,
                       "dist_backend": "nccl", "device": "cuda", "iters": 20, "warmup": 5},
            "median_time_s": seconds, "algbw_gbps": algbw, "busbw_gbps": busbw,
            "env": {"device": "cuda", "gpu_name": "NVIDIA H200", "nccl_version": "2.27.3"}}


def cells(markdown: str) -> list[list[str]]:
    """The rows of a markdown table as lists of trimmed cells (tabulate pads them to a column's width)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]


def scaling_rows():
    return [distributed_record(*row) for row in THROUGHPUT]


def collective_rows():
    rows = []
    for world in (2, 4):
        for i, size in enumerate(1024 * 4**k for k in range(6)):
            rows.append(collective_record("all_reduce", world, size, 1e-5 * (i + 1)))
            rows.append(collective_record("all_gather", world, size, 2e-5 * (i + 1)))
    return rows


def test_scaling_table_per_gpu_and_efficiency():
    table = {(label, n): (per_gpu, eff) for label, n, per_gpu, eff in distributed.scaling_table(scaling_rows())}
    assert table[("parallel ddp_overlap", 2)] == (900.0, 0.9)
    assert table[("parallel ddp_overlap", 4)] == (800.0, 0.8)
    assert table[("parallel fsdp", 2)] == (750.0, 0.75)  # no fsdp run at n=1: against parallel=none
    assert table[("parallel none", 1)] == (1000.0, 1.0)


def test_per_gpu_field_wins_over_dividing_the_group():
    row = distributed_record("ddp_flat", 2, 1800.0)
    row["tokens_per_second_per_gpu"] = 950.0
    assert distributed.tokens_per_gpu(row) == 950.0


def test_overlap_table_stacks_compute_only_overlapped_and_exposed():
    row = distributed_record("ddp_overlap", 2, 1800.0, overlap=(0.010, 0.004, 0.003, 0.001))
    (label, compute_only, both, exposed, hidden), = distributed.overlap_table([row])
    assert (compute_only, both, exposed) == pytest.approx((0.007, 0.003, 0.001))
    assert hidden == pytest.approx(0.75)
    assert ["parallel ddp_overlap, n=2", "7.00", "3.00", "1.00", "75%"] in cells(distributed.overlap_markdown([row]))


def test_bandwidth_summary_names_the_best_size_and_share_of_peak():
    text = distributed.bandwidth_markdown(collective_rows(), link_peak_gbps=450.0)
    # all_reduce at n=4: busbw = size / t x 1.5; the largest size, 1 MB in 60 us, is the best: 26.2 GB/s
    best = 1024**2 / 6e-5 / 1e9 * 1.5
    assert ["all_reduce, n=4", f"{best:.3g}", "1 MB", f"{100 * best / 450:.0f}%"] in cells(text)


def test_report_cli_draws_the_three_figures(tmp_path):
    rows = scaling_rows()
    rows[2].update(zip(distributed.OVERLAP_FIELDS, (0.010, 0.004, 0.003, 0.001)))
    rows += collective_rows() + [collective_record("broadcast", 4, 1024, 1e-5, status="wrong result: x")]
    path = write(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "report"
    assert main([path, "--out", str(out), "--link_peak_gbps", "450"]) == 0
    text = (out / "report.md").read_text()
    for name in ("scaling.png", "overlap.png", "bus_bandwidth.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[1] == 1200 and image.shape[0] > 200
        assert f"]({name})" in text
    assert ["parallel ddp_overlap", "4", "800", "80%"] in cells(text)
    assert "broadcast, n=4, 1 KB: wrong result: x" in text


def test_a_collectives_only_file_gets_its_own_report_and_csv_reads_the_same(tmp_path):
    for name in ("c.jsonl", "c.csv"):
        path = write(tmp_path / name, collective_rows())
        out = tmp_path / (name + "_report")
        assert main([path, "--out", str(out)]) == 0
        text = (out / "report.md").read_text()
        assert text.startswith("# Collectives report") and (out / "bus_bandwidth.png").exists()
        assert any(row[0] == "all_gather, n=2" for row in cells(text))


def test_ab_comparison_refuses_a_collectives_only_file(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", collective_rows())
    b = write(tmp_path / "b.jsonl", scaling_rows())
    assert main([a, b, "--out", str(tmp_path / "ab")]) == 2
    assert "only collectives rows" in capsys.readouterr().err


# ---- issue 21: impossible scaling, and which strategy to pick ------------------------------------------------

def test_an_efficiency_well_above_one_is_flagged_in_the_report(tmp_path):
    # the 268%: a world-size-1 row measured while the host was busy, against a fair 2-rank row
    rows = [distributed_record("ddp_overlap", 1, 1000.0), distributed_record("ddp_overlap", 2, 5360.0)]
    assert distributed.scaling_warnings(rows) == [
        f"- parallel ddp_overlap, n=2: {distributed.efficiency_above_one(2.68)}"]
    assert distributed.scaling_warnings(scaling_rows()) == []  # 90% and 80% are fine
    out = tmp_path / "report"
    assert main([write(tmp_path / "rows.jsonl", rows), "--out", str(out)]) == 0
    assert "268% is above 150%" in (out / "report.md").read_text()


def test_the_report_names_the_fastest_strategy_that_fits_with_its_margin(tmp_path):
    rows = scaling_rows() + [distributed_record("zero1", 2, 0.0)]
    rows[-1]["status"], rows[-1]["tokens_per_second"] = "OOM: rank 1: CUDA out of memory", None
    lines = distributed.pick_lines(rows)
    # n=1: none and ddp_overlap tie at 1000 (the first listed wins); n=2: ddp_overlap 900/GPU against fsdp's 750
    assert lines[1] == ("- n=2: ddp_overlap: 900 tokens/s per GPU, 20% ahead of fsdp (750) (within the 25% run-to-run "
                        "noise of one run each: measure both again); does not fit: zero1")
    assert len(lines) == 2  # n=4 has one strategy: nothing to choose
    out = tmp_path / "report"
    assert main([write(tmp_path / "rows.jsonl", rows), "--out", str(out)]) == 0
    assert "## Which strategy to pick" in (out / "report.md").read_text()
