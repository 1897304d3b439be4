"""What every strategy here shares: the process group's shape, rank 0's weights at start, the parameters to sync.

Nothing in this file sends anything per step; `broadcast_module_state` is the one-off construction broadcast.
"""

import torch
import torch.distributed as dist
import torch.nn as nn

from src.distributed.comm_range import comm_range


def world() -> tuple[int, int]:
    """(rank, world_size) of the default process group; (0, 1) when none is initialised, so the strategies also
    run in a plain single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_module_state(module: nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers: one broadcast per tensor, at construction only.

    Tied parameters are broadcast once (named_parameters drops duplicates). Different seeds per rank are then
    harmless, and so is a buffer that a rank computed differently."""
    if world()[1] == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters whose gradients are synchronised, in registration order: those that require grad, a tied
    (shared) parameter once. A frozen parameter has no gradient and nothing to send."""
    return [p for p in module.parameters() if p.requires_grad]


class AsyncGradientAllReduce:
    """An asynchronous all-reduce of each parameter's gradient, launched the moment autograd has accumulated it.

    `register_post_accumulate_grad_hook` fires once per backward per parameter (a tied parameter's uses are
    summed first), so each gradient goes over the wire once, in its own dtype, while backward goes on with the
    layers below. `wait()` blocks on every launched all-reduce and divides the sums by world_size.
    Used by OverlapDDP for all parameters and by FSDP for the replicated ones (norms)."""

    def __init__(self, params: list[nn.Parameter]):
        self.world_size = world()[1]
        self.pending: list[tuple[dist.Work, torch.Tensor]] = []
        self.handles = [p.register_post_accumulate_grad_hook(self._launch) for p in params]

    def _launch(self, param: nn.Parameter) -> None:
        if self.world_size > 1:
            with comm_range("all_reduce gradient", param.grad.numel() * param.grad.element_size()):
                self.pending.append((dist.all_reduce(param.grad, async_op=True), param.grad))

    def wait(self) -> None:
        for work, grad in self.pending:
            work.wait()
            grad.div_(self.world_size)
        self.pending.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class DataParallelModule(nn.Module):
    """What the DDP classes share: wrap `module` (exposed as .module), start every rank from rank 0's state, call the
    module in forward. Subclasses add how the gradients of `self.params` are averaged, in
    finish_gradient_synchronization()."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        broadcast_module_state(module)
        self.params = trainable_parameters(module)
        self.world_size = world()[1]

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def finish_gradient_synchronization(self) -> None:
        raise NotImplementedError
