"""The fp8 table's scripts on the CPU: scripts/fp8_table.py's arithmetic (speed-up, per-layer figures from two
depths, fp8 less bf16 by trace category) on rows of known times, and scripts/gpu_fp8_table.sh narrowed by SIZES,
RECIPES and DEPTHS to the commands it would run."""

import importlib.util
import json
import os
import subprocess
import sys

from src.harness.record import new_record, with_fields
from tests.script_shim import logging_python3
from tests.specs import tiny_spec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _row(layers: int, step_s: float, precision: str = "bf16", **fields) -> dict:
    spec = tiny_spec(num_layers=layers, precision="bf16")  # fp8 needs CUDA in a RunSpec: patched in the config
    row = with_fields(new_record(spec), {"median_time_step": step_s, **fields})
    row["config"] = {**row["config"], "precision": precision, "recipe": "fast", "compile_scope": "blocks",
                     "fp8_recipe": "tensorwise" if precision == "fp8" else ""}
    return row


def _table(tmp_path, rows) -> str:
    path = tmp_path / "fp8.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = subprocess.run([sys.executable, "scripts/fp8_table.py", str(path)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_speedup_and_per_layer_figures_come_from_the_rows(tmp_path):
    out = _table(tmp_path, [_row(2, 0.020), _row(4, 0.030), _row(2, 0.016, "fp8"), _row(4, 0.024, "fp8")])
    assert "| tiny | 2 | ours, fast (blocks) | fp8 tensorwise | 16.0 | 1.25 |" in out  # 20 / 16
    # per layer: bf16 (30 - 20) / 2 = 5 ms, fp8 (24 - 16) / 2 = 4 ms, 1.25x
    assert "| tiny | ours, fast (blocks) | bf16 | 5.00 | 1.00 |" in out
    assert "| tiny | ours, fast (blocks) | fp8 tensorwise | 4.00 | 1.25 |" in out


def test_fp8_rows_with_fp32_weights_are_rows_of_their_own(tmp_path):
    fp32 = _row(2, 0.018, "fp8")
    fp32["config"]["optimizer"] = "fused"  # torch's fused AdamW over fp32 weights, beside the recipe's bf16 weights
    out = _table(tmp_path, [_row(2, 0.020), _row(2, 0.016, "fp8"), fp32])
    assert "| tiny | 2 | ours, fast (blocks) | fp8 tensorwise | 16.0 | 1.25 |" in out
    assert "| tiny | 2 | ours, fast (blocks) | fp8 tensorwise, fp32 weights | 18.0 | 1.11 |" in out


def test_each_fp8_row_is_compared_with_the_fastest_bf16_row_and_a_mode_is_named(tmp_path):
    def row(step_s, precision, mode, optimizer="ours"):
        r = _row(2, step_s, precision)
        r["config"].update(compile_mode=mode, optimizer=optimizer)
        return r

    rows = [row(0.020, "bf16", "default"), row(0.018, "bf16", "reduce-overhead", "overlap"),
            row(0.030, "fp8", "default"), row(0.015, "fp8", "reduce-overhead")]
    out = _table(tmp_path, rows)
    assert "| tiny | 2 | ours, fast (blocks) | bf16, reduce-overhead, adamw overlap | 18.0 | 1.00 |" in out
    assert "| tiny | 2 | ours, fast (blocks) | bf16 | 20.0 | 0.90 |" in out  # 18 / 20: slower than the best bf16
    assert "| tiny | 2 | ours, fast (blocks) | fp8 tensorwise | 30.0 | 0.60 |" in out
    assert "| tiny | 2 | ours, fast (blocks) | fp8 tensorwise, reduce-overhead | 15.0 | 1.20 |" in out


def test_trace_categories_are_given_as_fp8_less_bf16(tmp_path):
    cats = lambda matmul, scaling: {"matmul": matmul, "fp8 scaling and casts": scaling}
    rows = [_row(2, 0.020, trace_ms_per_step=cats(12.0, 0.0), trace_idle_ms_per_step=1.0, trace_step_ms=20.0),
            _row(2, 0.018, "fp8", trace_ms_per_step=cats(7.0, 3.5), trace_idle_ms_per_step=1.5, trace_step_ms=18.5)]
    out = _table(tmp_path, rows)
    line = next(x for x in out.splitlines() if x.startswith("| tiny | fp8 tensorwise - bf16 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "-1.5" and "-5.0" in cells and "+3.5" in cells and "+0.5" in cells  # step, matmul, fp8, idle
    bf16 = next(x for x in out.splitlines() if x.startswith("| tiny | bf16 | 20.0 | 12.0 |"))
    assert bf16.endswith("| 60% |")  # the matmul share of the bf16 step: 12 / 20


def test_no_file_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "scripts/fp8_table.py", str(tmp_path / "missing.jsonl")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "missing.jsonl" in result.stderr


def test_gpu_script_narrows_to_what_is_missing(tmp_path):
    log = tmp_path / "commands.txt"
    shim = logging_python3(tmp_path / "bin", {"src.profiling.benchmark": log})
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "LMBENCH_SKIP_CUDA_CHECK": "1",
           "SIZES": "medium small", "RECIPES": "tensorwise", "DEPTHS": "4"}
    result = subprocess.run(["bash", "scripts/gpu_fp8_table.sh", str(tmp_path / "out"), "sizes", "layers"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    sizes, layers = log.read_text().splitlines()
    assert "--sizes medium small " in sizes and "--fp8_recipe tensorwise --" in sizes and "rowwise" not in sizes
    assert "--num_layers 4" in layers and "--model 10B llama-3.1-8b" in layers
    assert "--compile_mode" not in sizes  # the recipe's mode unless COMPILE_MODES asks
    log.unlink()
    env["COMPILE_MODES"] = "default reduce-overhead"
    result = subprocess.run(["bash", "scripts/gpu_fp8_table.sh", str(tmp_path / "out"), "sizes"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--compile_mode default reduce-overhead" in log.read_text()


def _side_by_side(tmp_path, parts: str):
    log = tmp_path / "commands.txt"
    shim = logging_python3(tmp_path / "bin", {"src.profiling.benchmark": log, "src.profiling.table": tmp_path / "t"})
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "LMBENCH_SKIP_CUDA_CHECK": "1", "PARTS": parts}
    result = subprocess.run(["bash", "scripts/gpu_side_by_side.sh", str(tmp_path / "out")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    return result, (log.read_text().splitlines() if log.exists() else [])


def test_the_side_by_side_script_narrows_to_the_parts_asked_for(tmp_path):
    result, commands = _side_by_side(tmp_path, "fast")
    assert result.returncode == 0, result.stderr
    assert len(commands) == 3 and all("--recipe fast" in c for c in commands)
    assert any("--attention cudnn" in c for c in commands) and any("--optimizer overlap" in c for c in commands)
    assert ["--trace" in c for c in commands] == [True, True, False]  # the recipe with and without cuDNN's op
    (tmp_path / "again").mkdir()
    result, commands = _side_by_side(tmp_path / "again", "ours hf")
    assert result.returncode == 0, result.stderr
    hf = ["hf_llama"] * 2 if importlib.util.find_spec("transformers") else []  # the script asks the same python
    assert [c.split("--backend ")[1].split()[0] for c in commands] == ["ours", "ours", *hf]
    assert "--trace" in commands[0] and "--compile" in commands[1]
    assert all("--benchmark_steps 8" in c for c in commands)  # traced: 8 - 2 profiled - 1 = the report's 5


def test_the_side_by_side_script_refuses_an_unknown_part_before_any_row(tmp_path):
    result, commands = _side_by_side(tmp_path, "fast titan")
    assert result.returncode == 2 and "unknown part titan" in result.stderr and commands == []


def test_the_graph_census_counts_a_tensorwise_blocks_fp8_work():
    """One block of 7 float8 linears: 7 matmuls forward and 14 backward; each gradient cast to e5m2 once and
    transposed once for the grad_weight matmul (tensorwise: one scale serves both layouts)."""
    spec = importlib.util.spec_from_file_location("fp8_graph_census", os.path.join(REPO, "scripts",
                                                                                   "fp8_graph_census.py"))
    census = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(census)
    graphs = census.census("tensorwise")
    forward, backward = graphs["forward"], graphs["backward"]
    assert (forward["matmuls"], backward["matmuls"]) == (7, 14)
    assert forward["fp8 cast to float8_e4m3fn"] >= 7  # every weight, and the inputs
    assert backward["fp8 cast to float8_e5m2"] == backward["fp8 t to float8_e5m2"] == 7
    assert sum(n for key, n in forward.items() if key.startswith("saved ")) > 0
