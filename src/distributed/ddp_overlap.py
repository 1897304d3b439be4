"""OverlapDDP: each gradient's all-reduce starts, asynchronously, as soon as backward has produced it.

On the wire per step: the same bytes as NaiveDDP - every trainable gradient once, one all_reduce per parameter,
in the gradient's dtype - but launched from `register_post_accumulate_grad_hook` while backward is still
computing the layers below, so communication hides behind compute. `finish_gradient_synchronization()` only
waits for what is still in flight (the last layers' gradients, the first registered, are produced last).
"""

import torch.nn as nn

from src.distributed.common import AsyncGradientAllReduce, DataParallelModule


class OverlapDDP(DataParallelModule):
    def __init__(self, module: nn.Module):
        super().__init__(module)
        self._all_reduce = AsyncGradientAllReduce(self.params)

    def finish_gradient_synchronization(self) -> None:
        self._all_reduce.wait()
