"""BucketedDDP: gradients packed into buckets of at most bucket_size_mb, each all-reduced as soon as it is full.

Between NaiveDDP (one launch per parameter, full overlap) and FlatDDP (one launch, no overlap). Parameters are
assigned to buckets in reverse registration order - roughly the order backward produces their gradients - and a
bucket's single asynchronous all_reduce of its flattened gradients is launched when its last gradient is ready.
On the wire per step: every trainable gradient once, in its dtype (the same bytes as the other DDP classes), in
as many all_reduce calls as there are buckets. A parameter larger than a bucket gets a bucket of its own, so any
bucket size, even one smaller than a single parameter, is valid. 1 MB here is 2**20 bytes, as in PyTorch's DDP.
"""

import torch
import torch.distributed as dist
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from src.distributed.comm_range import comm_range
from src.distributed.common import DataParallelModule


class _Bucket:
    def __init__(self):
        self.params: list[nn.Parameter] = []
        self.nbytes = 0
        self.ready = 0
        self.flat: torch.Tensor | None = None  # the flattened gradients while their all_reduce is in flight
        self.work: dist.Work | None = None

    def launch(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.flat = _flatten_dense_tensors(grads)
        with comm_range("all_reduce bucket", self.flat.numel() * self.flat.element_size()):
            self.work = dist.all_reduce(self.flat, async_op=True)


def assign_buckets(params: list[nn.Parameter], bucket_size_bytes: float) -> list[_Bucket]:
    """Greedy packing in reverse registration order; a bucket holds one dtype (it is flattened into one tensor)."""
    buckets = [_Bucket()]
    for p in reversed(params):
        nbytes = p.numel() * p.element_size()
        current = buckets[-1]
        if current.params and (current.nbytes + nbytes > bucket_size_bytes or current.params[0].dtype != p.dtype):
            current = _Bucket()
            buckets.append(current)
        current.params.append(p)
        current.nbytes += nbytes
    return [b for b in buckets if b.params]


class BucketedDDP(DataParallelModule):
    def __init__(self, module: nn.Module, bucket_size_mb: float):
        if not bucket_size_mb > 0:
            raise ValueError(f"bucket_size_mb must be positive, got {bucket_size_mb!r}")
        super().__init__(module)
        self.buckets = assign_buckets(self.params, bucket_size_mb * 2**20)
        self._bucket_of: dict[nn.Parameter, _Bucket] = {}
        for bucket in self.buckets:
            for p in bucket.params:
                self._bucket_of[p] = bucket
                p.register_post_accumulate_grad_hook(self._gradient_ready)
        self._launched: list[_Bucket] = []  # in launch order, the same on every rank

    def _gradient_ready(self, param: nn.Parameter) -> None:
        if self.world_size == 1:
            return
        bucket = self._bucket_of[param]
        bucket.ready += 1
        if bucket.ready == len(bucket.params):
            bucket.launch()
            self._launched.append(bucket)

    def finish_gradient_synchronization(self) -> None:
        """Launch any bucket still waiting (a parameter that got no gradient this step counts as zeros), then wait
        for every bucket, average, and copy the results back into the gradients."""
        if self.world_size == 1:
            return
        for bucket in self.buckets:
            if bucket.work is None:
                bucket.launch()
                self._launched.append(bucket)
        for bucket in self._launched:
            bucket.work.wait()
            bucket.flat.div_(self.world_size)
            for p, synced in zip(bucket.params, _unflatten_dense_tensors(bucket.flat, bucket.params)):
                if p.grad is None:
                    p.grad = synced.clone()
                else:
                    p.grad.copy_(synced)
            bucket.flat, bucket.work, bucket.ready = None, None, 0
        self._launched.clear()
