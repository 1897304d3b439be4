"""ShardedOptimizer (ZeRO stage 1): each rank keeps optimizer state for, and steps, only its share of the parameters.

The gradients must already be averaged (a DDP wrapper does that; this class sends no gradients). Each parameter
has one owner rank, chosen greedily so that every rank owns about the same number of elements; the owner steps
it with the wrapped optimizer (so Adam's two moments exist once in the group instead of once per rank), then
broadcasts the new values. On the wire per step: every trainable parameter once, by `broadcast` from its owner,
in the parameter's dtype. Elementwise optimizers (SGD, Adam, AdamW) give exactly the unsharded results.
"""

from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.optim import Optimizer

from src.distributed.comm_range import comm_range
from src.distributed.common import world


class ShardedOptimizer(Optimizer):
    def __init__(self, params, optimizer_cls: type[Optimizer], **kwargs: Any):
        self.rank, self.world_size = world()
        self.optimizer_cls, self.optimizer_kwargs = optimizer_cls, kwargs
        self.owner: dict[torch.Tensor, int] = {}
        self.load = [0] * self.world_size  # elements owned by each rank
        self.local: Optimizer | None = None  # the wrapped optimizer, over this rank's parameters only
        self._local_groups: list[dict] = []  # this rank's part of each of self.param_groups, same order
        super().__init__(params, defaults=kwargs)  # calls add_param_group for each group

    def add_param_group(self, param_group: dict) -> None:
        """Register the group in full (self.param_groups sees every parameter, so zero_grad and LR schedulers
        work as usual), then give each new parameter to the least-loaded rank and hand this rank's to the
        wrapped optimizer. Every rank runs the same deterministic assignment, so no communication is needed."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        mine = []
        for p in group["params"]:
            owner = min(range(self.world_size), key=lambda r: self.load[r])
            self.owner[p] = owner
            self.load[owner] += p.numel()
            if owner == self.rank:
                mine.append(p)
        local_group = {**{k: v for k, v in group.items() if k != "params"}, "params": mine}
        if self.local is None:
            self.local = self.optimizer_cls([local_group], **self.optimizer_kwargs)
        else:
            self.local.add_param_group(local_group)
        self._local_groups.append(self.local.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None, **kwargs: Any):
        for group, local_group in zip(self.param_groups, self._local_groups):
            # hyperparameters as a scheduler may have just set them on the full groups
            local_group.update({k: v for k, v in group.items() if k != "params"})
        loss = self.local.step(closure, **kwargs)
        if self.world_size > 1:
            params = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
            with comm_range("broadcast updated parameters", sum(p.numel() * p.element_size() for p in params)):
                works = [dist.broadcast(p.data, src=self.owner[p], async_op=True) for p in params]
            for work in works:
                work.wait()
        return loss

    def local_state_dict(self) -> dict:
        """This rank's shard of the optimizer state (the wrapped optimizer's state_dict)."""
        return self.local.state_dict()
