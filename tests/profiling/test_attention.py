"""The attention benchmark CLI on CPU, at tiny sizes: rows, records, FLOP counts, OOM rows and usage errors."""

import json
import os

import pytest
import torch

from src.profiling import attention

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # tests/conftest.py sets it without a GPU
FAST = ["--device", "cpu", "--warmup_ms", "1", "--rep_ms", "2"]


def test_sweep_prints_a_table_and_appends_one_record_per_configuration(tmp_path, capsys):
    output = tmp_path / "attention.jsonl"
    impls = ["naive", "sdpa", "flash_pytorch"]
    code = attention.main([*FAST, "--implementations", *impls, "--seq_lens", "16", "33", "--head_dims", "16",
                           "--dtypes", "fp32", "--causal", "true", "false", "--batch_size", "2", "--num_heads", "3",
                           "--output", str(output)])
    assert code == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == len(impls) * 2 * 2
    assert {r["status"] for r in records} == {"ok"}
    first = records[0]
    assert first["config"]["batch_size"] == 2 and first["config"]["num_heads"] == 3
    assert first["env"]["device"] == "cpu"
    for key in ("forward_ms", "backward_ms", "forward_backward_ms", "forward_backward_tflops"):
        assert first[key] > 0
    table = capsys.readouterr().out
    assert table.count("\n| flash_pytorch |  | 33 | 16 | fp32 |") == 2
    # the sdpa rows say which of SDPA's kernels ran, as SDPA's own dispatch chose it for those tensors
    q = torch.zeros(2, 3, 16, 16)
    kernel = attention.sdpa_backend(q, q, q, True)
    assert kernel in ("FLASH_ATTENTION", "MATH", "EFFICIENT_ATTENTION")
    assert {r["sdpa_kernel"] for r in records if r["config"]["implementation"] == "sdpa"} == {kernel}
    assert {r["sdpa_kernel"] for r in records if r["config"]["implementation"] != "sdpa"} == {""}
    assert f"\n| sdpa | {kernel} | 33 | 16 | fp32 |" in table


@pytest.mark.skipif(not INTERPRETED, reason="the Triton kernel runs on CPU only under TRITON_INTERPRET=1")
def test_the_triton_kernel_in_the_sweep_gets_rows_and_its_throughput_against_sdpa(tmp_path, capsys):
    # One head of batch 1: the interpreter runs each Triton program in turn, and batch 2 x 3 heads made the
    # flash rows of the sweep above 28 of its 35 s (each configuration is timed ~9 forwards and ~9 backwards).
    output = tmp_path / "attention.jsonl"
    code = attention.main([*FAST, "--implementations", "sdpa", "flash", "--seq_lens", "16", "33", "--head_dims", "16",
                           "--dtypes", "fp32", "--causal", "true", "false", "--output", str(output)])
    assert code == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["config"]["implementation"], r["status"]) for r in records] == [("sdpa", "ok"), ("flash", "ok")] * 4
    table = capsys.readouterr().out
    assert table.count("\n| flash |  | 33 | 16 | fp32 |") == 2
    assert "flash / sdpa throughput" in table


def test_csv_output(tmp_path):
    output = tmp_path / "attention.csv"
    assert attention.main([*FAST, "--implementations", "naive", "--seq_lens", "8", "--head_dims", "16",
                           "--causal", "true", "--output", str(output)]) == 0
    header, row = output.read_text().splitlines()
    assert "implementation" in header and "env_torch_version" in header and "naive" in row


def test_flops_count_causal_as_half():
    c = dict(batch_size=2, num_heads=3, seq_len=128, head_dim=64, causal=False)
    assert attention.forward_flops(c) == 4 * 2 * 3 * 128 * 128 * 64
    assert attention.forward_flops(dict(c, causal=True)) == attention.forward_flops(c) / 2


def test_out_of_memory_becomes_a_row(monkeypatch):
    def fail(c, device):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(attention, "measure", fail)
    result = attention.run_one(dict(implementation="naive", seq_len=8), "cpu")
    assert result["status"] == "oom"


def test_flash_pytorch_past_its_length_limit_is_skipped():
    result = attention.run_one(dict(implementation="flash_pytorch", seq_len=512, max_pytorch_seq_len=256), "cpu")
    assert result["status"] == "skipped"


@pytest.mark.parametrize("argv,message", [
    (["--seq_lens", "0"], "at least 1"),
    (["--dtypes", "fp8"], "invalid choice"),
    (["--implementations", "flash_pytorch", "--head_dims", "8"], "16 to 128"),
    (["--causal", "maybe"], "true or false"),
    (["--output", "/no/such/dir/out.csv"], "does not exist"),
    (["--output", "/proc/x.jsonl"], "kernel interface"),
    (["--output", "/dev/full"], "not a regular file"),
    (["--output", "{tmp}/people.csv"], "not a CSV results file"),
    (["--implementations", "cudnn"], "cudnn is cuDNN's fused kernel"),
    (["--implementations", "sdpa_flash"], "sdpa_flash is SDPA held to its FLASH_ATTENTION kernel"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    (tmp_path / "people.csv").write_text("name,age\nAda,36\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert attention.main(["--device", "cpu", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_standard_case_needs_cuda(capsys):
    assert attention.main(["--standard_case"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_a_forward_timed_longer_than_forward_and_backward_is_flagged_in_the_row(monkeypatch, capsys, tmp_path):
    """Issue 21: on a busy host the forward alone read slower than its own forward+backward. The three timings are
    separate, so the benchmark cannot prevent it; it must say so in the row and on stderr."""
    times = iter([5.0, 2.0, 4.0])  # forward, backward, forward+backward (ms) as do_bench would return them
    monkeypatch.setattr(attention, "bench_ms", lambda fn, device, warm, rep: (t := next(times), t, t))
    output = tmp_path / "a.jsonl"
    assert attention.main([*FAST, "--implementations", "naive", "--seq_lens", "8", "--head_dims", "16",
                           "--causal", "true", "--output", str(output)]) == 0
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(record["warnings"]) == 1 and record["warnings"][0].startswith("forward (5 ms) took longer than")
    assert "warning: forward (5 ms)" in capsys.readouterr().err


def test_consistent_timings_carry_no_warning(monkeypatch):
    times = iter([1.0, 2.0, 3.0])
    monkeypatch.setattr(attention, "bench_ms", lambda fn, device, warm, rep: (t := next(times), t, t))
    c = dict(implementation="naive", batch_size=1, num_heads=1, seq_len=8, head_dim=16, dtype="fp32", causal=True,
             warmup_ms=1, rep_ms=1)
    assert attention.measure(c, "cpu")["warnings"] == []


@pytest.mark.parametrize("argv,message", [
    (["--implementations", "sdpa", "cudnn"], "cudnn runs bf16 or fp16 only"),  # the default dtypes hold fp32
    (["--implementations", "cudnn", "--dtypes", "bf16", "--head_dims", "64", "12"], "multiples of 8, got 64 12"),
    (["--implementations", "sdpa_flash"], "sdpa_flash runs bf16 or fp16 only"),
    (["--implementations", "sdpa_flash", "--dtypes", "bf16", "--head_dims", "20"], "sdpa_flash takes head dims"),
])
def test_cudnn_shapes_it_cannot_take_are_refused_before_any_work(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(attention, "resolve_device", lambda device: "cuda")  # the refusals of a CUDA machine
    assert attention.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_the_default_cuda_sweep_leaves_cudnn_out_and_asking_for_it_works(monkeypatch):
    monkeypatch.setattr(attention, "resolve_device", lambda device: "cuda")
    _, configs = attention.resolve(attention.build_parser().parse_args([]))
    assert "cudnn" not in {c["implementation"] for c in configs} and "sdpa" in {c["implementation"] for c in configs}
    _, configs = attention.resolve(attention.build_parser().parse_args(["--implementations", "cudnn", "--dtypes",
                                                                        "bf16", "--head_dims", "64", "80"]))
    assert {(c["implementation"], c["dtype"]) for c in configs} == {("cudnn", "bf16")}
    assert "sdpa_flash" not in {c["implementation"] for c in attention.resolve(attention.build_parser().parse_args(
        []))[1]}


def test_the_triton_kernel_is_compared_with_every_baseline_that_ran_and_the_row_names_sdpas_kernel():
    def row(impl, ms, kernel=""):
        return {"config": dict(implementation=impl, seq_len=4096, head_dim=64, dtype="bf16", causal=True),
                "status": "ok", "forward_backward_ms": ms, "sdpa_kernel": kernel}

    records = [row("sdpa", 2.0, "CUDNN_ATTENTION"), row("sdpa_flash", 3.0, "FLASH_ATTENTION"), row("flash", 2.5),
               row("cudnn", 1.0)]
    by_default = attention.format_comparison(records)
    assert "| 4096 | 64 | bf16 | True | CUDNN_ATTENTION | 2.000 | 2.500 | 0.80x |" in by_default
    against_fa2 = attention.format_comparison(records, "sdpa_flash")
    assert "| FLASH_ATTENTION | 3.000 | 2.500 | 1.20x |" in against_fa2 and "sdpa_flash fwd+bwd ms" in against_fa2
    assert "| cudnn | 1.000 | 2.500 | 0.40x |" in attention.format_comparison(records, "cudnn")
    assert attention.format_comparison(records[:1]) == ""  # no flash row: nothing to compare
