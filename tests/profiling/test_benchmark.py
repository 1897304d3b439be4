import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from src.profiling.benchmark import main
from src.harness.results import read_records
from src.reports.table import ORIGINAL_COLUMNS

TINY = ["--sizes", "tiny", "--device", "cpu", "--warmup_steps", "1", "--benchmark_steps", "2"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def header_of(markdown: str) -> list[str]:
    return [c.strip() for c in markdown.splitlines()[0].strip("|").split("|")]


def test_end_to_end_on_tiny_prints_the_original_columns_first_and_writes_rows(tmp_path, capsys):
    output = tmp_path / "results.jsonl"
    code, out, err = run_cli(TINY + ["--mode", "train", "--context_length", "16", "32", "--output", str(output)], capsys)
    assert code == 0
    table = out[out.index("|"):]
    assert header_of(table)[1:11] == ORIGINAL_COLUMNS  # column 0 is pandas' index
    assert len(table.strip().splitlines()) == 2 + 2  # header, rule, one row per context length
    records, warnings = read_records(str(output))
    assert warnings == [] and [r["status"] for r in records] == ["ok", "ok"]
    r = records[1]
    assert r["config"]["context_length"] == 32 and r["config"]["mode"] == "train"
    assert len(r["time_forward"]) == len(r["time_backward"]) == len(r["time_optimizer"]) == 2
    assert len(r["warmup_time_step"]) == 1
    assert r["flops_per_step"] > 0 and r["tokens_per_second"] > 0 and r["tflops"] > 0
    assert r["mfu"] is None and "no known peak" in r["peak_note"]  # a CPU has no entry: empty, never a guess
    assert r["peak_memory_bytes"] is None  # absent on CPU, never wrong
    for field in ("gpu_name", "driver_version", "cuda_version", "torch_version", "git_commit", "hostname", "timestamp"):
        assert field in r["env"]
    assert "[" in err and "2/2" in err  # progress lines on stderr


def test_peak_tflops_override_gives_mfu_and_speed_of_light(capsys, tmp_path):
    output = tmp_path / "r.csv"
    code, _, _ = run_cli(TINY + ["--peak_tflops", "1.0", "--output", str(output)], capsys)
    assert code == 0
    (r,), _ = read_records(str(output))
    assert r["mfu"] == pytest.approx(r["tflops"] / 1.0)
    assert r["speed_of_light_pct"] == pytest.approx(100 * r["flops_per_step"] / 1e12 / r["median_time_step"])


def test_warmup_sweep_orders_rows_like_the_original_table(capsys):
    code, out, _ = run_cli(["--sizes", "tiny", "small", "--d_model", "32", "--d_ff", "64", "--num_layers", "1",
                            "--num_heads", "2", "--device", "cpu", "--warmup_steps", "1", "0", "--benchmark_steps", "1",
                            "--mode", "forward", "--context_length", "8", "--batch_size", "1"], capsys)
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("|")]
    header, rows = header_of(lines[0]), [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    sizes = [r[header.index("size")] for r in rows]
    warmups = [r[header.index("warmup_steps")] for r in rows]
    assert sizes == ["tiny", "small", "custom"] * 2 and warmups == ["1"] * 3 + ["0"] * 3


# Context 16 in the bf16 rows, not the default 128: bf16 matmuls on the CPU are slow (3.0 s -> 0.8 s here)
BF16_CONTEXT = ["--context_length", "16"]


def test_bf16_and_forward_mode_on_cpu(capsys):
    code, out, _ = run_cli(TINY + BF16_CONTEXT + ["--precision", "bf16", "--mode", "forward", "forward_backward"],
                           capsys)
    assert code == 0 and out.count("| ok") == 2


def test_mixed_precision_flag_is_an_alias_of_bf16(tmp_path, capsys):
    output = tmp_path / "r.jsonl"
    assert run_cli(TINY + BF16_CONTEXT + ["--mixed_precision", "--output", str(output)], capsys)[0] == 0
    assert read_records(str(output))[0][0]["config"]["precision"] == "bf16"


def test_non_finite_loss_is_reported_in_status(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMBENCH_INJECT_FAULT", "nan:size=tiny")
    output = tmp_path / "r.jsonl"
    assert run_cli(TINY + ["--output", str(output)], capsys)[0] == 1  # a diverged step is not a result
    assert read_records(str(output))[0][0]["status"] == "non-finite loss"


@pytest.mark.parametrize("faults,exit_status", [
    ({16: ("oom", "OOM")}, 0),  # an OOM row is a result (a context-length sweep runs into it on purpose)
    # two failures in one sweep: each is followed by a row that ran, and a child process's start is paid once less
    ({16: ("error", "error: RuntimeError: injected error"), 24: ("crash", "crash: killed by SIGABRT; injected crash")},
     1),
], ids=["oom", "error-and-crash"])
def test_an_injected_failure_becomes_a_row_and_the_sweep_goes_on(tmp_path, capsys, monkeypatch, faults, exit_status):
    monkeypatch.setenv("LMBENCH_INJECT_FAULT", ";".join(f"{kind}:context_length={c}" for c, (kind, _) in faults.items()))
    contexts = [8, *faults, max(faults) + 8]  # an ok row before the failures and one after them
    output = tmp_path / "r.csv"
    code, out, err = run_cli(TINY + ["--isolate", "process", "--context_length", *map(str, contexts), "--output",
                                     str(output)], capsys)
    assert code == exit_status
    assert (f"{len(faults)} of {len(contexts)} configurations failed" in err) == (exit_status == 1)
    records, warnings = read_records(str(output))
    assert warnings == []
    assert [r["config"]["context_length"] for r in records] == contexts
    assert records[0]["status"] == records[-1]["status"] == "ok"
    for record, (_, status) in zip(records[1:-1], faults.values()):
        assert record["status"].startswith(status)
    assert out.count("| ok") == 2


@pytest.mark.parametrize("args,message", [
    (["--sizes", "huge"], "invalid choice: 'huge'"),
    (["--d_model", "100", "--d_ff", "64", "--num_layers", "1", "--num_heads", "3"], "divisible"),
    (["--d_model", "64"], "all four"),
    (["--benchmark_steps", "0"], "at least 1"),
    (["--context_length", "0"], "at least 1"),
    (["--warmup_steps", "-1"], "at least 0"),
    (["--batch_size", "four"], "not an integer"),
    (["--peak_tflops", "nan"], "positive number"),
    (["--precision", "fp16"], "fp16 needs a CUDA device"),
    (["--timer", "events"], "needs a CUDA device"),
    (["--attention", "flash"], "needs CUDA"),
    (["--memory_snapshot", "snap"], "needs a CUDA device"),
    (["--output", "/nonexistent-dir/r.csv"], "does not exist"),
    (["--output", "/proc/r.jsonl"], "kernel interface"),
    (["--output", "/sys/kernel/r.csv"], "kernel interface"),
    (["--output", "/dev/full"], "not a regular file"),
    (["--output", "{tmp}"], "is a directory"),
    (["--output", "{tmp}/plot.png.csv"], "not a CSV results file"),
    (["--output", "{tmp}/people.csv"], "not a CSV results file"),
    (["--output", "{tmp}/random.jsonl"], "not a JSON-lines results file"),
    (["--trace", "{tmp}/people.csv"], "--trace: {tmp}/people.csv exists and is not a directory"),
    (["--trace", "/proc/traces"], "kernel interface"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_input_fails_before_any_work_with_one_line_and_exit_2(args, message, capsys, tmp_path):
    (tmp_path / "plot.png.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (tmp_path / "people.csv").write_text("name,age,city\nAda,36,London\n")
    (tmp_path / "random.jsonl").write_bytes(os.urandom(2048))
    args, message = [a.replace("{tmp}", str(tmp_path)) for a in args], message.replace("{tmp}", str(tmp_path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    in_dev = set(os.listdir("/dev"))
    code, out, err = run_cli(["--device", "cpu", "--sizes", "tiny"] + args, capsys) if "--sizes" not in args \
        else run_cli(["--device", "cpu"] + args, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert set(os.listdir("/dev")) == in_dev


def test_output_dev_null_runs_and_discards_rows_leaving_no_lock_file(capsys):
    in_dev = set(os.listdir("/dev"))
    code, out, _ = run_cli(TINY + ["--output", os.devnull], capsys)
    assert code == 0 and out.count("| ok") == 1
    assert set(os.listdir("/dev")) == in_dev


def test_a_row_that_cannot_be_written_stops_the_sweep_keeps_the_file_and_prints_every_measured_row(
        tmp_path, capsys, monkeypatch):
    output = tmp_path / "r.jsonl"
    real_write, writes = os.write, []

    def write(fd, data):  # the disk fills up on the second row
        writes.append(fd)
        if len(writes) == 2:
            real_write(fd, data[:20])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    code, out, err = run_cli(TINY + ["--context_length", "8", "16", "24", "--output", str(output)], capsys)
    monkeypatch.undo()
    assert code == 3
    assert "could not write row 2 of 3" in err and "No space left on device" in err
    records, warnings = read_records(str(output))
    assert warnings == [] and [r["config"]["context_length"] for r in records] == [8]
    assert output.read_text().endswith("\n")  # whole rows only
    assert out.count("| ok") == 2  # both measured rows are in the table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_device_cuda_without_cuda_is_a_usage_error(capsys):
    code, _, err = run_cli(["--device", "cuda"], capsys)
    assert code == 2 and "no CUDA device" in err


def test_bad_input_leaves_an_existing_results_file_untouched(tmp_path, capsys):
    output = tmp_path / "r.csv"
    output.write_text("d_model,status\n768,ok\n")
    code, _, _ = run_cli(TINY + ["--benchmark_steps", "0", "--output", str(output)], capsys)
    assert code == 2 and output.read_text() == "d_model,status\n768,ok\n"


def test_ctrl_c_stops_cleanly_keeping_finished_rows(tmp_path):
    output = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "src.profiling.benchmark", "--device", "cpu", "--sizes", "tiny",
           "--warmup_steps", "0", "--benchmark_steps", "1", "--context_length", *map(str, range(8, 400, 8)),
           "--output", str(output)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not output.exists() or output.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    records, warnings = read_records(str(output))
    assert warnings == [] and 2 <= len(records) < 49
    assert all(r["status"] == "ok" for r in records)
    assert out.count("| ok") == len(records)  # the table of what finished is still printed


def test_compile_and_fast_recipe_run_on_tiny_and_report_compile_time(tmp_path, capsys):
    output = tmp_path / "r.jsonl"
    assert run_cli(TINY + ["--mode", "train", "--compile", "--attention", "naive", "sdpa", "--output", str(output)],
                   capsys)[0] == 0
    assert run_cli(TINY + ["--mode", "train", "--recipe", "fast", "--output", str(output)], capsys)[0] == 0
    records, _ = read_records(str(output))
    assert [r["status"] for r in records] == ["ok"] * 3
    assert all(r["compile_time_s"] > 0 and r["recompilations"] == 0 for r in records)
    fast = records[2]["config"]
    assert (fast["recipe"], fast["precision"], fast["attention"]) == ("fast", "bf16", "sdpa")
    assert fast["compile"] is True  # the recipe compiles, and its row says so


def test_fast_recipe_refuses_another_precision(capsys):
    code, _, err = run_cli(TINY + ["--recipe", "fast", "--precision", "fp32"], capsys)
    assert code == 2 and "bf16" in err


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="checks the message without transformers")
def test_hf_backend_without_transformers_is_a_usage_error(capsys):
    code, _, err = run_cli(TINY + ["--backend", "hf_llama"], capsys)
    assert code == 2 and "transformers" in err


def test_a_configuration_far_beyond_memory_becomes_an_oom_row_without_running(tmp_path, capsys):
    output = tmp_path / "r.jsonl"
    code, out, err = run_cli(TINY + ["--context_length", "10000000", "--output", str(output)], capsys)
    assert code == 0  # an OOM row is a result
    (r,), _ = read_records(str(output))
    assert r["status"] == "OOM" and "x host" in r["error"] and "not run" in r["error"]
    assert r["estimated_memory_bytes"] > 2 * 1e12  # the estimate itself is recorded
    assert r["time_forward"] == [] and "not run" in err


def test_out_of_memory_on_the_cpu_reads_oom(monkeypatch):
    from src.harness import runner
    from src.spec import RunSpec

    def fail(*_):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 12800000000 bytes")

    monkeypatch.setattr(runner, "_measure", fail)
    spec = RunSpec(size="tiny", d_model=64, d_ff=128, num_heads=2, num_layers=2, vocab_size=100, context_length=8,
                   batch_size=1, warmup_steps=0, benchmark_steps=1, device="cpu")
    record = runner.run_spec(spec)
    assert record["status"] == "OOM" and "DefaultCPUAllocator" in record["error"]


def test_progress_shows_finished_steps_only_when_asked(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    from src.harness import progress

    monkeypatch.setattr(progress, "PROGRESS_DELAY_S", 0.0)  # tiny runs in milliseconds: show the bar at once
    monkeypatch.setenv(progress.PROGRESS_VARIABLE, "on")
    code, _, err = run_cli(TINY + ["--benchmark_steps", "3"], capsys)
    assert code == 0 and "4/4 [" in err and "step/s" in err  # 1 warm-up + 3 measured steps, as they finish
    monkeypatch.setenv(progress.PROGRESS_VARIABLE, "auto")  # captured stderr is not a terminal: no bar
    code, _, err = run_cli(TINY + ["--benchmark_steps", "3"], capsys)
    assert code == 0 and "/4 [" not in err


def test_a_sweep_child_gets_the_parents_stderr_for_its_progress_bar(monkeypatch):
    pytest.importorskip("tqdm")
    from src.harness import progress, sweep

    monkeypatch.setattr(progress, "PROGRESS_DELAY_S", 0.0)
    monkeypatch.setenv(progress.PROGRESS_VARIABLE, "on")
    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stderr", os.fdopen(write_end, "w"))
    with sweep._progress_fd() as fd:  # what run_in_child hands to the child, as the child uses it
        monkeypatch.setenv(progress.PROGRESS_FD_VARIABLE, str(fd))
        bar = progress.StepProgress(2, "child")
        for _ in range(2):
            time.sleep(0.2)  # tqdm redraws at most every 0.1 s
            bar.update()
        bar.close()
    sys.stderr.close()
    with os.fdopen(read_end) as f:
        assert "2/2 [" in f.read()


@pytest.mark.parametrize("args,message", [
    (["--recipe", "fast", "--attention", "naive"], "fused attention"),
    (["--mixed_precision", "--precision", "fp32"], "contradicts --precision fp32"),
    (["--explain_precision", "--output", "r.csv"], "--output would stay empty"),
    (["--profile_steps", "3", "--benchmark_steps", "2"], "--profile_steps: 3 is more than the 2 measured steps"),
])
def test_conflicting_options_are_refused_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["--device", "cpu", "--sizes", "tiny"] + args, capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args,note", [
    (["--recipe", "fast"], "--recipe fast on CPU: bf16 autocast, fused attention and torch.compile apply"),
    (["--nvtx", "on"], "--nvtx on: NVTX ranges are for Nsight Systems on CUDA"),
])
def test_options_that_do_less_on_cpu_say_so_in_one_line(args, note):
    from src.profiling import benchmark

    _, notes = benchmark.resolve(benchmark.build_parser().parse_args(TINY + ["--mode", "forward"] + args))
    assert [n for n in notes if n.startswith("--")] == [next(n for n in notes if note in n)]
    assert all("\n" not in n for n in notes)


@pytest.fixture
def cuda_queries_raise(monkeypatch):
    """A parent process that asks torch.cuda about the device creates a CUDA context its children must share."""
    def refuse(*_, **__):
        raise AssertionError("the parent process queried the CUDA device")

    for name in ("is_bf16_supported", "get_device_name", "get_device_properties", "current_device", "init",
                 "get_device_capability", "mem_get_info", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, refuse)


def test_resolving_a_cuda_sweep_does_not_query_the_device(cuda_queries_raise, monkeypatch):
    from src.harness import environment
    from src.profiling import benchmark

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(environment, "_run", lambda cmd: "9.0")  # nvidia-smi: compute capability 9.0
    args = benchmark.build_parser().parse_args(["--device", "cuda", "--sizes", "tiny", "--precision", "bf16"])
    specs, _ = benchmark.resolve(args)
    assert [(s.device, s.precision, s.isolate) for s in specs] == [("cuda", "bf16", "process")]


def test_resolve_refuses_bf16_on_a_gpu_nvidia_smi_calls_too_old(cuda_queries_raise, monkeypatch):
    from src.harness import environment
    from src.profiling import benchmark

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(environment, "_run", lambda cmd: "7.5")  # a T4
    args = benchmark.build_parser().parse_args(["--device", "cuda", "--sizes", "tiny", "--precision", "bf16"])
    with pytest.raises(benchmark.UsageError, match="does not support bfloat16"):
        benchmark.resolve(args)


def test_a_crash_row_is_made_without_querying_the_device(cuda_queries_raise, monkeypatch):
    from src.harness import environment
    from src.harness.sweep import crash_record
    from tests.specs import tiny_spec

    monkeypatch.setattr(environment, "_run",
                        lambda cmd: "NVIDIA H100 80GB HBM3" if "--query-gpu=name" in cmd else "")
    record = crash_record(tiny_spec(device="cuda", timer="events", isolate="process"), "killed by SIGSEGV")
    assert record["status"] == "crash: killed by SIGSEGV"
    assert record["env"]["gpu_name"] == "NVIDIA H100 80GB HBM3" and record["device_peak_tflops"] == 67.0


def test_progress_lines_tell_apart_a_sweep_over_batch_size_and_attention(capsys):
    code, out, err = run_cli(TINY + ["--mode", "forward", "--context_length", "8", "--batch_size", "1", "2",
                                     "--attention", "naive", "sdpa", "--warmup_steps", "0", "--benchmark_steps", "1"],
                             capsys)
    assert code == 0
    progress = [line.split(": ")[0] for line in err.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and len({line.split("] ")[1][4:] for line in progress}) == 4
    assert any("bs=2" in line and "sdpa" in line for line in progress)
    header = header_of(out[out.index("|"):])
    assert header[1:11] == ORIGINAL_COLUMNS and {"compile", "recipe"} <= set(header[11:])
