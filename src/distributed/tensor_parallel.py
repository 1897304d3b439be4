"""Tensor parallelism on torch's DTensor: the model interface's plan (ModelSpec.tp_plan) applied with parallelize_module.

    mesh = data_tensor_mesh(tp_size, "cpu")                      # (dp, tp): rank = dp index * tp + tp index
    apply_tensor_parallel(model, spec.blocks(model), spec.tp_plan(), mesh["tp"])
    finish = replica_gradient_all_reduce(model, mesh["dp"])      # tp with dp > 1: after backward

In every block the column-wise layers (q/k/v, gate/up) keep 1/tp of their output features and the row-wise ones
(output, down) 1/tp of their input features, so each rank computes nh/tp heads and d_ff/tp of the MLP; the
row-wise output is summed with one all-reduce of (B, T, d) in forward, and the input that the column-wise layers
share is made a replicated DTensor once per attention and MLP, so backward sums its gradient with one all-reduce
(Megatron-LM's f and g). Embedding, norms and LM head stay whole on every rank: their inputs are replicated, so
their gradients agree across the group without any traffic (no vocabulary-parallel head nor loss parallel, no
sequence parallelism: not built). DTensor sends these all-reduces through functional collectives.
The W / tp groups are plain data-parallel replicas (--parallel tp) or FSDP2 units on the dp dimension (fsdp_tp,
src/train/parallel.py; torchtitan's order: TP first, then fully_shard per block and at the root).
"""

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from src.distributed.comm_range import comm_range
from src.model.interface import TensorParallelPlan


def data_tensor_mesh(tp_size: int, device: str) -> DeviceMesh:
    """The 2-D mesh ("dp", "tp") over the default group: consecutive ranks form a tensor-parallel group (on one
    host: TP's per-layer all-reduces want the fastest links)."""
    world_size = dist.get_world_size()
    return init_device_mesh(device, (world_size // tp_size, tp_size), mesh_dim_names=("dp", "tp"))


class _Colwise(ColwiseParallel):
    """ColwiseParallel for any linear layer y = x W^T (+ b) with W (d_out, d_in): torch's accepts nn.Linear only,
    our model's Linear is its own module with the same weight layout."""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return _distribute_linear(self, module, device_mesh)


class _Rowwise(RowwiseParallel):
    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        self.desired_input_layouts = self.input_layouts  # Shard(-1): a row-wise linear's input, as torch's sets it
        return _distribute_linear(self, module, device_mesh)


def _distribute_linear(style, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
    from functools import partial

    from torch.distributed.tensor import distribute_module

    if module.weight.dim() != 2:
        raise ValueError(f"{type(module).__name__}: tensor parallelism splits 2-D (d_out, d_in) linear weights")
    return distribute_module(module, device_mesh, style._partition_linear_fn,
                             partial(style._prepare_input_fn, style.input_layouts, style.desired_input_layouts),
                             partial(style._prepare_output_fn, style.output_layouts, style.use_local_output))


def _replicated_input(plan: TensorParallelPlan, mesh: DeviceMesh):
    """A forward pre-hook: the module's input (first positional argument, else the plan's keyword) as a
    replicated DTensor, which every column-wise layer inside reads as it is."""

    def hook(module, args, kwargs):
        if args:
            return (DTensor.from_local(args[0], mesh, (Replicate(),), run_check=False), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs[plan.input_kwarg] = DTensor.from_local(kwargs[plan.input_kwarg], mesh, (Replicate(),), run_check=False)
        return args, kwargs

    return hook


def apply_tensor_parallel(model: nn.Module, blocks: list, plan: TensorParallelPlan, tp_mesh: DeviceMesh) -> nn.Module:
    """Split every block's layers as the plan says, in place. Every rank must have built the same weights (the
    same seed): distribute_tensor keeps each rank's own slice of its full copy."""
    styles = {"colwise": _Colwise, "rowwise": _Rowwise}
    for block in blocks:
        parallelize_module(block, tp_mesh, {path: styles[style]() for path, style in plan.layers})
        for path in plan.inputs:
            block.get_submodule(path).register_forward_pre_hook(_replicated_input(plan, tp_mesh), with_kwargs=True)
    return model


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: a DTensor's local shard, a plain tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def replica_gradient_all_reduce(model: nn.Module, dp_mesh: DeviceMesh) -> Callable[[], None] | None:
    """--parallel tp's gradient sync across the data-parallel replicas: after backward, every rank's local
    gradients (a TP shard or a whole replicated weight) flattened into one buffer, all-reduced over the dp
    dimension once and averaged, as FlatDDP does over the world (one launch: 16 parameters a block would be 16)."""
    group, replicas = dp_mesh.get_group(), dp_mesh.size()
    params = [p for p in model.parameters() if p.requires_grad]

    if replicas == 1:
        return None  # pure TP: the gradients are complete after backward

    def finish() -> None:
        grads = [local(p.grad) for p in params if p.grad is not None]
        flat = _flatten_dense_tensors(grads)  # (sum of local numels,)
        with comm_range("all_reduce replica gradients", flat.numel() * flat.element_size()):
            dist.all_reduce(flat, group=group)
        flat.div_(replicas)
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)

    return finish
