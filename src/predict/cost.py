"""Analytic cost of each parallel strategy: the collectives one training step issues, and memory per rank.

Nothing here runs torch.distributed: sizes come from the model interface's parameter table (counted on the meta
device, src/model/interface.py), so the 8B model costs nothing to describe, whatever its family.
`communication_per_step` is what the strategies in src/distributed/ must put on the wire (a test counts their real
collectives against it); `memory_per_rank` extends the model's single-process estimate (ModelSpec.memory_estimate,
the one estimate) to parameters, gradients and AdamW state divided as each strategy divides them.

Sizes follow nccl-tests' "size" (doc/PERFORMANCE.md): the full buffer the collective works on, i.e. the all-gather's
output and the reduce-scatter's input, not the shard one rank contributes.
"""

import dataclasses
import math
from dataclasses import dataclass

from src.model.interface import ModelSpec, Parameter
from src.model.memory import MemoryEstimate, activation_bytes, autocast_weight_copy_bytes
from src.spec import PARALLEL, SHARDED_OPTIMIZERS, STRATEGIES as REGISTRY, checkpoint_group

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
# From the one registry (src/spec.py): every strategy the benchmark runs
DDP_STRATEGIES = tuple(name for name, kind in REGISTRY.items() if kind == "ddp")
ZERO1_STRATEGIES = SHARDED_OPTIMIZERS
STRATEGIES = PARALLEL

PARAM_BYTES = 4  # parameters, gradients and AdamW moments are fp32 in every strategy (autocast keeps fp32 weights)
TORCH_DDP_BUCKET_MB = 25  # DistributedDataParallel(bucket_cap_mb=25), its default
TORCH_DDP_FIRST_BUCKET_MB = 1  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES: the first bucket is 1 MiB
MB = 1024 * 1024


# ----------------------------------------------------------------------------------------------------------------
# The parameters, as the strategies see them
# ----------------------------------------------------------------------------------------------------------------


def parameters_of(model: ModelSpec) -> tuple[Parameter, ...]:
    """Every trainable parameter (a tied one once) in registration order; backward produces them in reverse."""
    return model.parameter_table()


def padded(numel: int, n: int) -> int:
    """Elements after padding to a multiple of n, as our FSDP pads each flat weight before splitting it."""
    return math.ceil(numel / n) * n


def padded_dim0(p: Parameter, n: int) -> int:
    """Elements after FSDP2 pads dim 0 to a multiple of n (torch.chunk on dim 0, padded to equal shards)."""
    return math.ceil(p.dim0 / n) * n * (p.numel // p.dim0)


def units_of(model: ModelSpec, n: int = 1) -> dict[str, int]:
    """FSDP2's units (fully_shard per block and at the root): elements each all-gathers at once on n ranks
    (every parameter's dim 0 padded to a multiple of n)."""
    units: dict[str, int] = {}
    for p in parameters_of(model):
        units[p.unit] = units.get(p.unit, 0) + padded_dim0(p, n)
    return units


def greedy_buckets(sizes_bytes: list[int], cap_bytes: int, first_cap_bytes: int | None = None) -> list[int]:
    """Bucket sizes as torch's DDP reducer packs gradients in the order they become ready: a bucket closes once
    it reaches the cap (the first bucket has its own, smaller cap), so a bucket can exceed the cap by one tensor."""
    buckets, current, cap = [], 0, first_cap_bytes or cap_bytes
    for size in sizes_bytes:
        current += size
        if current >= cap:
            buckets.append(current)
            current, cap = 0, cap_bytes
    if current:
        buckets.append(current)
    return buckets


def buckets_within_cap(sizes_bytes: list[int], cap_bytes: float) -> list[int]:
    """Bucket sizes as our BucketedDDP packs them: a new bucket starts where the next gradient would exceed the
    cap; a gradient larger than the cap gets a bucket of its own."""
    buckets: list[int] = []
    for size in sizes_bytes:
        if buckets and buckets[-1] + size <= cap_bytes:
            buckets[-1] += size
        else:
            buckets.append(size)
    return buckets


def owner_loads(numels: list[int], n: int, largest_first: bool) -> list[int]:
    """Elements of optimizer state on each rank when each parameter goes to the least-loaded rank: in
    registration order (our ShardedOptimizer) or largest first (torch's ZeroRedundancyOptimizer)."""
    loads = [0] * n
    for numel in sorted(numels, reverse=True) if largest_first else numels:
        loads[loads.index(min(loads))] += numel
    return loads


# ----------------------------------------------------------------------------------------------------------------
# Communication
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collective:
    """One kind of collective of a step: `calls` launches carrying `size_bytes` in all (nccl-tests sizes).

    group: which ranks take part: "world", "dp" (the data-parallel replicas of a 2-D layout) or "tp".
    phase: when it runs: "forward", "backward" (interleaved with backward compute), "after_backward" (once
      backward is done) or "after_step" (after the optimizer).
    hideable: the strategy issues it while compute that does not depend on it is still running.
    edge_bytes: the size of the one call at the edge of its phase that nothing can hide (the first gather of
      forward, the last gradient reduced in backward).
    """

    op: str
    size_bytes: int
    calls: int
    group: str
    phase: str
    hideable: bool
    edge_bytes: int = 0


def tp_local(model: ModelSpec, p: Parameter, tp: int) -> tuple[int, int]:
    """(elements, dim 0) of a parameter on one rank of a tensor-parallel group of tp: the plan's column-wise layers
    keep 1/tp of their rows (and bias), row-wise ones 1/tp of their columns (a whole bias); embedding, norms and
    head are whole (src/distributed/tensor_parallel.py). A model without a plan is counted as if every block's
    weight were split by rows (on paper)."""
    plan = model.tp_plan()
    if p.unit == "root":
        style = ""
    else:
        style = plan.style_of(p.name) if plan else ("colwise" if p.sharded else "")
    if style == "colwise":
        return p.numel // tp, p.dim0 // tp
    if style == "rowwise" and not p.name.endswith(".bias"):
        return p.numel // tp, p.dim0
    return p.numel, p.dim0


def tp_units(model: ModelSpec, tp: int, dp: int = 1) -> dict[str, int]:
    """FSDP2's units on the dp dimension of a (dp, tp) mesh: a tensor-parallel rank's elements of each unit, every
    parameter's local dim 0 padded to a multiple of dp."""
    units: dict[str, int] = {}
    for p in parameters_of(model):
        numel, dim0 = tp_local(model, p, tp)
        units[p.unit] = units.get(p.unit, 0) + math.ceil(dim0 / dp) * dp * (numel // dim0)
    return units


def _tp_collectives(model: ModelSpec, batch_size: int, context_length: int, dtype_bytes: int) -> list[Collective]:
    """Megatron-LM tensor parallelism (Shoeybi et al. 2019, sec. 3) as src/distributed/tensor_parallel.py builds
    it: per block, an all-reduce of the activations (B, T, d) after attention's row-parallel output projection and
    one after the MLP's in forward (in the compute dtype), and in backward one all-reduce of the gradient of the
    input each of attention and MLP shares among its column-parallel layers, in the residual stream's dtype (fp32:
    autocast casts inside the linears). Embedding and head are replicated: nothing more. Nothing hides: each
    result is the next op's input."""
    a = model.architecture
    activation = batch_size * context_length * a.d_model  # (B, T, d) elements
    per_phase = 2 * a.num_layers
    return [
        Collective("all_reduce", per_phase * activation * dtype_bytes, per_phase, "tp", "forward", False),
        Collective("all_reduce", per_phase * activation * PARAM_BYTES, per_phase, "tp", "backward", False),
    ]


def collectives_per_step(
    model: ModelSpec,
    strategy: str,
    world_size: int,
    compute_dtype_bytes: int = 4,
    *,
    reduce_dtype_bytes: int | None = None,
    bucket_mb: float = TORCH_DDP_BUCKET_MB,
    batch_size: int | None = None,
    context_length: int | None = None,
    tp_size: int | None = None,
    root_reshard_after_forward: bool = False,
) -> list[Collective]:
    """The collectives one training step issues on each rank, per strategy (the contract of issue 10).

    compute_dtype_bytes: FSDP's all-gather and reduce-scatter dtype (ours), FSDP2's MixedPrecisionPolicy
      param_dtype, and TP's activation dtype. reduce_dtype_bytes: FSDP2's reduce_dtype; None means the
      parameter's own dtype, fp32, which is what torch >= 2.15 does with reduce_dtype=None (_fsdp_api.py).
    root_reshard_after_forward: fully_shard(reshard_after_forward=None), its default, reshards every unit but
      the root after forward ("we usually set False for the root module, because the root module is typically
      required immediately when the backward pass begins", torch's fully_shard docstring): the root's
      parameters (embedding, final norm, LM head) are gathered once. Pass True for a root built with True.
    batch_size, context_length: tensor parallelism only (its traffic is activations). tp_size: the TP degree of
      tp and fsdp_tp (tp: None means world_size, pure TP); the world_size / tp_size groups are tp's data-parallel
      replicas, whose local gradients one flat all-reduce averages after backward, or fsdp_tp's FSDP2 shards.
    """
    _check(strategy, world_size)
    if world_size == 1 or strategy == "none":
        return []
    params = parameters_of(model)
    P = sum(p.numel for p in params)
    gradients = P * PARAM_BYTES
    tensor_bytes = [p.numel * PARAM_BYTES for p in reversed(params)]  # in the order backward produces them
    if strategy in DDP_STRATEGIES or strategy in ZERO1_STRATEGIES:
        if strategy == "ddp_flat":
            calls, hideable, edge = 1, False, gradients
        elif strategy == "ddp_bucketed":
            buckets = buckets_within_cap(tensor_bytes, bucket_mb * MB)
            calls, hideable, edge = len(buckets), True, buckets[-1]
        elif strategy in ("torch_ddp", "torch_zero1"):  # ZeroRedundancyOptimizer runs under torch's DDP
            buckets = greedy_buckets(tensor_bytes, TORCH_DDP_BUCKET_MB * MB, TORCH_DDP_FIRST_BUCKET_MB * MB)
            calls, hideable, edge = len(buckets), True, buckets[-1]
        else:  # ddp_naive (after backward, one per parameter), ddp_overlap (from each gradient's hook); zero1 is
            # assumed under NaiveDDP (no overlap): the slowest our DDP classes can give it
            calls, hideable, edge = len(params), strategy == "ddp_overlap", tensor_bytes[-1]
        phase = "backward" if hideable else "after_backward"
        result = [Collective("all_reduce", gradients, calls, "world", phase, hideable, edge)]
        if strategy in ZERO1_STRATEGIES:  # each updated parameter broadcast from the rank that owns its state
            result.append(Collective("broadcast", gradients, len(params), "world", "after_step", False))
        return result
    if strategy == "fsdp":
        return _fsdp_collectives(params, compute_dtype_bytes, "world", world_size)
    reduce_bytes = PARAM_BYTES if reduce_dtype_bytes is None else reduce_dtype_bytes
    if strategy == "fsdp2":
        units = units_of(model, world_size)
        return _fsdp2_collectives(units, compute_dtype_bytes, reduce_bytes, "world", root_reshard_after_forward)
    if batch_size is None or context_length is None:
        raise ValueError(f"{strategy} moves activations: pass batch_size and context_length")
    tp = _tp_degree(strategy, world_size, tp_size)
    dp = world_size // tp
    result = _tp_collectives(model, batch_size, context_length, compute_dtype_bytes)
    if strategy == "tp" and dp > 1:  # the replicas' local gradients, one flat fp32 all-reduce after backward
        local = sum(tp_local(model, p, tp)[0] for p in params) * PARAM_BYTES
        result.append(Collective("all_reduce", local, 1, "dp", "after_backward", False, local))
    if strategy == "fsdp_tp" and dp > 1:  # FSDP2 over the data-parallel ranks, on a TP rank's part of each unit
        units = tp_units(model, tp, dp)
        result += _fsdp2_collectives(units, compute_dtype_bytes, reduce_bytes, "dp", root_reshard_after_forward)
    return result


def _fsdp_collectives(params: tuple[Parameter, ...], c: int, group: str, n: int) -> list[Collective]:
    """Ours (src/distributed/fsdp.py): each Linear/Embedding weight, flattened and padded to a multiple of n, is
    gathered before forward and again when backward unpacks it (an embedding's backward needs no weight: not
    gathered), its gradient reduce-scattered, all in the compute dtype (c bytes); the replicated RMSNorm weights'
    gradients are all-reduced in fp32 from their post-accumulate hooks, during backward."""
    sharded = [p for p in params if p.sharded]
    full = [padded(p.numel, n) * c for p in sharded]
    in_backward = [size for p, size in zip(sharded, full) if p.module != "embedding"]
    replicated = [p.numel for p in params if not p.sharded]
    # Forward gathers the embedding first; backward gathers the LM head first and reduces the embedding last.
    result = [
        Collective("all_gather", sum(full), len(full), group, "forward", True, full[0]),
        Collective("all_gather", sum(in_backward), len(in_backward), group, "backward", True, in_backward[-1]),
        Collective("reduce_scatter", sum(full), len(full), group, "backward", True, full[0]),
    ]
    if replicated:
        result.append(Collective("all_reduce", sum(replicated) * PARAM_BYTES, len(replicated), group, "backward", True,
                                 replicated[0] * PARAM_BYTES))
    return result


def _fsdp2_collectives(units: dict[str, int], c: int, r: int, group: str, root_reshard: bool) -> list[Collective]:
    """fully_shard per block and at the root: one all-gather per unit in forward, the blocks (and the root if it
    reshards) again in backward, one reduce-scatter per unit (on a 2-D mesh, units of 1/tp of the model's)."""
    units = dict(units)
    root, blocks = units.pop("root"), list(units.values())
    backward_gather = sum(blocks) + (root if root_reshard else 0)
    total = root + sum(blocks)
    return [
        Collective("all_gather", total * c, len(blocks) + 1, group, "forward", True, root * c),
        Collective("all_gather", backward_gather * c, len(blocks) + root_reshard, group, "backward", True, blocks[-1] * c),
        Collective("reduce_scatter", total * r, len(blocks) + 1, group, "backward", True, root * r),
    ]


def communication_per_step(
    model: ModelSpec, strategy: str, world_size: int, compute_dtype_bytes: int = 4, **options
) -> dict[str, int]:
    """Bytes per rank per step by collective (nccl-tests sizes). World size 1 (or strategy none): all zero.

    options: as collectives_per_step (bucket_mb, reduce_dtype_bytes, batch_size, context_length, tp_size, ...).
    """
    totals = dict.fromkeys(COLLECTIVES, 0)
    for c in collectives_per_step(model, strategy, world_size, compute_dtype_bytes, **options):
        totals[c.op] += c.size_bytes
    return totals


# ----------------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankMemory:
    """Bytes one rank holds at its peak, by kind. `gathered` is the strategy's communication memory: FSDP's
    unsharded units and their unsharded gradients, or DDP's gradient buckets."""

    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    gathered: int = 0

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.activations + self.gathered


def memory_per_rank(
    model: ModelSpec,
    strategy: str,
    world_size: int,
    batch_size: int,
    context_length: int,
    precision: str,
    mode: str = "train",
    *,
    checkpointing: str = "none",
    compute_dtype_bytes: int | None = None,
    reduce_dtype_bytes: int | None = None,
    bucket_mb: float = TORCH_DDP_BUCKET_MB,
    tp_size: int | None = None,
) -> RankMemory:
    """Peak bytes on one rank: fp32 parameters, gradients and AdamW state divided as the strategy shards them,
    activations (with or without checkpointing), and the strategy's gathered/bucket buffers.

    World size 1 is the plain single-GPU step for every strategy and equals ModelSpec.memory_estimate, with and
    without checkpointing ("none" or "blocks:N", parsed by src.spec.checkpoint_group).
    compute_dtype_bytes defaults to the precision's (2 under bf16/fp16 autocast, else 4).
    Assumptions, each an upper bound on one implementation detail:
    - ddp_flat holds one flattened copy of all gradients; ddp_bucketed and torch_ddp one copy in buckets (torch's
      docs: gradient_as_bucket_view=True, not its default, "saves memory equal to the total gradients size").
    - fsdp (ours) holds two gathered weights at once (the one in use and the prefetched next), the two largest,
      plus the largest one's unsharded gradient before its reduce-scatter, all in the compute dtype.
    - fsdp2 holds the root unit unsharded for the whole step (it is not resharded after forward) with its
      unsharded gradients (reduced last), plus two blocks (in use and prefetched) and one block's gradients.
    - FSDP gathers weights in the compute dtype, so autocast makes no cached copy of them.
    - tp: the blocks' linear weights / tp (tp_local), embedding, norms and head whole; activations are the
      single-GPU estimate of a model with d_ff and heads / tp and the whole vocabulary (the logits are not split:
      no loss parallel), and the (B, T, d) tensors whole (no sequence parallelism, Korthikanti et al. 2022 eq. 2).
    """
    _check(strategy, world_size)
    group = checkpoint_group(checkpointing)
    base = model.memory_estimate(batch_size, context_length, mode, precision, group)
    activations = base.activations
    if world_size == 1 or strategy == "none":
        return RankMemory(base.parameters, base.gradients, base.optimizer_state, activations)
    c = compute_dtype_bytes or (PARAM_BYTES if precision == "fp32" else 2)
    r = PARAM_BYTES if reduce_dtype_bytes is None else reduce_dtype_bytes
    n = world_size
    params = parameters_of(model)
    P = sum(p.numel for p in params)
    per_param = _state_bytes_per_element(base)  # bytes of (parameter, gradient, optimizer state) per element

    def held(elements: float) -> tuple[int, int, int]:
        return tuple(math.ceil(elements * b) for b in per_param)

    if strategy in DDP_STRATEGIES:
        buffers = P * PARAM_BYTES if strategy in ("ddp_flat", "ddp_bucketed", "torch_ddp") else 0
        return RankMemory(base.parameters, base.gradients, base.optimizer_state, activations, buffers)
    if strategy in ZERO1_STRATEGIES:  # the rank that owns the most elements
        most = max(owner_loads([p.numel for p in params], n, largest_first=strategy == "torch_zero1"))
        return RankMemory(base.parameters, base.gradients, held(most)[2], activations)
    a = model.architecture
    copies = autocast_weight_copy_bytes(a) if precision != "fp32" and mode != "forward" else 0
    if strategy == "fsdp":
        sharded = sorted((padded(p.numel, n) for p in params if p.sharded), reverse=True)
        local = sum(sharded) // n + sum(p.numel for p in params if not p.sharded)
        gathered = (sum(sharded[:2]) + sharded[0]) * c
        return RankMemory(*held(local), activations - copies, gathered)
    if strategy == "fsdp2":
        units = units_of(model, n)
        return RankMemory(*held(sum(units.values()) // n), activations - copies, _fsdp2_gathered(units, 1, c, r))
    tp = _tp_degree(strategy, n, tp_size)
    dp = n // tp
    split = sum(tp_local(model, p, tp)[0] for p in params)
    rank_shape = dataclasses.replace(a.split(tp), vocab_size=a.vocab_size)
    tp_activations = activation_bytes(rank_shape, batch_size, context_length, precision, group)
    if strategy == "tp":
        buffer = split * PARAM_BYTES if dp > 1 else 0  # the flat buffer of the replicas' all-reduce
        return RankMemory(*held(split), tp_activations, buffer)
    units = tp_units(model, tp, dp)
    tp_copies = autocast_weight_copy_bytes(rank_shape) if precision != "fp32" and mode != "forward" else 0
    gathered = _fsdp2_gathered(units, 1, c, r) if dp > 1 else 0
    return RankMemory(*held(sum(units.values()) / dp), tp_activations - (tp_copies if dp > 1 else 0), gathered)


def _state_bytes_per_element(base: MemoryEstimate) -> tuple[float, float, float]:
    """(parameter, gradient, optimizer) bytes per parameter element, read off the single-GPU estimate so that
    forward-only (no gradients, no optimizer) and train modes shard the same way."""
    elements = base.parameters / PARAM_BYTES
    return (PARAM_BYTES, base.gradients / elements, base.optimizer_state / elements)


def _fsdp2_gathered(units: dict[str, int], tp: int, c: int, r: int) -> int:
    root = units["root"] // tp
    block = max(v for k, v in units.items() if k != "root") // tp
    return (root + 2 * block) * c + (root + block) * r


def _tp_degree(strategy: str, world_size: int, tp_size: int | None) -> int:
    """The tensor-parallel degree: tp_size, or (tp only) the whole world."""
    if tp_size is None and strategy == "tp":
        return world_size
    if tp_size is None:
        raise ValueError("fsdp_tp needs tp_size (the tensor-parallel degree, usually the GPUs of one node)")
    if tp_size < 1 or world_size % tp_size:
        raise ValueError(f"tp_size {tp_size} must divide world_size {world_size}")
    return tp_size


def _check(strategy: str, world_size: int) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
