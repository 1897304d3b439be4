"""Every strategy of src.distributed, on 2 (and 4) gloo ranks, ends where single-process training on the whole batch
ends: our CS336 model and a toy with a tied weight and a frozen parameter, several SGD-with-momentum steps."""

import pytest
import torch

from tests.distributed.multiprocess import run_on_ranks
from tests.distributed.single_process import STRATEGIES, batches, build, full_params, rank_slice, reference_params, train


def _every_strategy(rank: int, world_size: int, model_name: str, device: str = "cpu") -> None:
    """On `device` "cuda" every rank's tensors live on the one GPU and gloo moves them (tests/distributed/test_on_cuda.py)."""
    expected = reference_params(model_name, device=device)
    local_batches = [rank_slice(tokens, rank, world_size) for tokens in batches(device=device)]
    for strategy, (wrap, make_optimizer) in STRATEGIES.items():
        # each rank starts from a different initialisation: construction must broadcast rank 0's
        wrapped = wrap(build(model_name, seed=rank, device=device))
        train(wrapped, make_optimizer(wrapped), local_batches, wrapped.finish_gradient_synchronization)
        got = full_params(wrapped)
        assert list(got) == list(expected), f"{strategy}: parameter names {list(got)}"
        for name, value in expected.items():
            assert got[name].shape == value.shape, f"{strategy}: {name} shape {got[name].shape}"
            max_diff = (got[name] - value).abs().max().item()
            assert torch.allclose(got[name], value), f"{strategy} rank {rank} {name}: max |diff| {max_diff:.3g}"


@pytest.mark.parametrize("model_name", ["cs336", "toy"])
def test_every_strategy_matches_single_process_on_2_ranks(model_name):
    run_on_ranks(_every_strategy, 2, model_name)


def test_every_strategy_matches_single_process_on_4_ranks():
    run_on_ranks(_every_strategy, 4, "toy")
