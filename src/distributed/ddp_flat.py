"""FlatDDP: after backward, all gradients are copied into one flat buffer and all-reduced in a single call.

On the wire per step: the same bytes as NaiveDDP (every trainable gradient once, in its dtype) but one
all_reduce instead of one per parameter - one launch latency instead of P, at the price of a copy in and out of
the buffer and of still waiting for the whole backward. Gradients of different dtypes get one buffer per dtype
(a flat buffer has one dtype); a model in one dtype sends exactly one all_reduce.
"""

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from src.distributed.comm_range import comm_range
from src.distributed.common import DataParallelModule


class FlatDDP(DataParallelModule):
    def finish_gradient_synchronization(self) -> None:
        if self.world_size == 1:
            return
        grads_by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in self.params:
            if p.grad is not None:
                grads_by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in grads_by_dtype.values():
            flat = _flatten_dense_tensors(grads)  # (sum of numels,): one copy in
            with comm_range("all_reduce flat gradients", flat.numel() * flat.element_size()):
                dist.all_reduce(flat)
            flat.div_(self.world_size)
            for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
                grad.copy_(synced)  # one copy out, into the tensors the optimizer holds
