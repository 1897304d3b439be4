"""ShardedOptimizer: the same parameters as the unsharded optimizer, with each rank holding only its shard's state."""

import torch
import torch.distributed as dist

from tests.distributed.multiprocess import run_on_ranks
from tests.distributed.single_process import build
from src.distributed import ShardedOptimizer

ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)


def _set_gradients(params, step: int) -> None:
    """The same (already averaged) gradients on every rank, as a DDP wrapper would leave them."""
    generator = torch.Generator().manual_seed(step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)


def _matches_adamw(rank: int, world_size: int) -> None:
    reference, sharded_model = build("cs336", seed=0), build("cs336", seed=0)
    unsharded = torch.optim.AdamW(reference.parameters(), **ADAMW)
    sharded = ShardedOptimizer(sharded_model.parameters(), torch.optim.AdamW, **ADAMW)
    for step in range(10):
        if step == 5:  # a group added after construction, with its own learning rate, lands on some rank
            extra_ref, extra = torch.nn.Parameter(torch.ones(40)), torch.nn.Parameter(torch.ones(40))
            unsharded.add_param_group({"params": [extra_ref], "lr": 3e-2})
            sharded.add_param_group({"params": [extra], "lr": 3e-2})
        for optimizer, model in ((unsharded, reference), (sharded, sharded_model)):
            params = list(model.parameters()) + ([extra_ref if model is reference else extra] if step >= 5 else [])
            _set_gradients(params, step)
            optimizer.step()
            optimizer.zero_grad()
    for (name, expected), got in zip(reference.named_parameters(), sharded_model.parameters()):
        assert torch.allclose(got, expected), f"rank {rank} {name}: max |diff| {(got - expected).abs().max():.3g}"
    assert torch.allclose(extra, extra_ref) and not torch.equal(extra, torch.ones(40)), "added group"

    # state only for this rank's shard; the shards cover every parameter once and are balanced by elements
    mine = [p for p in sharded.local.state]
    assert all(sharded.owner[p] == rank for p in mine)
    owned = torch.tensor([sum(p.numel() for p in mine), len(mine)])
    dist.all_reduce(owned)
    all_params = [p for group in sharded.param_groups for p in group["params"]]
    assert owned.tolist() == [sum(p.numel() for p in all_params), len(all_params)]
    largest = max(p.numel() for p in all_params)
    assert max(sharded.load) - min(sharded.load) <= largest, sharded.load


def test_sharded_adamw_equals_adamw_after_10_steps_with_weight_decay():
    run_on_ranks(_matches_adamw, 2)
