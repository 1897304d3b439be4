"""Rows that look wrong, on synthetic rows shaped like the issues' runs (14: H200; 21: a busy CPU host): the report
and the benchmark say so."""

from src.profiling.benchmark import print_anomalies
from src.profiling.report import main as report_main
from src.harness.results import append_record
from src.reports.anomalies import (EFFICIENCY_CEILING, THROUGHPUT_DIP, anomalies, efficiency_above_one,
                                   forward_slower_than_backward, host_busy, part_longer_than_whole, throughput_dips)

PARAMETERS = {"small": 128_625_408, "medium": 423_183_360, "large": 969_411_840, "xl": 1_998_235_200}


def row(size, tflops, forward_ms, backward_ms, mode="train", recipe="fast", status="ok", context_length=1024,
        optimizer=None):
    if optimizer is None:  # what the fast recipe picks by size: fused AdamW under CUDA graphs (< 500M), else ours
        optimizer = ("fused" if PARAMETERS[size] < 500_000_000 else "ours") if recipe else "default"
    return {"config": {"size": size, "mode": mode, "recipe": recipe, "precision": "bf16", "attention": "sdpa",
                       "context_length": context_length, "batch_size": 4, "optimizer": optimizer},
            "status": status, "warnings": [], "parameters": PARAMETERS[size], "tflops": tflops,
            "median_time_forward": forward_ms / 1e3, "median_time_backward": backward_ms / 1e3,
            "time_forward": [forward_ms / 1e3] * 3, "time_backward": [backward_ms / 1e3] * 3,
            "time_optimizer": [0.01] * 3, "median_time_step": (forward_ms + backward_ms) / 1e3 + 0.01}


def issue_sweep():  # the issue's first H200 run: large at 141 TFLOP/s between medium's 332 and xl's 328
    return [row("medium", 332, 10, 20), row("large", 141, 94, 82), row("xl", 328, 61, 90)]


def test_the_issue_rows_are_pointed_out_and_healthy_ones_are_not():
    found = anomalies(issue_sweep())
    assert [(r["config"]["size"], "TFLOP/s" in w) for r, w in found] == [("large", False), ("large", True)]
    assert "94.0 ms" in found[0][1] and "82.0 ms" in found[0][1]
    assert "42% of the smaller medium's 332" in found[1][1]


def test_a_dip_is_judged_against_smaller_sizes_with_the_same_settings_only():
    # small models run slower per FLOP: that is not an anomaly, so the first size is never flagged
    assert throughput_dips([row("small", 100, 5, 10), row("medium", 332, 10, 20)]) == []
    # just above the threshold is fine, just below is not
    ok = [row("medium", 300, 10, 20), row("large", 300 * THROUGHPUT_DIP + 1, 20, 40)]
    low = [row("medium", 300, 10, 20), row("large", 300 * THROUGHPUT_DIP - 1, 20, 40)]
    assert throughput_dips(ok) == [] and len(throughput_dips(low)) == 1
    # a large row of another context or recipe has no smaller neighbour of its own settings
    assert throughput_dips([row("medium", 332, 10, 20), row("large", 100, 20, 40, context_length=2048),
                            row("large", 100, 20, 40, recipe="")]) == []
    # without a recipe the AdamW is a setting like any other: torch's default is slower than fused by design
    assert throughput_dips([row("medium", 332, 10, 20, recipe="", optimizer="fused"),
                            row("large", 200, 20, 40, recipe="", optimizer="default")]) == []
    # rows that did not run are no neighbours
    assert throughput_dips([row("medium", 332, 10, 20, status="OOM"), row("large", 100, 20, 40)]) == []


def test_forward_slower_than_backward_only_where_there_is_a_backward():
    assert forward_slower_than_backward(row("large", 141, 94, 82)) is not None
    assert forward_slower_than_backward(row("large", 141, 94, 82, mode="forward_backward")) is not None
    assert forward_slower_than_backward(row("large", 141, 82, 82)) is None  # equal is not slower
    assert forward_slower_than_backward(row("large", 141, 94, 0, mode="forward")) is None
    assert forward_slower_than_backward(row("large", 141, 94, 82, status="OOM")) is None


def test_the_benchmark_prints_them_at_the_end_and_adds_them_to_the_rows(capsys):
    records = issue_sweep()
    print_anomalies(records)
    err = capsys.readouterr().err
    assert "2 row(s) look wrong" in err and err.count("warning: large") == 2
    assert len(records[1]["warnings"]) == 2 and records[0]["warnings"] == records[2]["warnings"] == []
    print_anomalies([row("medium", 332, 10, 20), row("xl", 328, 61, 90)])
    assert capsys.readouterr().err == ""


def test_the_report_summary_lists_them(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    for record in issue_sweep():
        append_record(str(path), record)
    assert report_main([str(path), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("## Rows that look wrong"):].split("\n## ")[0]
    listed = [line for line in section.splitlines() if line.startswith("- ")]
    assert len(listed) == 2 and all(line.startswith("- large") for line in listed)


# ---- issue 21: readings on a busy host, and figures that cannot be ------------------------------------------

def busy(record, others, load, needed=2, cpus=2, device="cpu"):
    record["env"] = {"device": device, "cpu_count": cpus, "cores_needed": needed, "load_average_1m": load,
                     "other_cpu_cores": others, "busiest_processes": "4242 python 95%"}
    return record


def test_a_row_measured_on_a_busy_host_is_flagged_and_an_idle_or_old_one_is_not():
    # the issue's host: load 1.5-5 on 2 cores, a CPU run using both
    warning = host_busy(busy(row("medium", 332, 10, 20), others=1.9, load=4.0))
    assert warning and "4242 python 95%" in warning and "load 4" in warning and "every phase on the CPU" in warning
    assert host_busy(busy(row("medium", 332, 10, 20), others=0.05, load=2.0)) is None  # load 2 = the run itself
    assert host_busy(busy(row("medium", 332, 10, 20), others=0.0, load=5.0)) is not None  # load past the run's own
    # a CUDA run needs one core for its launching thread: 60 busy cores of 64 leave it room
    assert host_busy(busy(row("medium", 332, 10, 20), others=60, load=61, needed=1, cpus=64, device="cuda")) is None
    assert "host-bound" in host_busy(busy(row("medium", 332, 10, 20), others=63.9, load=65, needed=1, cpus=64,
                                          device="cuda"))
    assert host_busy(row("medium", 332, 10, 20)) is None  # rows before the load was recorded


def test_the_report_lists_a_busy_host_row():
    found = anomalies([row("medium", 332, 10, 20), busy(row("large", 330, 20, 40), others=1.9, load=4.0)])
    assert [(r["config"]["size"], "host was busy" in w) for r, w in found] == [("large", True)]


def test_a_part_longer_than_its_whole_is_flagged():
    # the attention benchmark on the busy host: forward alone slower than forward+backward
    (warning,) = part_longer_than_whole({"forward": 0.012, "backward": 0.010}, "forward+backward", 0.011)
    assert warning.startswith("forward (12 ms) took longer than forward+backward (11 ms)")
    assert part_longer_than_whole({"forward": 0.004, "backward": 0.007}, "forward+backward", 0.011) == []
    assert part_longer_than_whole({"forward": 0.004}, "forward+backward", None) == []


def test_a_scaling_efficiency_well_above_one_is_flagged():
    assert "268%" in efficiency_above_one(2.68)
    assert efficiency_above_one(EFFICIENCY_CEILING) is None and efficiency_above_one(1.12) is None  # sharded AdamW
    assert efficiency_above_one(None) is None
