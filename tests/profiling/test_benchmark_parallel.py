"""--parallel through the benchmark command on CPU: each strategy's configuration runs on 2 gloo ranks under
torchrun, its row carries the group's figures; a rank that dies becomes a row naming it, a stopped rank too, within
the collective timeout; a killed sweep leaves no process and no folder; bad input exits 2."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from src.predict.cost import communication_per_step
from src.harness.dist_worker import collective_timeout_s
from src.harness.lifetime import EXIT_TERMINATED, TEMP_PREFIX
from src.harness.results import read_records
from tests.harness.processes import kill_naming, processes_naming, rank_of, wait_for
from src.profiling.benchmark import main
from src.spec import RunSpec

TINY_2 = ["--sizes", "tiny", "--device", "cpu", "--warmup_steps", "1", "--benchmark_steps", "2", "--mode", "train",
          "--context_length", "16", "--nproc_per_node", "2"]


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_TIMEOUT_S = 120  # both ranks of a tiny configuration run within ~10 s on the loaded 2-core CI machine
# How long to wait for nothing of the launch to be left after the sweep's SIGTERM or SIGKILL: a bound on the wait,
# not a speed check. The watch ends everything in about 2 s (a 0.5 s poll, SIGKILL 1 s after SIGTERM); a 10 s bound
# failed once with the suite and a second CI run sharing 2 cores (2026-12-04).
ENDED_WITHIN_S = 60
LONG = ["--benchmark_steps", "1000000", "--warmup_steps", "0"]  # runs until the test ends it


def _sweep(tmp_path, *args) -> tuple[subprocess.Popen, str]:
    """The benchmark command with its temporary folders in a folder of the test's own, which every process of the
    launch names on its command line (the launcher its logs, the ranks their spec)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    cmd = [sys.executable, "-m", "src.profiling.benchmark", *TINY_2, "--parallel", "ddp_flat", *args]
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file, not a pipe: the ranks inherit it and may outlive us
        parent = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, TMPDIR=str(temp)), stdout=subprocess.DEVNULL,
                                  stderr=stderr, start_new_session=True)
    return parent, str(temp)


def _ranks(temp: str) -> dict[int, int]:
    return {rank_of(pid): pid for pid in processes_naming(temp) if rank_of(pid) is not None}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_sweep_leaves_no_launcher_rank_or_folder(tmp_path, sig):
    parent, temp = _sweep(tmp_path, *LONG)
    try:
        assert wait_for(lambda: len(_ranks(temp)) == 2, START_TIMEOUT_S), "the ranks never started"
        assert len(processes_naming(temp)) == 3  # the launcher (torchrun's agent) and the two ranks
        parent.send_signal(sig)
        parent.wait(timeout=START_TIMEOUT_S)
        assert parent.returncode == (EXIT_TERMINATED if sig == signal.SIGTERM else -signal.SIGKILL)
        assert wait_for(lambda: not processes_naming(temp) and not os.listdir(temp), ENDED_WITHIN_S), \
            (processes_naming(temp), os.listdir(temp))
    finally:
        parent.kill()
        kill_naming(temp)


def test_a_stopped_rank_is_named_as_the_cause_within_the_collective_timeout(tmp_path):
    output = tmp_path / "rows.jsonl"
    parent, temp = _sweep(tmp_path, *LONG, "--collective_timeout_s", "3", "--output", str(output))
    try:
        assert wait_for(lambda: len(_ranks(temp)) == 2, START_TIMEOUT_S), "the ranks never started"
        os.kill(_ranks(temp)[1], signal.SIGSTOP)
        parent.wait(timeout=START_TIMEOUT_S)  # without the watch: gloo's 300 s and torchrun's 30 s
    finally:
        parent.kill()
        kill_naming(temp)
    assert parent.returncode == 1, (tmp_path / "stderr.txt").read_text()[-2000:]
    (row,), _ = read_records(str(output))
    assert row["status"].startswith("crash: rank 1: stopped answering: its process was stopped (state T"), row["status"]
    assert "past the collective timeout of 3 s" in row["status"]
    assert row["config"]["collective_timeout_s"] == 3
    assert not processes_naming(temp) and not os.listdir(temp)


def test_the_collective_timeout_fits_the_step_and_the_users_choice_wins():
    base = RunSpec(size="tiny", d_model=64, d_ff=256, num_heads=4, num_layers=2, device="cpu", parallel="ddp_flat",
                   nproc_per_node=2, context_length=16)
    bigger = RunSpec(**{**base.to_dict(), "size": "small", "d_model": 768, "d_ff": 3072, "num_heads": 12,
                        "num_layers": 12})
    assert collective_timeout_s(base) < 300 / 2  # gloo's default is 300 s; tiny steps take milliseconds
    assert collective_timeout_s(base) < collective_timeout_s(bigger)
    assert collective_timeout_s(RunSpec(**{**base.to_dict(), "compile": True})) > collective_timeout_s(base)
    assert collective_timeout_s(RunSpec(**{**base.to_dict(), "collective_timeout_s": 7.0})) == 7.0
    with pytest.raises(ValueError, match="collective_timeout_s"):
        RunSpec(**{**base.to_dict(), "collective_timeout_s": -1.0})


def _dist_workers_alive() -> list[int]:
    """This test process's launchers and ranks still running: their command lines name its temporary folders
    (lmbench-<pid>-...: the ranks' spec.json). Not every src.harness.dist_worker on the host: another suite run on
    a shared machine has its own, and failed this check with them."""
    return processes_naming(f"{TEMP_PREFIX}{os.getpid()}-")


def test_strategies_run_on_two_ranks_and_rows_carry_the_group_and_a_crashed_rank_becomes_a_row(tmp_path, capsys,
                                                                                              monkeypatch):
    """One sweep for both, as each launch starts torch in 3 processes (the crash case was a test of its own, 17.9 s
    of which 8 s was its second launch, the one that showed the sweep goes on: the strategies' launches show it here)."""
    monkeypatch.setenv("LMBENCH_INJECT_FAULT", "crash:parallel=ddp_flat")
    monkeypatch.setenv("LMBENCH_INJECT_FAULT_RANK", "1")
    output = tmp_path / "rows.jsonl"
    code = main(TINY_2 + ["--parallel", "none", "ddp_flat", "ddp_bucketed", "fsdp", "--bucket_mb", "0.01", "--output",
                          str(output)])
    out, _ = capsys.readouterr()
    assert code == 1  # a crashed configuration fails the sweep (an OOM alone does not: the test below)
    records, _ = read_records(str(output))
    assert records[1]["status"].startswith("crash: rank 1: killed by SIGABRT"), records[1]
    records = [records[0], *records[2:]]  # the sweep went on past the crash
    assert [(r["config"]["parallel"], r["world_size"], r["status"]) for r in records] == [
        ("none", 1, "ok"), ("ddp_bucketed", 2, "ok"), ("fsdp", 2, "ok")]
    for r in records[1:]:
        spec = RunSpec.from_dict(r["config"])
        assert r["tokens_per_second"] == pytest.approx(2 * r["tokens_per_second_per_gpu"])
        assert len(r["rank_median_time_forward"]) == len(r["rank_median_time_sync"]) == 2
        assert r["slowest_rank"] in (0, 1) and r["min_time_step_across_ranks"] <= r["max_time_step_across_ranks"]
        assert len(r["time_sync"]) == 2, "our strategies time the gradient-sync wait"
        predicted = communication_per_step(spec.model_spec(), spec.parallel, 2, bucket_mb=spec.bucket_mb)
        assert {op: r[f"comm_bytes_{op}"] for op in predicted} == predicted
        assert r["estimated_memory_bytes"] > 0
    assert records[2]["comm_bytes_reduce_scatter"] > 0 and records[1]["comm_bytes_all_reduce"] > 0
    assert "world_size" in out.splitlines()[0] and out.count("| ok") == 3
    assert _dist_workers_alive() == []


def test_a_rank_out_of_memory_becomes_an_oom_row_and_leaves_no_process(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMBENCH_INJECT_FAULT", "oom:parallel=ddp_flat")
    monkeypatch.setenv("LMBENCH_INJECT_FAULT_RANK", "1")
    output = tmp_path / "rows.jsonl"
    code = main(TINY_2 + ["--parallel", "ddp_flat", "--output", str(output)])
    capsys.readouterr()
    assert code == 0  # status "OOM": a result, as a single process's OOM row
    (record,), _ = read_records(str(output))
    assert record["error"].startswith("rank 1: OOM"), record
    assert record["status"] == "OOM"
    assert _dist_workers_alive() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="the count of GPUs on a host with none")
def test_ranks_without_a_gpu_are_asked_for_with_device_cpu(capsys):
    code = main(["--sizes", "tiny", "--parallel", "ddp_flat", "--nproc_per_node", "2"])  # --device auto
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.strip().splitlines() == [
        "benchmark: error: --nproc_per_node 2: no CUDA GPU found; pass --device cpu for 2 gloo ranks on the CPU"]


@pytest.mark.parametrize("args,message", [
    (["--parallel", "ddp_bucketed", "--bucket_mb", "0"], "positive number"),
    (["--parallel", "ddp_flat", "--dist_backend", "nccl"], "nccl needs a CUDA device"),
    (["--nproc_per_node", "2"], "needs --parallel"),
    (["--parallel", "fsdp", "--compile"], "fsdp does not run with compile"),
    (["--parallel", "fsdp", "--recipe", "fast"], "fsdp does not run with compile"),  # the recipe compiles
    (["--parallel", "torch_ddp", "--compile", "--bucket_mb", "0.5"], "torch_ddp does not run with compile with bucket_mb"),
    (["--parallel", "bogus"], "invalid choice: 'bogus'"),
])
def test_bad_parallel_input_fails_before_any_work_with_one_line_and_exit_2(args, message, capsys, tmp_path):
    code = main(["--device", "cpu", "--sizes", "tiny"] + args)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("changes,message", [
    ({"parallel": "fsdp", "compile": True}, "does not run with compile"),
    ({"parallel": "fsdp2", "precision": "fp16", "device": "cuda"}, "does not run with fp16"),
    ({"parallel": "fsdp", "recipe": "fast", "precision": "bf16", "attention": "sdpa"}, "does not run with compile"),
    ({"parallel": "fsdp", "activation_checkpointing": "blocks:1"}, "does not run with activation_checkpointing"),
    ({"parallel": "zero1", "optimizer": "fused"}, "does not run with optimizer fused"),
    ({"parallel": "ddp_flat", "dist_backend": "nccl"}, "nccl needs a CUDA device"),
    ({"parallel": "none", "nproc_per_node": 2}, "more than 1 needs a parallel strategy"),
    ({"parallel": "ddp_bucketed", "bucket_mb": 0.0}, "bucket_mb: must be positive"),
    ({"parallel": "ddp_flat", "nproc_per_node": 0}, "nproc_per_node: must be a positive integer"),
])
def test_run_spec_refuses_what_a_strategy_cannot_run(changes, message):
    base = dict(size="tiny", d_model=64, d_ff=256, num_heads=4, num_layers=2)
    with pytest.raises(ValueError, match=message):
        RunSpec(**base, **changes)
    RunSpec(**base, **{**changes, "parallel": "none", "nproc_per_node": 1, "bucket_mb": 1.0, "dist_backend": "",
                       "compile": False})  # the options alone are fine


def test_trace_with_ranks_writes_each_ranks_trace_and_the_measured_overlap(tmp_path, capsys):
    """--trace under --parallel: a trace per rank, and rank 0's row carries compute, communication, overlapped and
    exposed time per step (src/instruments/overlap.py), which add up as they must."""
    output, traces = tmp_path / "rows.jsonl", tmp_path / "traces"
    code = main(TINY_2 + ["--parallel", "ddp_overlap", "--trace", str(traces), "--output", str(output)])
    assert code == 0, capsys.readouterr().err[-2000:]
    (r,), _ = read_records(str(output))
    names = sorted(p.name for p in traces.iterdir())
    assert [n for n in names if n.endswith(".json.gz")] == [n for n in names if "_rank" in n and n.endswith(".json.gz")]
    assert len([n for n in names if n.endswith(".json.gz")]) == 2 and any(n.endswith("_overlap.md") for n in names)
    assert r["comm_time_s"] > 0 and r["compute_time_s"] > 0 and len(r["overlap_per_rank"]) == 2
    assert r["overlap_time_s"] + r["exposed_comm_time_s"] == pytest.approx(r["comm_time_s"])
