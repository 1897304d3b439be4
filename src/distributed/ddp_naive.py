"""NaiveDDP: data parallelism in its plainest form - after backward, one blocking all-reduce per gradient.

On the wire per step: every trainable parameter's gradient (a tied one once), each in its own all_reduce, in the
gradient's dtype, after the whole backward has finished - so no communication overlaps compute, and a model with
P parameter tensors pays P collective launch latencies. The baseline the other strategies improve on.
"""

import torch.distributed as dist

from src.distributed.comm_range import comm_range
from src.distributed.common import DataParallelModule


class NaiveDDP(DataParallelModule):
    def finish_gradient_synchronization(self) -> None:
        """Average the gradients across ranks: sum by all_reduce, divide by world_size (gloo has no AVG op)."""
        if self.world_size == 1:
            return
        for p in self.params:
            if p.grad is not None:
                with comm_range("all_reduce gradient", p.grad.numel() * p.grad.element_size()):
                    dist.all_reduce(p.grad)
                p.grad.div_(self.world_size)
