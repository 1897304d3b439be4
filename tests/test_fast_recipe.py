import pytest
import torch

from src.model import PRESETS
from src.profiling.spec import RunSpec

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny(**overrides) -> RunSpec:
    c = PRESETS["tiny"]
    fields = dict(size="tiny", d_model=c.d_model, d_ff=c.d_ff, num_heads=c.num_heads, num_layers=c.num_layers,
                  warmup_steps=1, benchmark_steps=2, mode="train")
    return RunSpec(**{**fields, **overrides})


@needs_cuda
def test_graphed_fast_step_trains_like_the_compiled_step_without_graphs():
    """The whole-step CUDA graphs replay what they recorded: same weights, same tokens -> the same losses."""
    from src.profiling.training import TrainStep, build_model

    spec = tiny(device="cuda", recipe="fast", precision="bf16", attention="sdpa", context_length=64, batch_size=2)
    tokens = torch.randint(0, spec.vocab_size, (4, 2, 65), device="cuda")
    losses = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        step = TrainStep(spec, build_model(spec), cuda_graphs=graphs, fused_adamw=True)
        losses[graphs] = [float(step(t[:, :-1], t[:, 1:], None)) for t in tokens]
    # Same kernels in the same order; only the memory addresses differ, so bf16 results agree to rounding.
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
