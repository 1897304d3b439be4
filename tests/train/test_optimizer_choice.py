"""--optimizer: which AdamW a step builds, and how an explicit choice combines with the fast recipe's."""

import pytest
import torch

from src.model import PRESETS
from src.spec import RunSpec
from src.train.step import CUDA_GRAPH_MAX_PARAMETERS, TrainStep, build_model, chosen_optimizer


def spec_of(**changes):
    c = PRESETS["tiny"]
    return RunSpec(size="tiny", d_model=c.d_model, d_ff=c.d_ff, num_heads=c.num_heads, num_layers=c.num_layers,
                   context_length=16, batch_size=2, mode="train", **changes)


@pytest.mark.parametrize("optimizer,fused", [("default", None), ("fused", True), ("", None)])
def test_the_step_builds_the_adamw_asked_for(optimizer, fused):
    spec = spec_of(optimizer=optimizer)
    step = TrainStep(spec, build_model(spec))
    assert type(step.optimizer) is torch.optim.AdamW and step.optimizer.defaults["fused"] is fused
    tokens = torch.randint(0, spec.vocab_size, (2, 17))
    before = [p.detach().clone() for p in step.model.parameters()]
    assert torch.isfinite(step(tokens[:, :-1], tokens[:, 1:], None))
    assert all(not torch.equal(a, p) for a, p in zip(before, step.model.parameters()))  # every weight was updated


def test_default_and_fused_train_alike():
    losses = {}
    for optimizer in ("default", "fused"):
        torch.manual_seed(0)
        spec = spec_of(optimizer=optimizer)
        step = TrainStep(spec, build_model(spec), lr=3e-3)
        tokens = torch.randint(0, spec.vocab_size, (4, 2, 17), generator=torch.Generator().manual_seed(1))
        losses[optimizer] = torch.stack([step(t[:, :-1], t[:, 1:], None) for t in tokens])
    # Same algorithm, different kernels: fp32 rounding differs in the last bits (measured: < 1e-6 relative).
    torch.testing.assert_close(losses["fused"], losses["default"], rtol=1e-5, atol=0)


@pytest.mark.parametrize("recipe,optimizer,parameters,expected", [
    ("", "", 10**9, "default"),  # plain train: torch's default, what users' plain code gets
    ("fast", "", 10**9, "ours"),  # the recipe on a large model: bf16 weights with fp32 masters
    ("fast", "", CUDA_GRAPH_MAX_PARAMETERS - 1, "fused"),  # graphed: ours cannot be captured
    ("fast", "default", 10**9, "default"),  # an explicit choice replaces the recipe's
    ("fast", "fused", 10**9, "fused"),
    ("", "ours", 10**9, "ours"),
])
def test_chosen_optimizer_on_cuda(recipe, optimizer, parameters, expected):
    spec = spec_of(device="cuda", precision="bf16", attention="sdpa", recipe=recipe, optimizer=optimizer)  # not run
    assert chosen_optimizer(spec, parameters) == expected


@pytest.mark.parametrize("changes,message", [
    (dict(optimizer="ours"), "needs CUDA"),
    (dict(optimizer="ours", device="cuda", precision="fp32"), "needs CUDA and bf16"),
    (dict(optimizer="lion"), "optimizer: must be one of"),
    (dict(optimizer="in_backward", device="cuda", precision="fp16"), "before GradScaler could unscale"),
    (dict(optimizer="in_backward", parallel="ddp_overlap", nproc_per_node=2), "does not run with optimizer in_backward"),
    (dict(activation_checkpointing="blocks:x"), "blocks:N"),
    # transformers checkpoints decoder layers one by one: groups of N > 1 are ours alone
    (dict(activation_checkpointing="blocks:2", backend="hf_llama", attention="sdpa"), "use blocks:1"),
])
def test_runspec_refuses_what_cannot_run(changes, message):
    with pytest.raises(ValueError, match=message):
        spec_of(**changes)
