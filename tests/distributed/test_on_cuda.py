"""The strategies on a GPU: 2 gloo ranks on CUDA tensors equal single-process training, and every strategy at world
size 1 over NCCL runs through the benchmark (issue 10's one-GPU checks). Skipped without CUDA."""

import json

import pytest

from src.profiling.benchmark import main
from src.spec import PARALLEL, TENSOR_PARALLEL
from tests.conftest import needs_cuda
from tests.distributed.multiprocess import run_on_ranks
from tests.distributed.test_strategies_match_single_process import _every_strategy


@needs_cuda
@pytest.mark.parametrize("model_name", ["cs336", "toy"])
def test_every_strategy_matches_single_process_on_cuda_tensors(model_name):
    run_on_ranks(_every_strategy, 2, model_name, "cuda")


@needs_cuda
def test_every_strategy_runs_at_world_size_1_over_nccl(tmp_path, capsys):
    output = tmp_path / "rows.jsonl"
    strategies = [s for s in PARALLEL if s not in ("none", *TENSOR_PARALLEL)]  # TP needs 2 ranks a group
    code = main(["--device", "cuda", "--sizes", "tiny", "--mode", "train", "--precision", "bf16", "--attention",
                 "sdpa", "--warmup_steps", "1", "--benchmark_steps", "2", "--nproc_per_node", "1",
                 "--dist_backend", "nccl", "--parallel", *strategies, "--output", str(output)])
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert code == 0, capsys.readouterr().err[-2000:]
    assert [r["config"]["parallel"] for r in rows] == strategies
    assert all(r["status"] == "ok" and r["world_size"] == 1 for r in rows), [(r["config"]["parallel"], r["status"]) for r in rows]
    assert all(r["median_time_step"] > 0 for r in rows)
