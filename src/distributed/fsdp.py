"""FSDP: fully sharded data parallelism - each rank stores 1/world_size of every large weight and gathers it for use.

The weights of the modules whose type is in `shard_modules` (default: Linear and Embedding, PyTorch's and our
model's) are flattened, padded to a multiple of world_size and split: rank r keeps elements
[r * n/ws, (r+1) * n/ws) as an fp32 master shard, registered under the original parameter name, so an optimizer
over `fsdp.parameters()` steps shards (elementwise optimizers give the unsharded results; padding stays zero).
Every other parameter (the norms) is replicated and synchronised like OverlapDDP.

What goes over the wire, per sharded module and step:
- forward: all_gather of the weight, cast to the compute dtype BEFORE communication (bf16 halves the bytes).
  While a module computes, the next sharded module's all_gather is already in flight (prefetch, in the order
  the previous forward called them); the full weight is dropped when the module returns.
- backward: all_gather again, when autograd unpacks the weight it saved (so a module whose backward does not
  need its weight, like an embedding lookup, does not gather); then reduce_scatter of the weight's gradient in
  the compute dtype, asynchronously, each rank receiving the sum for its shard, kept in fp32 / world_size.
- replicated parameters: one asynchronous all_reduce per gradient, in its own dtype, from its post-accumulate hook.
`finish_gradient_synchronization()` waits for all of it; afterwards every parameter has a gradient of its own
(sharded) shape and dtype. `gather_full_params(fsdp)` rebuilds the full tensors under the original names.
"""

import math
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from src.distributed.comm_range import comm_range
from src.distributed.common import AsyncGradientAllReduce, broadcast_module_state, world
from src.model import transformer

DEFAULT_SHARD_MODULES = (nn.Linear, nn.Embedding, transformer.Linear, transformer.Embedding)


class _ShardedParam:
    """One parameter as this rank holds it: `param`, the flat fp32 master shard; the collectives over all shards."""

    def __init__(self, original: nn.Parameter, compute_dtype: torch.dtype | None):
        self.rank, self.world_size = world()
        self.shape, self.numel = original.shape, original.numel()
        self.padded_numel = math.ceil(self.numel / self.world_size) * self.world_size
        shard_numel = self.padded_numel // self.world_size
        master_dtype = torch.float32 if original.is_floating_point() else original.dtype
        flat = F.pad(original.detach().reshape(-1).to(master_dtype), (0, self.padded_numel - self.numel))  # (n_pad,)
        shard = flat[self.rank * shard_numel : (self.rank + 1) * shard_numel].clone()  # (n_pad / ws,)
        self.param = nn.Parameter(shard, requires_grad=original.requires_grad)
        self.compute_dtype = compute_dtype or original.dtype
        self.reductions: list[tuple[dist.Work | None, torch.Tensor]] = []  # reduce-scatters in flight

    def all_gather(self, dtype: torch.dtype, async_op: bool) -> tuple[dist.Work | None, torch.Tensor]:
        """Start gathering the full flat weight (n_pad,) in `dtype`, cast before it goes over the wire."""
        shard = self.param.detach().to(dtype)
        if self.world_size == 1:
            return None, shard
        full = torch.empty(self.padded_numel, dtype=dtype, device=shard.device)
        with comm_range("all_gather weight", full.numel() * full.element_size()):
            return dist.all_gather_into_tensor(full, shard, async_op=async_op), full

    def unflatten(self, full: torch.Tensor) -> torch.Tensor:
        return full[: self.numel].view(self.shape)

    def reduce_scatter(self, grad: torch.Tensor) -> None:
        """Start summing the full gradient across ranks, each receiving its shard (in grad's dtype)."""
        flat = F.pad(grad.reshape(-1), (0, self.padded_numel - self.numel))  # (n_pad,)
        if self.world_size == 1:
            self.reductions.append((None, flat))
            return
        out = torch.empty(self.padded_numel // self.world_size, dtype=flat.dtype, device=flat.device)
        with comm_range("reduce_scatter gradient", flat.numel() * flat.element_size()):
            self.reductions.append((dist.reduce_scatter_tensor(out, flat, async_op=True), out))

    def finish(self) -> None:
        """Wait for this step's reduce-scatters (a tied weight has one per use) and accumulate them, averaged, in
        the master's dtype into param.grad."""
        for work, summed in self.reductions:
            if work is not None:
                work.wait()
            grad = summed.to(self.param.dtype) / self.world_size
            self.param.grad = grad if self.param.grad is None else self.param.grad + grad
        self.reductions.clear()


class _UseGathered(torch.autograd.Function):
    """Forward: hand the module the gathered full weight. Backward: reduce-scatter its gradient into the shard.

    The shard is the autograd input, so the output requires grad exactly when the parameter does; its gradient is
    delivered by the reduce-scatter (see _ShardedParam.finish), not by autograd, hence None here."""

    @staticmethod
    def forward(ctx, shard: torch.Tensor, sharded: _ShardedParam, full: torch.Tensor):
        ctx.sharded = sharded
        return sharded.unflatten(full)

    @staticmethod
    def backward(ctx, grad_full):
        ctx.sharded.reduce_scatter(grad_full)
        return None, None, None


class FSDP(nn.Module):
    def __init__(self, module: nn.Module, compute_dtype: torch.dtype | None = None, shard_modules=None):
        super().__init__()
        self.module = module
        broadcast_module_state(module)
        shard_types = tuple(shard_modules) if shard_modules is not None else DEFAULT_SHARD_MODULES
        self._shards: list[_ShardedParam] = []
        by_original: dict[nn.Parameter, _ShardedParam] = {}  # a tied weight is sharded once
        self._units: dict[nn.Module, list[tuple[str, _ShardedParam]]] = {}
        for sub in module.modules():
            if not isinstance(sub, shard_types):
                continue
            unit = []
            for name, original in list(sub.named_parameters(recurse=False)):
                if original not in by_original:
                    by_original[original] = _ShardedParam(original, compute_dtype)
                    self._shards.append(by_original[original])
                sharded = by_original[original]
                sub._parameters[name] = sharded.param
                unit.append((name, sharded))
            if unit:
                self._units[sub] = unit
                sub.forward = self._gathered_forward(sub, sub.forward)
        sharded_params = {s.param for s in self._shards}
        replicated = [p for p in module.parameters() if p.requires_grad and p not in sharded_params]
        self._replicated = AsyncGradientAllReduce(replicated)
        self._order: list[nn.Module] = []  # sharded modules in the order the last forward called them
        self._called: list[nn.Module] = []  # ... and in this forward so far
        self._prefetched: dict[int, list[tuple[dist.Work | None, torch.Tensor]]] = {}  # call index -> gathers

    def forward(self, *args, **kwargs):
        self._called = []
        try:
            return self.module(*args, **kwargs)
        finally:
            for gathers in self._prefetched.values():  # gathered for a call that did not come: wait, drop
                for work, _ in gathers:
                    if work is not None:
                        work.wait()
            self._prefetched.clear()
            self._order = self._called

    def _gather_unit(self, module: nn.Module, async_op: bool):
        return [sharded.all_gather(sharded.compute_dtype, async_op) for _, sharded in self._units[module]]

    def _gathered_forward(self, module: nn.Module, forward):
        """Wrap a sharded module's forward: gather (or take the prefetched gather), prefetch the next one, run
        with the full weights in place of the shards, put the shards back."""

        def gathered_forward(*args, **kwargs):
            call = len(self._called)
            self._called.append(module)
            planned = call < len(self._order) and self._order[call] is module
            gathers = self._prefetched.pop(call, None) if planned else None
            if gathers is None:
                gathers = self._gather_unit(module, async_op=False)
            if call + 1 < len(self._order) and planned:
                self._prefetched[call + 1] = self._gather_unit(self._order[call + 1], async_op=True)
            storage_owner = {}
            for (name, sharded), (work, full) in zip(self._units[module], gathers):
                if work is not None:
                    work.wait()
                module._parameters[name] = _UseGathered.apply(sharded.param, sharded, full)
                storage_owner[full.untyped_storage().data_ptr()] = sharded
            try:
                with _regather_in_backward(storage_owner):
                    return forward(*args, **kwargs)
            finally:
                for name, sharded in self._units[module]:
                    module._parameters[name] = sharded.param

        return gathered_forward

    def finish_gradient_synchronization(self) -> None:
        self._replicated.wait()
        for sharded in self._shards:
            sharded.finish()


@contextmanager
def _regather_in_backward(storage_owner: dict[int, _ShardedParam]):
    """While a sharded module runs forward, a tensor autograd saves that is (a view of) a gathered weight is saved
    as a note instead of the tensor, so the full weight is freed when forward is done; backward gathers it anew."""

    def pack(tensor):
        sharded = storage_owner.get(tensor.untyped_storage().data_ptr())
        if sharded is None:
            return tensor
        return sharded, tensor.dtype, tensor.size(), tensor.stride(), tensor.storage_offset()

    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        sharded, dtype, size, stride, offset = packed
        _, full = sharded.all_gather(dtype, async_op=False)
        return full.as_strided(size, stride, offset)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


def gather_full_params(fsdp: FSDP) -> dict[str, torch.Tensor]:
    """Full tensors of every parameter under its original name (all ranks must call: it all-gathers each shard in
    the master dtype); replicated parameters are returned as they are (a copy)."""
    sharded_of = {sharded.param: sharded for sharded in fsdp._shards}
    full_params = {}
    for name, param in fsdp.module.named_parameters():
        sharded = sharded_of.get(param)
        if sharded is None:
            full_params[name] = param.detach().clone()
        else:
            _, full = sharded.all_gather(param.dtype, async_op=False)
            full_params[name] = sharded.unflatten(full).clone()
    return full_params
