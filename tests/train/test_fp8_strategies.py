"""Our data-parallel strategies train a float8 model (torchao, emulated) on 2 gloo ranks as one process does.

rowwise_with_gw_hp makes the comparison exact up to reassociation: its fp8 scales are per token (input,
grad_output) or per weight row, never across the batch, and grad_weight stays in high precision, so rank r's
slice is rounded exactly as it is inside the whole batch (a rank's grad_output is 2x the whole batch's, and the
recipe's scales are powers of 2): measured 3e-8 apart. With tensorwise scaling each rank's amax sees only its own
slice (1.9e-3 apart after 3 steps), so a comparison with one process needs this recipe or a tolerance.
~30 s on a loaded 2-core CPU, most of it starting the 2 ranks (torch and torchao imported in each).
"""

import pytest
import torch

pytest.importorskip("torchao")

from src.train.fp8 import convert_to_fp8  # noqa: E402
from tests.distributed.multiprocess import run_on_ranks  # noqa: E402
from tests.distributed.single_process import (  # noqa: E402
    STRATEGIES, batches, build, full_params, rank_slice, sgd, train,
)

RECIPE = "rowwise_with_gw_hp"
# One of each way a strategy touches the model: gradients all-reduced from hooks, optimizer state sharded, weights
# sharded and gathered. The DDP variants differ only in how they batch the same all-reduces (and the whole
# list cost ~60 s here on the loaded 2-core CPU, against ~25 s for these three).
CHECKED = ("ddp_overlap", "zero1", "fsdp")


def fp8_model(seed: int):
    model = build("cs336", seed)  # d 32, d_ff 64: every block linear converts; the head stays fp32
    assert len(convert_to_fp8(model, RECIPE, emulate=True)) == 14
    return model


def _every_strategy_in_fp8(rank: int, world_size: int) -> None:
    reference = fp8_model(seed=0)
    train(reference, sgd(reference.parameters()), batches())
    expected = {name: p.detach() for name, p in reference.named_parameters()}
    local_batches = [rank_slice(tokens, rank, world_size) for tokens in batches()]
    for strategy in CHECKED:
        wrap, make_optimizer = STRATEGIES[strategy]
        wrapped = wrap(fp8_model(seed=rank))
        train(wrapped, make_optimizer(wrapped), local_batches, wrapped.finish_gradient_synchronization)
        got = full_params(wrapped)
        assert list(got) == list(expected), strategy
        for name, value in expected.items():
            max_diff = (got[name] - value).abs().max().item()
            assert torch.allclose(got[name], value), f"{strategy} {name}: max |diff| {max_diff:.3g}"


def test_our_strategies_train_fp8_like_one_process():
    run_on_ranks(_every_strategy_in_fp8, 2)
