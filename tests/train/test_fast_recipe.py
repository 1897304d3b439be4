import pytest
import torch

from src.model import PRESETS

from tests.conftest import needs_cuda
from tests.specs import tiny_spec as tiny


@needs_cuda
def test_graphed_fast_step_trains_like_the_compiled_step_without_graphs():
    """The whole-step CUDA graphs replay what they recorded: same weights, same tokens -> the same losses."""
    from src.train.step import TrainStep, build_model

    spec = tiny(device="cuda", recipe="fast", precision="bf16", attention="sdpa", context_length=64, batch_size=2)
    tokens = torch.randint(0, spec.vocab_size, (4, 2, 65), device="cuda")
    losses = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        step = TrainStep(spec, build_model(spec), cuda_graphs=graphs, fused_adamw=True, bf16_weights=False)
        losses[graphs] = [float(step(t[:, :-1], t[:, 1:], None)) for t in tokens]
    # Same kernels in the same order; only the memory addresses differ, so bf16 results agree to rounding.
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


@needs_cuda
@pytest.mark.parametrize("variant", ["compiled", "fast", "fast_bf16_weights"])
def test_compiled_bf16_gradients_are_as_close_to_fp32_as_eager_bf16(variant):
    """A compiled step may round differently, not compute something else: its first gradient is held to twice the
    eager bf16 step's distance from fp32 arithmetic (under compile, cuDNN's SDPA backward was 67% away)."""
    from src.train.numerics import VARIANTS, build_variant, first_gradients, gradient_errors, variant_context

    c = PRESETS["tiny"]
    base = dict(size="tiny", d_model=c.d_model, d_ff=c.d_ff, num_heads=c.num_heads, num_layers=c.num_layers,
                context_length=256, batch_size=2, mode="train", precision="bf16", attention="sdpa", device="cuda")
    batch = torch.randint(0, c.vocab_size, (2, 257))
    grads = {}
    for name in ("plain_fp32", "plain", variant):
        with variant_context(VARIANTS[name]):
            _, grads[name] = first_gradients(build_variant(base, VARIANTS[name], lr=1e-3), batch)
    eager = gradient_errors(grads["plain"], grads["plain_fp32"])["relative_error"]
    compiled = gradient_errors(grads[variant], grads["plain_fp32"])["relative_error"]
    assert 0 < eager < 5e-2  # bf16 rounding, nothing more
    assert compiled <= 2 * eager


def test_bf16_weights_with_masters_train_like_autocast_casting_fp32_weights():
    """bf16 linear weights updated through fp32 masters are autocast's casts done once per step: same weights, same
    gradients, so the same losses up to AdamW's fp32 rounding (on CPU the update runs under Triton's interpreter)."""
    from src.train.step import TrainStep, build_model

    # Half the tiny preset's width and 4096 tokens, not 10000: the interpreter runs the update's programs one by one,
    # one per 2048 parameters (10000 x 64 embedding and head: 625 a step), and the test took 24.6 s, now 6.0 s. The
    # losses end 1.2e-5 apart here (1.9e-5 at the preset's size), under the 1e-4 below.
    spec = tiny(precision="bf16", attention="sdpa", context_length=32, batch_size=2, d_model=32, d_ff=128,
                num_heads=2, vocab_size=4096)
    tokens = torch.randint(0, spec.vocab_size, (1, 2, 33), generator=torch.Generator().manual_seed(0)).expand(
        4, 2, 33)  # one batch, learnt by heart; seeded, so the distance measured above is the one the test sees
    losses, dtypes = {}, {}
    for bf16_weights in (False, True):
        torch.manual_seed(0)
        model = build_model(spec)
        step = TrainStep(spec, model, lr=3e-3, bf16_weights=bf16_weights)
        losses[bf16_weights] = [float(step(t[:, :-1], t[:, 1:], None)) for t in tokens]
        dtypes[bf16_weights] = {p.dtype for p in model.parameters()}
    assert dtypes == {False: {torch.float32}, True: {torch.float32, torch.bfloat16}}
    assert losses[True][-1] < losses[True][0]  # it trains
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


@needs_cuda
def test_the_fp8_fast_step_on_bf16_weights_trains_like_fp32_weights():
    """The recipe's bf16 weights with fp32 masters under torchao's float8 linears, on fp8 tensor cores: the same
    losses as fp32 weights with fused AdamW (the fp8 rows' optimizer until 2026-12-03) within the recipe's 2%."""
    pytest.importorskip("torchao")
    from src.harness.hardware import has_fp8
    from src.train.step import TrainStep, build_model

    if not has_fp8(torch.cuda.get_device_name(), torch.cuda.get_device_capability()):
        pytest.skip("needs fp8 tensor cores")
    spec = tiny(device="cuda", timer="events", recipe="fast", precision="fp8", fp8_recipe="tensorwise",
                attention="sdpa", context_length=64, batch_size=2)
    tokens = torch.randint(0, spec.vocab_size, (1, 2, 65), device="cuda").expand(6, 2, 65)  # learnt by heart
    losses, dtypes = {}, {}
    for bf16_weights in (False, True):
        torch.manual_seed(0)
        model = build_model(spec)
        step = TrainStep(spec, model, lr=3e-3, bf16_weights=bf16_weights)
        assert step.fp8_linears
        losses[bf16_weights] = [float(step(t[:, :-1], t[:, 1:], None)) for t in tokens]
        dtypes[bf16_weights] = {model.get_submodule(n).weight.dtype for n in step.fp8_linears}
    assert dtypes == {False: {torch.float32}, True: {torch.bfloat16}}
    assert losses[True][-1] < 0.95 * losses[True][0]  # it trains
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)
