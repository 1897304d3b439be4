"""The scaling predictor: overlap accounting, limits, the command's output files and errors, and --check."""

import json
import os

import pytest

from src.predict.alpha_beta import LINKS, Network, collective_time
from src.predict.cost import collectives_per_step, memory_per_rank
from src.model.config import PRESETS
from src.model.families.cs336 import Cs336Model
from src.harness.hardware import find_gpu_spec
from src.profiling.predict import main
from src.predict.scaling import ComputeTime, Workload, compute_from_flops, predict, predict_scaling
from src.reports.predict_report import check, device_memory_bytes, measured_busbw

NET = Network(LINKS["nvlink4"], LINKS["ib_ndr"], gpus_per_node=8)
SMALL = Workload(Cs336Model("small", PRESETS["small"].with_(attention="sdpa", context_length=256)), "small", 4, 256)
TINY = Workload(Cs336Model("tiny", PRESETS["tiny"]), "tiny", 2, 16, "fp32")
H100 = find_gpu_spec("H100 SXM")


def test_world_size_one_is_the_single_gpu_step():
    compute = ComputeTime(0.1, 0.2, 0.05, "given")
    p = predict(SMALL, "fsdp2", 1, NET, compute, 80e9)
    assert p.comm_s == p.exposed_comm_s == 0
    assert p.step_s == pytest.approx(0.35)
    assert p.tokens_per_s_per_gpu == pytest.approx(4 * 256 / 0.35)


def test_flops_compute_time_by_hand():
    compute = compute_from_flops(SMALL, H100, 0.5)
    assert compute.forward == pytest.approx(SMALL.model.forward_flops(4, 256) / (0.5 * 989.4e12))
    assert compute.backward == pytest.approx(2 * compute.forward)


def test_nothing_hides_under_flat_ddp_and_all_but_the_edge_hides_under_overlap():
    compute = ComputeTime(10.0, 20.0, 0.0, "long compute")  # far longer than any collective here
    flat = predict(SMALL, "ddp_flat", 8, NET, compute, 80e9)
    assert flat.exposed_comm_s == pytest.approx(flat.comm_s) and flat.comm_s > 0
    overlap = predict(SMALL, "ddp_overlap", 8, NET, compute, 80e9)
    edge = collectives_per_step(SMALL.model, "ddp_overlap", 8)[0].edge_bytes
    assert overlap.exposed_comm_s == pytest.approx(collective_time("all_reduce", edge, 8, NET).seconds)
    assert overlap.step_s == pytest.approx(30.0 + overlap.exposed_comm_s)


def test_short_compute_exposes_the_excess_and_a_measured_overlap_replaces_the_model():
    compute = ComputeTime(1e-6, 2e-6, 0.0, "almost no compute")
    p = predict(SMALL, "ddp_overlap", 64, NET, compute, 80e9)
    assert p.exposed_comm_s == pytest.approx(p.comm_s - 2e-6)
    half = predict(SMALL, "ddp_overlap", 64, NET, compute, 80e9, overlap=0.5)
    assert half.exposed_comm_s == pytest.approx(p.comm_s / 2)


def test_scaling_rows_and_strategies_that_cannot_run():
    compute = compute_from_flops(SMALL, H100, 0.4)
    rows = predict_scaling(SMALL, "tp", [1, 2, 12, 16], NET, compute, 80e9)  # small has 12 heads
    assert [r.status for r in rows][:3] == ["ok", "ok", "ok"]
    assert rows[3].status.startswith("n/a") and "num_heads" in rows[3].status
    assert rows[0].scaling_efficiency == pytest.approx(1.0)
    zero = predict_scaling(SMALL, "zero1", [1, 2, 4, 8], NET, compute, 80e9)
    assert [r.memory_total_bytes for r in zero] == [
        memory_per_rank(SMALL.model, "zero1", n, 4, 256, "bf16").total for n in (1, 2, 4, 8)]


def test_command_prints_writes_rows_and_plot(tmp_path, capsys):
    out, plot = tmp_path / "p.jsonl", tmp_path / "p.png"
    code = main(["--sizes", "tiny", "--precision", "fp32", "--batch_size", "2", "--context_length", "16",
                 "--parallel", "ddp_flat", "fsdp", "--world_sizes", "1", "2", "16", "--inter_link", "roce100",
                 "--output", str(out), "--plot", str(plot)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| strategy" in printed and "fsdp" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {r["config"]["world_size"] for r in rows} == {1, 2, 16}
    assert rows[0]["kind"] == "prediction" and rows[0]["scaling_efficiency"] == pytest.approx(1.0)
    assert plot.stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["--d_model", "64"], "all four"),
    (["--world_sizes", "16", "--inter_link", "none"], "--inter_link none"),
    (["--mfu", "2"], "fraction"),
    (["--activation_checkpointing", "layers"], "blocks:N"),
    (["--link", "ib_ndr"], "network"),
    (["--results", "/nonexistent/file.jsonl"], "--results"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def row(world_size: int, step: float, peak: float, strategy: str = "none", gpu: str = "NVIDIA H100 80GB HBM3") -> dict:
    c = PRESETS["small"]
    return {"config": {"size": "small", "d_model": c.d_model, "d_ff": c.d_ff, "num_layers": c.num_layers,
                       "num_heads": c.num_heads, "vocab_size": c.vocab_size, "context_length": 256, "batch_size": 4,
                       "mode": "train", "precision": "bf16", "attention": "sdpa", "device": "cuda",
                       "parallel": strategy, "world_size": world_size},
            "status": "ok", "median_time_step": step, "time_forward": [step / 3], "time_backward": [2 * step / 3],
            "time_optimizer": [0.0], "peak_memory_bytes": peak, "env": {"gpu_name": gpu}}


def test_check_uses_flops_at_world_size_one_and_the_measured_row_beyond():
    records = [row(1, 0.030, 5e9), row(2, 0.033, 4e9, "ddp_flat")]
    checked = check(records, NET, 0.4, "r.jsonl")
    assert [c.world_size for c in checked] == [1, 2]
    one, two = checked
    assert one.compute_source.startswith("FLOPs at 40% MFU")
    assert one.predicted_memory_bytes == memory_per_rank(SMALL.model, "none", 1, 4, 256, "bf16").total
    assert two.compute_source == "measured row r.jsonl#1"
    expected = predict(SMALL, "ddp_flat", 2, NET, ComputeTime(0.01, 0.02, 0.0, ""), 80e9)
    assert two.predicted_step_s == pytest.approx(expected.step_s)
    assert two.measured_step_s == 0.033


def test_check_says_when_a_cpu_row_cannot_be_predicted():
    checked = check([row(2, 0.5, None, "ddp_flat", gpu="")], NET, 0.4, "cpu.jsonl")
    assert checked[0].predicted_step_s is None and "no world-size-1 row" in checked[0].note


def test_command_check_reports_errors(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [row(1, 0.030, 5e9), row(2, 0.033, 4e9, "ddp_flat")]))
    assert main(["--check", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "time error" in printed and "2 rows checked, 1 with world size > 1" in printed


def test_collectives_file_feeds_measured_bandwidth(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    rows = [{"op": "all_reduce", "world_size": 2, "size_bytes": s, "busbw_gbps": 100.0, "status": "ok"} for s in (1e3, 1e9)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "p.jsonl"
    assert main(["--sizes", "tiny", "--precision", "fp32", "--parallel", "ddp_flat", "--world_sizes", "2",
                 "--collectives", str(path), "--output", str(out)]) == 0
    record = json.loads(out.read_text().splitlines()[-1])
    assert "measured" in record["algorithms"]
    assert record["comm_s"] == pytest.approx(record["comm_bytes"]["all_reduce"] / 100e9)


def test_measured_rows_of_one_size_become_one_point_per_backend():
    rows = [{"config": {"op": "all_gather", "world_size": 4, "size_bytes": 1024, "dist_backend": b, "dtype": d},
             "busbw_gbps": v, "status": "ok"}
            for b, d, v in [("nccl", "fp32", 10.0), ("nccl", "bf16", 20.0), ("nccl", "bf16", 60.0), ("gloo", "fp32", 1.0)]]
    rows.append({"config": {"op": "all_gather", "world_size": 4, "size_bytes": 2048, "dist_backend": "nccl"},
                 "busbw_gbps": 5.0, "status": "wrong result"})
    assert measured_busbw(rows, "nccl") == {("all_gather", 4): [(1024, 20.0)]}
    assert measured_busbw(rows, "gloo") == {("all_gather", 4): [(1024, 1.0)]}


def test_collectives_file_of_another_backend_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"config": {"op": "all_reduce", "world_size": 2, "size_bytes": 1024, "dist_backend": "gloo"},
                                "busbw_gbps": 1.0, "status": "ok"}) + "\n")
    assert main(["--sizes", "tiny", "--world_sizes", "2", "--collectives", str(path)]) == 2
    assert "pass --collectives_backend" in capsys.readouterr().err


# ---- issue 21: --check reads with the one reader; --plot keeps every size's plot -----------------------------

def test_check_skips_lines_that_are_not_rows(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    lines = [json.dumps(row(1, 0.030, 5e9)), "42", "[1, 2]", "null", '{"a": 1}', json.dumps(row(2, 0.033, 4e9, "ddp_flat"))]
    path.write_text("\n".join(lines) + "\n")
    assert main(["--check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.count("predict: warning: ") == 4 and "2 rows checked, 1 with world size > 1" in out


@pytest.mark.parametrize("name, text", [("empty.jsonl", ""), ("README.md", "# A README\n\nprose, with a comma\n"),
                                        ("other.jsonl", '{"a": 1}\n')])
def test_check_of_an_empty_or_foreign_file_is_refused_in_one_line(tmp_path, capsys, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert main(["--check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("predict: error: --check") and len([e for e in err if "error" in e]) == 1


@pytest.mark.parametrize("plot, written", [("pp", ["pp_tiny.png", "pp_small.png"]),
                                           ("p.png", ["p_tiny.png", "p_small.png"])])
def test_one_plot_per_size_named_after_it(tmp_path, capsys, plot, written):
    assert main(["--sizes", "tiny", "small", "--parallel", "ddp_flat", "--world_sizes", "1", "2",
                 "--plot", str(tmp_path / plot)]) == 0
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plot: ")]
    assert printed == [f"plot: {tmp_path / name}" for name in written]
    assert sorted(os.listdir(tmp_path)) == sorted(written)


def test_one_size_plots_to_the_path_given_with_png_added_when_it_has_no_suffix(tmp_path, capsys):
    assert main(["--sizes", "tiny", "--parallel", "ddp_flat", "--world_sizes", "1", "2",
                 "--plot", str(tmp_path / "pp")]) == 0
    assert os.listdir(tmp_path) == ["pp.png"] and f"plot: {tmp_path / 'pp.png'}" in capsys.readouterr().err


def test_device_memory_comes_from_the_gpu_table_or_the_override():
    assert device_memory_bytes("NVIDIA B200", None) == find_gpu_spec("B200").memory_gb * 1e9  # missing before
    assert device_memory_bytes("NVIDIA T4", 16.0) == 16e9
    with pytest.raises(ValueError, match="pass --gpu_memory_gb"):
        device_memory_bytes("NVIDIA T4", None)
