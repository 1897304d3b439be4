"""Apply a --parallel strategy to the model: wrap it, and say which optimizer steps it and what finishes the
gradient synchronisation after backward (ours only; PyTorch's engines finish it inside backward).

Needs the process group already initialised (the harness's worker does it under torchrun). Ours come from
src.distributed; torch_ddp is DistributedDataParallel, torch_zero1 adds ZeroRedundancyOptimizer, fsdp2 is
fully_shard on every block the model interface names and at the root with a MixedPrecisionPolicy when --precision asks for bf16.
tp and fsdp_tp split the blocks with the model interface's tensor-parallel plan (src/distributed/tensor_parallel.py).

Compiled (--compile, --recipe fast): fsdp2 compiles each block in place before sharding it, as torchtitan does
(the step then leaves the root eager); every other strategy has the step compile its wrapped model whole
(torch_ddp: DDPOptimizer splits the graph at DDP's bucket boundaries; ours: the gradient hooks and the finishing
all-reduces stay outside the graph, in autograd and in `finish`).
"""

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from src.spec import RunSpec
from src.train.step import AUTOCAST_DTYPES  # the compute dtype of --precision, as the step's autocast uses it
from src.train.step import compile_options


@dataclass
class Parallel:
    model: nn.Module  # what the step calls: the wrapper (its .module is the model)
    finish: Callable[[], None] | None  # after backward, timed as the "sync" phase; None: nothing left to wait for
    make_optimizer: Callable[[list, float], torch.optim.Optimizer] | None  # None: the step's own AdamW
    compiled: bool = False  # the strategy compiled the model itself (fsdp2: per block); the step compiles nothing


def parallelize(spec: RunSpec, model: nn.Module) -> Parallel:
    from src import distributed as ours

    strategy = spec.parallel
    if strategy in ("ddp_naive", "ddp_flat", "ddp_overlap", "ddp_bucketed", "zero1", "fsdp"):
        if strategy == "ddp_bucketed":
            wrapped = ours.BucketedDDP(model, spec.bucket_mb)
        elif strategy == "fsdp":
            wrapped = ours.FSDP(model, compute_dtype=AUTOCAST_DTYPES.get(spec.precision),
                                shard_modules=spec.model_spec().shard_types)
        else:
            wrapped = {"ddp_naive": ours.NaiveDDP, "ddp_flat": ours.FlatDDP}.get(strategy, ours.OverlapDDP)(model)
        sharded = (lambda params, lr: ours.ShardedOptimizer(params, torch.optim.AdamW, lr=lr)) \
            if strategy == "zero1" else None
        return Parallel(wrapped, wrapped.finish_gradient_synchronization, sharded)
    if strategy in ("torch_ddp", "torch_zero1"):
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.cuda.current_device()] if spec.device == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids, bucket_cap_mb=spec.bucket_mb)
        zero = (lambda params, lr: ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW, lr=lr)) \
            if strategy == "torch_zero1" else None
        return Parallel(wrapped, None, zero)
    if strategy == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = fsdp2_policy(spec)
        for block in spec.model_spec().blocks(model):  # one unit per transformer block, as torchtitan does
            if spec.compiled:  # compile first: fully_shard's hooks then run around the compiled block, not inside
                block.compile(**compile_options(spec))
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return Parallel(model, None, None, compiled=spec.compiled)
    if strategy in ("tp", "fsdp_tp"):
        return _tensor_parallel(spec, model)
    raise ValueError(f"unknown parallel strategy {strategy!r}")


def _tensor_parallel(spec: RunSpec, model: nn.Module) -> Parallel:
    """TP in groups of tp_size ranks; across the groups data-parallel replicas (tp) or FSDP2 (fsdp_tp)."""
    from src.distributed.common import broadcast_module_state
    from src.distributed.tensor_parallel import apply_tensor_parallel, data_tensor_mesh, replica_gradient_all_reduce

    model_spec = spec.model_spec()
    broadcast_module_state(model)  # rank 0's weights everywhere: a TP rank keeps its slice of them
    mesh = data_tensor_mesh(spec.tp_size, spec.device)
    apply_tensor_parallel(model, model_spec.blocks(model), model_spec.tp_plan(), mesh["tp"])
    if spec.parallel == "tp":
        return Parallel(model, replica_gradient_all_reduce(model, mesh["dp"]), None)
    from torch.distributed.fsdp import fully_shard

    policy = fsdp2_policy(spec)
    for block in model_spec.blocks(model):  # TP first, then FSDP2 on the dp dimension: torchtitan's order
        fully_shard(block, mesh=mesh["dp"], mp_policy=policy)
    fully_shard(model, mesh=mesh["dp"], mp_policy=policy)
    return Parallel(model, None, None)


def fsdp2_policy(spec: RunSpec):
    """torchtitan's policy: gathered weights in the compute dtype, gradients reduced in fp32 (a bf16 reduce-scatter
    would round each rank's sum); None for fp32 runs, where both are fp32 already."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    compute = AUTOCAST_DTYPES.get(spec.precision)
    return MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32 if compute else None)
