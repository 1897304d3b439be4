"""The GPU scripts of issue 14, checked on the CPU: scripts/gpu_issue14.sh's commands are valid and its control
flow holds (budget, failures, summary); the cuDNN reproduction refuses cleanly without CUDA and imports no src/."""

import ast
import importlib.util
import os
import shlex
import subprocess
import sys

import pytest
import torch

from src.profiling.attention import build_parser as attention_parser
from src.profiling.benchmark import build_parser, resolve
from tests.script_shim import logging_python3

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPRO = os.path.join(REPO, "scripts", "cudnn_compiled_grad_repro.py")


def run_gpu_script(tmp_path, budget, parts=()):
    """Run the script with a python3 that logs each benchmark and attention command instead of running it
    (everything else, the summary included, runs on the real interpreter)."""
    log = tmp_path / "benchmark_commands.txt"
    shim = logging_python3(tmp_path / "bin", {"src.profiling.benchmark": log,
                                              "src.profiling.attention": tmp_path / "attention_commands.txt"})
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "BUDGET_S": str(budget),
           "LMBENCH_SKIP_CUDA_CHECK": "1"}  # the shim stands in for the GPU run
    result = subprocess.run(["bash", "scripts/gpu_issue14.sh", str(tmp_path / "out"), *parts], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    commands = log.read_text().splitlines() if log.exists() else []
    return result, commands


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without CUDA, where the repro refuses")
def test_gpu_script_commands_are_valid_and_a_failed_part_fails_the_run(tmp_path):
    result, commands = run_gpu_script(tmp_path, budget=530)
    assert len(commands) == 9  # a, c-fast, g, d-fast, b-train, c-plain, b-forward, d-fast-traced, d-compiled
    counts = []
    for command in commands:
        args = build_parser().parse_args(shlex.split(command) + ["--device", "cpu"])
        specs, _ = resolve(args)  # raises UsageError on anything the benchmark would refuse
        counts.append(len(specs))
    assert counts == [7, 2, 2, 3, 2, 4, 3, 1, 4]
    assert "--trace" in commands[2] and "--recipe fast" in commands[2]  # g: the fast table rows, traced
    attention_commands = (tmp_path / "attention_commands.txt").read_text().splitlines()
    for command in attention_commands:  # f: valid options of the attention command
        assert attention_parser().parse_args(shlex.split(command)) is not None
    assert len(attention_commands) == 2 and attention_commands[1].startswith("--standard_case")
    a = resolve(build_parser().parse_args(shlex.split(commands[0]) + ["--device", "cpu"]))[0]
    assert [s.checkpoint_group for s in a] == [1, 2, 4, 8, 16, 32, 0]
    assert {(s.size, s.batch_size, s.context_length, s.mode, s.precision) for s in a} == {
        ("2.7B", 4, 2048, "train", "bf16")}
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| file | size |" in summary and "no file: that part did not run" in summary  # nothing really ran
    assert "failed parts: e (exit 2)" in summary  # the repro refuses without CUDA, and the run says so
    assert result.returncode == 1
    assert "=== part a" in result.stderr and "=== part d-compiled:" in result.stderr and "=== part f:" in result.stderr


def test_gpu_script_runs_only_the_parts_asked_for(tmp_path):
    result, commands = run_gpu_script(tmp_path, budget=530, parts=("b",))
    assert [c.split()[:2] for c in commands] == [["--sizes", "10B"], ["--sizes", "8B-leaderboard"]]
    assert result.returncode == 0 and "failed parts: none" in (tmp_path / "out" / "summary.md").read_text()


def test_gpu_script_skips_parts_once_its_budget_is_spent(tmp_path):
    result, commands = run_gpu_script(tmp_path, budget=10)
    assert commands == [] and result.returncode == 1
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "a (skipped: budget spent)" in summary and "e (skipped: budget spent)" in summary


def test_the_repro_imports_nothing_from_this_project():
    tree = ast.parse(open(REPRO).read())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert modules and all(m.split(".")[0] in {"argparse", "math", "sys", "torch"} for m in modules)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_the_repro_refuses_cleanly_without_cuda():
    result = subprocess.run([sys.executable, REPRO], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "needs a CUDA GPU" in result.stderr


def test_the_repro_model_and_error_measure_on_cpu():
    spec = importlib.util.spec_from_file_location("repro", REPRO)
    repro = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repro)
    torch.manual_seed(0)
    model = repro.LM(2, vocab=50, d=32, nh=4, d_ff=64, max_len=16)
    tokens = torch.randint(0, 50, (2, 17))
    grads = repro.gradients(model, tokens, repro.SDPBackend.MATH, compiled=False, autocast=False)
    again = repro.gradients(model, tokens, repro.SDPBackend.MATH, compiled=False, autocast=False)
    assert repro.errors(again, grads)[0] == 0
    worse = {n: g * (1.5 if n == "blocks.1.qkv_o.1.weight" else 1.0) for n, g in grads.items()}
    total, worst, worst_error = repro.errors(worse, grads)
    assert worst == "blocks.1.qkv_o.1.weight" and worst_error == pytest.approx(0.5) and 0 < total < 0.5
