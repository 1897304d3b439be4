"""--compile_mode: torch.compile's mode, recorded as what ran (the fast recipe picks reduce-overhead in fp8), passed
to every compile the step makes, refused where it cannot run; on a GPU, reduce-overhead (inductor's CUDA graph
trees) trains exactly like the default mode with every optimizer that can step a compiled step.
"""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from src.spec import RunSpec
from tests.conftest import needs_cuda
from tests.specs import tiny_spec

STEPS = 4


def test_the_mode_is_recorded_as_what_ran():
    assert tiny_spec().compile_mode == ""  # nothing compiled
    assert tiny_spec(compile=True).compile_mode == "default"
    assert tiny_spec(recipe="fast", precision="bf16", attention="sdpa").compile_mode == "default"
    fp8 = dict(recipe="fast", precision="fp8", attention="sdpa", device="cuda", timer="events")
    assert tiny_spec(**fp8).compile_mode == "reduce-overhead"  # the recipe's choice in fp8 on one GPU
    assert tiny_spec(**fp8, compile_mode="default").compile_mode == "default"  # an explicit choice beats it
    assert tiny_spec(**fp8, parallel="fsdp2", nproc_per_node=2).compile_mode == "default"
    assert tiny_spec(**fp8, backend="torchtitan").compile_mode == "default"  # not measured in that mode
    assert tiny_spec(**{**fp8, "precision": "bf16"}).compile_mode == "default"
    assert "mode=reduce-overhead" in tiny_spec(**fp8).label
    assert "mode=" not in tiny_spec(compile=True).label


def test_reduce_overhead_counts_the_step_that_records_its_graphs_as_compilation():
    graphed = dict(compile=True, compile_mode="reduce-overhead", device="cuda", timer="events")
    assert (tiny_spec().compile_steps, tiny_spec(compile=True).compile_steps, tiny_spec(**graphed).compile_steps) \
        == (0, 1, 2)


def test_a_row_written_before_the_field_ran_the_default_mode():
    """An fp8 fast row from before compile_mode: read back as default, not as today's recipe choice."""
    old = tiny_spec(recipe="fast", precision="fp8", attention="sdpa", device="cuda", timer="events").to_dict()
    del old["compile_mode"]
    assert RunSpec.from_dict(old).compile_mode == "default"
    from src.reports.compare import config_value

    assert config_value(old, "compile_mode") == "default"
    assert config_value({"compile": False}, "compile_mode") is None


def test_an_old_csv_row_rewritten_under_the_new_header_still_ran_the_default_mode(tmp_path):
    """Appending a row with compile_mode to an older CSV rewrites it with both headers: the old row's cell is
    empty, which means what the absent field meant."""
    from src.harness.record import new_record
    from src.harness.results import append_record, read_records
    from src.reports.compare import config_key, config_value

    path = str(tmp_path / "rows.csv")
    old, new = new_record(tiny_spec(compile=True)), new_record(tiny_spec(compile=True))
    del old["config"]["compile_mode"]
    append_record(path, old)
    append_record(path, new)
    (old_back, new_back), _ = read_records(path)
    assert old_back["config"].get("compile_mode") in ("", None)  # the empty cell
    assert config_value(old_back["config"], "compile_mode") == config_value(new_back["config"], "compile_mode")
    assert config_key(old_back) == config_key(new_back)  # the same configuration for the A/B report


@pytest.mark.parametrize("changes,message", [
    (dict(compile_mode="default"), "compile_mode: applies to compiled steps"),
    (dict(compile=True, compile_mode="max-autotune"), "compile_mode: must be one of default, reduce-overhead"),
    (dict(compile=True, compile_mode="reduce-overhead"), "reduce-overhead replays CUDA graphs and needs a CUDA"),
    (dict(compile=True, compile_mode="reduce-overhead", device="cuda", timer="events", parallel="torch_ddp",
          nproc_per_node=2), "collectives and gradient hooks under CUDA graph capture are not built"),
])
def test_what_the_mode_cannot_do_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_spec(**changes)


def test_the_cli_refuses_reduce_overhead_on_cpu_before_any_work():
    result = subprocess.run([sys.executable, "-m", "src.profiling.benchmark", "--sizes", "tiny", "--device", "cpu",
                             "--compile", "--compile_mode", "reduce-overhead", "--output", "/dev/null"],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("needs a CUDA device"), result.stderr


def test_the_recipe_leaves_its_whole_step_graphs_to_inductor_under_reduce_overhead():
    from src.train.step import CUDA_GRAPH_MAX_PARAMETERS, uses_cuda_graphs

    cuda = dict(recipe="fast", precision="bf16", attention="sdpa", device="cuda", timer="events")
    assert uses_cuda_graphs(tiny_spec(**cuda), CUDA_GRAPH_MAX_PARAMETERS - 1)
    assert not uses_cuda_graphs(tiny_spec(**cuda, compile_mode="reduce-overhead"), CUDA_GRAPH_MAX_PARAMETERS - 1)


@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_every_compile_of_the_step_gets_the_mode(monkeypatch, scope):
    """Recorded, not compiled: each compile call's keyword arguments (the blocks' Module.compile, the whole
    model's torch.compile)."""
    from src.train import step as step_module

    calls = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: calls.append(kw))
    monkeypatch.setattr(step_module.torch, "compile", lambda module, **kw: calls.append(kw) or module)
    spec = tiny_spec(compile=True, compile_scope=scope, compile_mode="max-autotune-no-cudagraphs")
    step_module.TrainStep(spec, step_module.build_model(spec))
    assert calls == [{"mode": "max-autotune-no-cudagraphs"}] * (spec.num_layers if scope == "blocks" else 1)
    calls.clear()
    spec = tiny_spec(compile=True, compile_scope=scope)
    step_module.TrainStep(spec, step_module.build_model(spec))
    assert calls and all(kw == {} for kw in calls)  # the default mode: torch.compile's own default


def _losses(spec: RunSpec) -> list[float]:
    from src.train.step import TrainStep, build_model

    torch.manual_seed(0)
    step = TrainStep(spec, build_model(spec), lr=1e-2)
    tokens = torch.randint(0, spec.vocab_size, (STEPS, spec.batch_size, spec.context_length + 1), device="cuda",
                           generator=torch.Generator("cuda").manual_seed(1))
    losses = [step(t[:, :-1], t[:, 1:], None) for t in tokens]  # held across steps, as the runner holds them
    return [float(loss) for loss in losses]


@needs_cuda
@pytest.mark.parametrize("optimizer,scope", [("ours", "blocks"), ("overlap", "blocks"), ("in_backward", "blocks"),
                                             ("fused", "model")])
def test_reduce_overhead_trains_like_the_default_mode(optimizer, scope):
    """The same inductor kernels, replayed from graphs: the losses agree to 1e-3 relative (bf16 autocast; the
    kernels' order and inputs are the same, so any difference is a replay reading a stale or overwritten buffer,
    which would show at the first step already)."""
    spec = dict(recipe="fast", precision="bf16", attention="sdpa", device="cuda", timer="events", context_length=64,
                batch_size=2, compile_scope=scope, optimizer=optimizer)
    default = _losses(tiny_spec(**spec, compile_mode="default"))
    graphed = _losses(tiny_spec(**spec, compile_mode="reduce-overhead"))
    assert default[-1] < default[0]  # it trained
    assert torch.allclose(torch.tensor(graphed), torch.tensor(default), rtol=1e-3, atol=0), (graphed, default)
