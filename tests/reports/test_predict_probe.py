"""The predictor with a split probe: TP compute divided by the measured efficiency, hidden communication charged its
measured slowdown, each exactly as stated; the command's output, --check and the plot with and without a probe."""

import json
from dataclasses import asdict

import pytest

from src.harness.results import read_records
from src.model.config import PRESETS
from src.model.families.cs336 import Cs336Model
from src.predict.alpha_beta import LINKS, Network
from src.predict.scaling import ComputeTime, Prediction, Workload, predict, predict_scaling
from src.predict.split import (COPY_ENGINE, NCCL_LIKE, OVERLAP, SUMMARY, OverlapTiming, ProbeConfig, SplitSummary,
                               probe_record)
from src.profiling.predict import main
from src.reports.predict_plots import step_parts, tp_needed
from src.reports.predict_report import check
from src.reports.predict_rows import split_probe
from tests.reports import test_predict  # its measured rows (the module, so pytest collects its tests once)

NET = Network(LINKS["nvlink4"], LINKS["ib_ndr"], gpus_per_node=8)
SMALL = Workload(Cs336Model("small", PRESETS["small"].with_(attention="sdpa", context_length=256)), "small", 4, 256)
COMPUTE = ComputeTime(10.0, 20.0, 0.0, "long compute")  # far longer than any collective here: all but edges hide


def probe_rows(workload: Workload, efficiency: dict[int, float], slowdown: float | None = None) -> list[dict]:
    """Rows as the probe writes them (its one writer), with chosen efficiencies and slowdown."""
    a = workload.model.architecture
    config = ProbeConfig("small", asdict(a), workload.batch_size, workload.context_length, "bf16", "cuda", 25.0, 100.0)
    rows = [probe_record(SUMMARY, config, SplitSummary(t, 1.0, 0.0, 1.0, e, e), {}) for t, e in efficiency.items()]
    if slowdown is not None:
        rows.append(probe_record(OVERLAP, config, OverlapTiming(NCCL_LIKE, 8192, 20, 2**28, 32, 10.0, 10.0 * slowdown,
                                                                slowdown, 20.0, 10), {}))
        rows.append(probe_record(OVERLAP, config, OverlapTiming(COPY_ENGINE, 8192, 20, 2**28, 0, 10.0, 10.5, 1.05,
                                                                20.0, 10), {}))
    return rows


def write(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_half_efficiency_at_tp_2_doubles_the_tp_compute_exactly():
    probe = split_probe(probe_rows(SMALL, {1: 1.0, 2: 0.5}), SMALL, "p.jsonl")
    for strategy in ("tp", "fsdp_tp"):
        plain = predict(SMALL, strategy, 2, NET, COMPUTE, 80e9, tp_size=2)
        probed = predict(SMALL, strategy, 2, NET, COMPUTE, 80e9, tp_size=2, probe=probe)
        assert plain.tp == probed.tp == 2
        assert probed.compute_s == 2 * plain.compute_s  # no optimizer time: all of it is forward and backward
        assert probed.split_cost_s == plain.compute_s and plain.split_cost_s == 0
        assert probed.exposed_comm_s == plain.exposed_comm_s  # TP's all-reduces are exposed either way
        assert probed.step_s == pytest.approx(plain.step_s + plain.compute_s)
        assert "split efficiency 0.5 (tp 2 measured, p.jsonl)" in probed.notes


def test_a_probe_leaves_strategies_without_tp_unsplit():
    probe = split_probe(probe_rows(SMALL, {1: 1.0, 2: 0.5}), SMALL, "p.jsonl")
    plain = predict(SMALL, "fsdp2", 2, NET, COMPUTE, 80e9)
    assert predict(SMALL, "fsdp2", 2, NET, COMPUTE, 80e9, probe=probe).compute_s == plain.compute_s


def test_hidden_communication_costs_the_measured_slowdown_on_the_compute_it_overlaps():
    probe = split_probe(probe_rows(SMALL, {1: 1.0}, slowdown=1.25), SMALL, "p.jsonl")
    assert probe.slowdown == 1.25 and probe.copy_engine_slowdown == 1.05
    for strategy in ("ddp_overlap", "fsdp2"):
        plain = predict(SMALL, strategy, 8, NET, COMPUTE, 80e9)
        probed = predict(SMALL, strategy, 8, NET, COMPUTE, 80e9, probe=probe)
        assert plain.hidden_comm_s > 0 and plain.overlap_cost_s == 0
        assert probed.hidden_comm_s == plain.hidden_comm_s and probed.compute_s == plain.compute_s
        assert probed.overlap_cost_s == pytest.approx(plain.hidden_comm_s * 0.25, rel=1e-12)
        assert probed.step_s == pytest.approx(plain.step_s + 0.25 * plain.hidden_comm_s, rel=1e-12)
    flat = predict(SMALL, "ddp_flat", 8, NET, COMPUTE, 80e9, probe=probe)  # nothing hides: nothing slowed
    assert flat.hidden_comm_s == 0 and flat.overlap_cost_s == 0


def test_a_measured_overlap_fraction_is_slowed_on_the_part_it_hides():
    probe = split_probe(probe_rows(SMALL, {1: 1.0}, slowdown=1.5), SMALL, "p.jsonl")
    half = predict(SMALL, "ddp_overlap", 8, NET, COMPUTE, 80e9, overlap=0.5, probe=probe)
    assert half.overlap_cost_s == pytest.approx(half.comm_s / 2 * 0.5, rel=1e-12)


def test_a_degree_outside_the_probe_is_an_n_a_row_and_one_between_is_interpolated():
    probe = split_probe(probe_rows(SMALL, {1: 1.0, 2: 0.8, 8: 0.5}), SMALL, "p.jsonl")
    rows = predict_scaling(SMALL, "tp", [2, 4, 12], NET, COMPUTE, 80e9, probe=probe)  # small has 12 heads
    assert [r.status for r in rows[:2]] == ["ok", "ok"]
    assert any("tp 4 interpolated between tp 2 and 8" in note for note in rows[1].notes)
    assert rows[2].status.startswith("n/a: tp 12 is outside the split probe's degrees (1, 2, 8)")


def test_the_command_states_its_assumptions_with_and_without_a_probe(tmp_path, capsys):
    argv = ["--sizes", "small", "--batch_size", "4", "--context_length", "256", "--parallel", "tp", "fsdp2",
            "--world_sizes", "1", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "single-GPU compute / tp at constant MFU (no --probe)" in printed
    assert "hidden communication is free (no --probe)" in printed
    out = tmp_path / "pred.jsonl"
    path = write(tmp_path / "probe.jsonl", probe_rows(SMALL, {1: 1.0, 2: 0.5}, slowdown=1.25))
    assert main(argv + ["--probe", path, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "split efficiency measured by probe.jsonl (tp 2 0.5;" in printed
    assert "slows the compute under it 1.25x" in printed and "1.05x beside copy-engine copies" in printed
    rows, _ = read_records(str(out))
    tp2 = next(r for r in rows if r["config"]["parallel"] == "tp" and r["config"]["world_size"] == 2)
    assert tp2["split_cost_s"] > 0 and tp2["config"]["probe"] == "probe.jsonl"


def test_a_probe_of_another_shape_is_said_and_a_file_without_probe_rows_refused(tmp_path, capsys):
    other = Workload(Cs336Model("medium", PRESETS["medium"]), "medium", 4, 256)
    path = write(tmp_path / "probe.jsonl", probe_rows(other, {1: 1.0, 2: 0.5}))
    argv = ["--sizes", "small", "--batch_size", "4", "--context_length", "256", "--parallel", "tp", "--world_sizes", "2"]
    assert main(argv + ["--probe", path]) == 0
    assert "constant MFU (no split-probe rows of this shape in" in capsys.readouterr().out
    foreign = write(tmp_path / "bench.jsonl", [{"status": "ok", "config": {"mode": "train"}}])
    assert main(argv + ["--probe", foreign]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no ok split_summary or overlap rows" in err


def test_check_predicts_with_the_probe():
    """Measured TP rows cannot be written yet (the benchmark runs no tp), so the check of an fsdp2 row shows the
    probe's overlap slowdown entering --check as it enters predict."""
    records = [test_predict.row(1, 0.030, 5e9), test_predict.row(2, 0.040, 4e9, "fsdp2")]  # small, batch 4 x 256
    rows = probe_rows(SMALL, {1: 1.0, 2: 0.5}, slowdown=1.5)
    plain = check(records, NET, 0.4, "r.jsonl")[1]
    probed = check(records, NET, 0.4, "r.jsonl", rows, "p.jsonl")[1]
    expected = predict(SMALL, "fsdp2", 2, NET, ComputeTime(0.01, 0.02, 0.0, ""), 80e9,
                       probe=split_probe(rows, SMALL, "p.jsonl"))
    assert expected.overlap_cost_s > 0
    assert probed.predicted_step_s == pytest.approx(expected.step_s)
    assert probed.predicted_step_s == pytest.approx(plain.predicted_step_s + expected.overlap_cost_s)


def row(strategy: str, n: int, tp: int, fits: bool, **times) -> Prediction:
    t = {"compute_s": 0.3, "split_cost_s": 0.1, "exposed_comm_s": 0.05, "overlap_cost_s": 0.02, **times}
    return Prediction(strategy, n, 1, n // tp, tp, t["compute_s"], {}, 0.1, t["exposed_comm_s"], 0.0, 0.0, {}, 1,
                      fits, split_cost_s=t["split_cost_s"], overlap_cost_s=t["overlap_cost_s"])


def test_tp_is_needed_where_only_a_tp_row_fits_and_its_step_parts_add_up():
    predictions = {"fsdp2": [row("fsdp2", 1, 1, False), row("fsdp2", 2, 1, False), row("fsdp2", 4, 1, True)],
                   "tp": [row("tp", 1, 1, False), row("tp", 2, 2, True), row("tp", 4, 4, True)]}
    assert tp_needed(predictions) == [2]  # at 1 nothing fits; at 4 fsdp2 fits without TP
    parts = step_parts(row("tp", 2, 2, True))
    assert parts["compute at constant MFU"] == pytest.approx(200.0) and parts["split (probe)"] == pytest.approx(100.0)
    assert sum(parts.values()) == pytest.approx((0.3 + 0.05 + 0.02) * 1e3)


def test_the_plot_has_the_tp_panel_when_a_tp_strategy_is_predicted(tmp_path, capsys):
    path = write(tmp_path / "probe.jsonl", probe_rows(SMALL, {1: 1.0, 2: 0.9, 4: 0.7}, slowdown=1.1))
    plot = tmp_path / "p.png"
    assert main(["--sizes", "small", "--batch_size", "4", "--context_length", "256", "--parallel", "tp", "fsdp2",
                 "--world_sizes", "1", "2", "4", "--probe", path, "--plot", str(plot)]) == 0
    import matplotlib.image

    height, width = matplotlib.image.imread(str(plot)).shape[:2]
    assert width / height == pytest.approx(18 / 4.8)  # three panels; two-panel plots are 12 x 4.8
