"""--compile_scope blocks: each transformer block compiled on its own, sharing one graph whatever the depth, training
like the whole-model compile and the eager step; what it cannot combine with is refused.

The compile backend is aot_eager (Dynamo's capture and AOTAutograd's graphs without inductor's C++ code
generation; tests/distributed/test_compiled_strategies.py says why). Tolerance: torch.allclose's defaults; fp32
on CPU, and the compiled graphs compute what eager does in the same order, so the losses agree far inside them.
"""

import functools

import pytest
import torch

from src.spec import RunSpec
from tests.specs import tiny_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py
STEPS = 3


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()  # a graph an earlier test compiled for the same code would be reused, not compiled


def losses_of(spec: RunSpec) -> tuple[list[float], object]:
    from src.train.step import TrainStep, build_model

    torch.manual_seed(0)
    step = TrainStep(spec, build_model(spec), lr=1e-2)
    tokens = torch.randint(0, spec.vocab_size, (STEPS, spec.batch_size, spec.context_length + 1),
                           generator=torch.Generator().manual_seed(1))
    return [float(step(t[:, :-1], t[:, 1:], None)) for t in tokens], step


def test_blocks_are_compiled_in_place_and_the_rest_stays_eager(aot_eager):
    _, step = losses_of(tiny_spec(compile=True, compile_scope="blocks"))
    blocks = step.spec.model_spec().blocks(step.model)
    assert len(blocks) == 2 and all(block._compiled_call_impl is not None for block in blocks)
    assert not isinstance(step.loss, torch._dynamo.eval_frame.OptimizedModule)  # head and loss: eager


def test_blocks_train_like_the_whole_model_compile_and_eager(aot_eager):
    eager, _ = losses_of(tiny_spec())
    whole, _ = losses_of(tiny_spec(compile=True))
    blocks, _ = losses_of(tiny_spec(compile=True, compile_scope="blocks"))
    assert eager[-1] != eager[0]  # it trained
    assert torch.allclose(torch.tensor(blocks), torch.tensor(eager))
    assert torch.allclose(torch.tensor(blocks), torch.tensor(whole))


def test_the_blocks_share_one_graph_in_the_record(aot_eager):
    """2 blocks, 1 compiled graph: compile time is one block's, whatever the depth (the point of the option)."""
    from src.harness.runner import run_spec

    spec = tiny_spec(compile=True, compile_scope="blocks", warmup_steps=0, benchmark_steps=1)
    assert spec.num_layers == 2
    record = run_spec(spec)
    assert record["status"] == "ok" and record["compiled_graphs"] == 1, record.get("status")
    assert record["config"]["compile_scope"] == "blocks"


def test_the_scope_is_recorded_as_what_ran():
    assert tiny_spec(compile=True).compile_scope == "model"
    assert tiny_spec(recipe="fast", precision="bf16", attention="sdpa").compile_scope == "model"
    assert tiny_spec().compile_scope == ""  # nothing compiled
    assert tiny_spec(compile=True, parallel="fsdp2", nproc_per_node=2).compile_scope == "blocks"
    assert "compile=blocks" in tiny_spec(compile=True, compile_scope="blocks").label


@pytest.mark.parametrize("changes,message", [
    (dict(compile_scope="blocks"), "compile_scope: applies to compiled steps"),
    (dict(compile=True, compile_scope="layers"), "compile_scope: must be one of model, blocks"),
    (dict(compile=True, compile_scope="model", parallel="fsdp2", nproc_per_node=2), "fsdp2 compiles each block"),
    (dict(compile=True, compile_scope="blocks", parallel="torch_ddp", nproc_per_node=2), "compiles its wrapped model"),
])
def test_what_the_scope_cannot_do_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_spec(**changes)


def test_the_cli_refuses_a_scope_without_compile():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "src.profiling.benchmark", "--sizes", "tiny", "--device", "cpu",
                             "--compile_scope", "blocks", "--output", "/dev/null"], capture_output=True, text=True)
    assert result.returncode == 2 and "--compile_scope: applies to compiled steps" in result.stderr, result.stderr
