"""`python -m src.profiling.collectives` on CPU: a real 2-rank gloo run that writes checked rows; bad input; a failed
group; the run without arguments, its progress and its Ctrl-C."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from src.distributed.collectives import OPS, Measurement, bus_factor
from src.harness.launch import LaunchResult
from src.profiling import collectives
from src.distributed.comm_range import format_bytes
from src.profiling.collectives import main, measurement_record, parse_size

SIZES = [1024, 4096, 16384]  # --min_size 1K --max_size 16K: three rungs of the default x4 ladder


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_rank_gloo_run_writes_a_checked_row_per_op_dtype_and_size(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    code = main(["--dist_backend", "gloo", "--nproc_per_node", "2", "--min_size", "1K", "--max_size", "16K",
                 "--iters", "3", "--warmup", "1", "--dtype", "float32", "int64", "--output", str(out)])
    assert code == 0
    rows = _rows(out)
    assert len(rows) == len(OPS) * 2 * len(SIZES)
    seen = {(r["config"]["op"], r["config"]["dtype"], r["config"]["size_bytes"]) for r in rows}
    assert seen == {(op, dtype, size) for op in OPS for dtype in ("float32", "int64") for size in SIZES}
    for r in rows:
        assert r["status"] == "ok" and r["max_relative_error"] == 0.0  # small integers: exact in both dtypes
        assert r["config"]["world_size"] == 2 and r["config"]["dist_backend"] == "gloo"
        assert len(r["times_s"]) == 3 and min(r["times_s"]) > 0
        assert r["p20_time_s"] <= r["median_time_s"] <= r["p80_time_s"]
        assert r["algbw_gbps"] == pytest.approx(r["config"]["size_bytes"] / r["median_time_s"] / 1e9)
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * bus_factor(r["config"]["op"], 2))
        assert r["env"]["torch_version"] == torch.__version__
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| op") and len(table) == 2 + len(rows)  # header, rule, one line a row; printed last


@pytest.mark.parametrize("argv, message", [
    (["--min_size", "64K", "--max_size", "1K"], "larger than --max_size"),
    (["--max_size", "1X"], "not a size"),
    (["--factor", "1"], "at least 2"),
    (["--nproc_per_node", "0"], "at least 1"),
    (["--output", "rows.txt"], ".csv or .jsonl"),
    (["--ops", "all_to_all"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(collectives, "run_torchrun", lambda *a, **k: pytest.fail("work started"))
    assert main(["--dist_backend", "gloo", *argv]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and message in err
    assert out == "" and list(tmp_path.iterdir()) == []


def test_the_command_exits_2_on_bad_input():
    proc = subprocess.run([sys.executable, "-m", "src.profiling.collectives", "--max_size", "1X"], capture_output=True,
                          text=True, timeout=120, cwd=collectives.__file__.rsplit("/src/", 1)[0])
    assert proc.returncode == 2 and proc.stderr.startswith("python -m src.profiling.collectives: error:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message torch gives without CUDA")
def test_nccl_without_cuda_is_a_usage_error(capsys):
    assert main(["--dist_backend", "nccl"]) == 2
    assert "needs CUDA" in capsys.readouterr().err


def test_a_failed_group_becomes_a_row_naming_the_rank_and_exits_1(tmp_path, monkeypatch, capsys):
    failed = LaunchResult(returncode=1, timed_out=False, failed_ranks={1: "killed by SIGKILL"}, stderr_tail="")
    monkeypatch.setattr(collectives, "run_torchrun", lambda *a, **k: failed)
    out = tmp_path / "c.jsonl"
    assert main(["--dist_backend", "gloo", "--nproc_per_node", "2", "--output", str(out)]) == 1
    (row,) = _rows(out)
    assert row["status"] == "crash: rank 1: killed by SIGKILL" and row["config"]["world_size"] == 2
    assert "crash: rank 1: killed by SIGKILL" in capsys.readouterr().out  # in the printed table too


def test_a_wrong_result_is_a_row_that_says_so():
    m = Measurement("all_reduce", 4096, 1024, [1e-4, 2e-4, 3e-4], max_relative_error=0.5, tolerance=0.0)
    record = measurement_record(m, "int32", "gloo", 2, 3, 1, {"device": "cpu"})
    assert record["status"] == "wrong result: max relative error 0.5 > tolerance 0"
    assert record["median_time_s"] == 2e-4 and record["algbw_gbps"] == pytest.approx(4096 / 2e-4 / 1e9)


@pytest.mark.parametrize("text, size", [("1K", 1024), ("64KB", 65536), ("1m", 1024**2), ("1G", 1024**3), ("4096", 4096)])
def test_sizes_read_and_print_in_binary_units(text, size):
    assert parse_size(text) == size
    assert parse_size(format_bytes(size).replace(" ", "")) == size


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rows_on_cuda_carry_the_nccl_version():
    from src.harness.environment import communication_environment

    env = communication_environment("cuda")
    assert env["nccl_version"].count(".") == 2 and "gpu_topology" in env


def test_under_the_users_own_torchrun_rank_0_writes_and_prints(tmp_path):
    from src.harness.launch import free_port, torchrun_argv

    out = tmp_path / "c.csv"
    args = ["--dist_backend", "gloo", "--ops", "all_reduce", "broadcast", "--min_size", "4K", "--max_size", "4K",
            "--iters", "2", "--warmup", "0", "--output", str(out)]
    proc = subprocess.run(torchrun_argv(2, "src.profiling.collectives", args, free_port()), capture_output=True,
                          text=True, timeout=120, cwd=collectives.__file__.rsplit("/src/", 1)[0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2  # printed once, by rank 0: header, rule, two rows
    from src.harness.results import read_records

    rows, _ = read_records(str(out))
    assert [(r["op"], r["size_bytes"], r["status"]) for r in rows] == [("all_reduce", 4096, "ok"), ("broadcast", 4096, "ok")]


def test_with_no_arguments_on_cpu_it_shows_progress_and_ctrl_c_gives_one_line_and_the_table(tmp_path):
    """The command as a new user types it, without a GPU: 2 gloo ranks up to 16 MB, a line per finished row on
    stderr; Ctrl-C gives one line, the table of the rows that finished and exit 130, and leaves no process."""
    from tests.harness.processes import kill_naming, processes_naming, wait_for

    temp = tmp_path / "tmp"
    temp.mkdir()
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "src.profiling.collectives"], stdout=subprocess.PIPE,
                                stderr=err, text=True, cwd=collectives.__file__.rsplit("/src/", 1)[0],
                                env=dict(os.environ, TMPDIR=str(temp), CUDA_VISIBLE_DEVICES=""))  # on a GPU host too
    try:
        assert wait_for(lambda: "[2/32]" in err_path.read_text() or proc.poll() is not None, 120), \
            err_path.read_text()[-2000:]
        head = err_path.read_text()
        assert "world size 2 (gloo): 4 op(s) x 1 dtype(s) x 8 size(s), 1 KB .. 16 MB" in head
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        kill_naming(str(temp))
    stderr = err_path.read_text()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    tail = stderr[len(head):].strip().splitlines()
    assert [line for line in tail if "interrupted" in line] == [tail[-1]], tail
    assert "measurement(s) finished" in tail[-1]
    finished = int(tail[-1].split("interrupted: ")[1].split()[0])
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert finished >= 2 and len(table) == 2 + finished  # header, rule, one line per finished measurement
    assert not processes_naming(str(temp)) and os.listdir(temp) == []
