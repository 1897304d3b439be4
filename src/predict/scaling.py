"""Scaling prediction: step time, tokens/s per GPU, scaling efficiency and memory per rank at any world size.

    step = compute per rank + exposed communication + what hidden communication slows the compute under it
    compute per rank: the single-GPU step's forward, backward and optimizer times (a measured row, read by
      src/reports/predict_rows.py, or FLOPs at a stated MFU and the optimizer's memory traffic at the GPU's
      bandwidth), forward and backward divided by tp x split efficiency(tp), the optimizer by how many ranks
      share its state; checkpointing adds one forward of the blocks to backward. Split efficiency comes from the
      split probe (src/predict/split.py: a rank's matmuls timed at each degree on one GPU); without one it is 1,
      the old constant-MFU assumption (a quarter of a matrix at the whole one's rate).
    communication: src.predict.cost's collectives per step, each timed by src.predict.alpha_beta.
    exposed: collectives issued during a phase hide behind that phase's compute except what exceeds it and the one
      call at the phase's edge (`edge_bytes`: the first gather, the last gradient); the rest is fully exposed.
    overlap cost: hidden communication x (slowdown - 1), slowdown being the probe's measured time of compute with
      an NCCL-like copy kernel beside it over alone; without a probe, 0 (hidden communication free). The slower
      compute is not taken to hide more communication (second order).
    tokens/s per GPU = batch x context x data-parallel degree / world size / step; scaling efficiency = that over
      the world-size-1 figure (weak scaling: every data-parallel replica keeps its batch).
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Protocol

from src.predict.alpha_beta import Network, collective_time
from src.predict.cost import collectives_per_step, memory_per_rank
from src.predict.split import SplitProbe
from src.model.flops import ADAMW_BYTES_PER_PARAMETER, blocks_share_of_forward
from src.model.interface import ModelSpec
from src.spec import checkpoint_group

SHARDS_OPTIMIZER = ("zero1", "torch_zero1", "fsdp", "fsdp2", "fsdp_tp")


class GpuPeaks(Protocol):
    """What the compute time reads of a GPU: src/harness/hardware.py's GpuSpec, named here only by its fields
    (the harness is above this package)."""

    name: str
    fp32: float  # TFLOP/s, dense
    bf16: float  # TFLOP/s, dense tensor cores
    bandwidth_tb_s: float


@dataclass(frozen=True)
class Workload:
    """One data-parallel replica's training step: the model, its batch and context, precision, checkpointing."""

    model: ModelSpec  # the model interface: GQA, a tied head and experts are in its counts
    size: str  # the preset's or config's name, or "custom"
    batch_size: int
    context_length: int
    precision: str = "bf16"
    checkpointing: str = "none"

    def __post_init__(self):
        checkpoint_group(self.checkpointing)
        if self.batch_size < 1 or self.context_length < 1:
            raise ValueError("batch_size and context_length must be positive")


@dataclass(frozen=True)
class ComputeTime:
    """The single-GPU step in seconds, by phase, and where the figures came from."""

    forward: float
    backward: float
    optimizer: float
    source: str


def compute_from_flops(workload: Workload, gpu: GpuPeaks, mfu: float) -> ComputeTime:
    """Forward and backward at `mfu` of the GPU's dense peak (bf16 tensor cores, or plain fp32 for fp32 runs:
    torch's default float32_matmul_precision 'highest' uses no tf32), AdamW at the GPU's memory bandwidth
    (flops.ADAMW_BYTES_PER_PARAMETER bytes per parameter: an ideal fused kernel; measured unfused AdamW on 2.7B
    took 93 ms on an H100 against 23 ms at 3.35 TB/s, so this is optimistic)."""
    peak = (gpu.bf16 if workload.precision in ("bf16", "fp16") else gpu.fp32) * 1e12
    forward = workload.model.forward_flops(workload.batch_size, workload.context_length) / (mfu * peak)
    parameters = workload.model.parameter_count().total
    optimizer = parameters * ADAMW_BYTES_PER_PARAMETER / (gpu.bandwidth_tb_s * 1e12)
    return ComputeTime(forward, 2 * forward, optimizer, f"FLOPs at {mfu:.0%} MFU of {gpu.name}")


@dataclass
class Prediction:
    strategy: str
    world_size: int
    nodes: int
    dp: int
    tp: int
    compute_s: float
    comm_bytes: dict[str, int]
    comm_s: float
    exposed_comm_s: float
    step_s: float
    tokens_per_s_per_gpu: float
    memory: dict[str, int]
    memory_total_bytes: int
    fits: bool
    scaling_efficiency: float | None = None
    algorithms: str = ""
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    split_cost_s: float = 0.0  # compute per rank beyond single-GPU compute / tp: the split probe's inefficiency
    overlap_cost_s: float = 0.0  # hidden communication x (slowdown - 1): the compute it slowed

    @property
    def hidden_comm_s(self) -> float:
        return self.comm_s - self.exposed_comm_s


def tp_degree(strategy: str, world_size: int, model: ModelSpec, gpus_per_node: int, tp_size: int | None) -> int:
    """tp: every rank; fsdp_tp: tp_size, else the largest degree within one node that divides the heads and
    d_ff (TP's per-block all-reduces need NVLink: Megatron-LM keeps it inside a node); others: 1."""
    if strategy == "tp":
        return world_size
    if strategy != "fsdp_tp":
        return 1
    if tp_size:
        return tp_size
    a = model.architecture
    candidates = [t for t in range(1, min(gpus_per_node, world_size) + 1)
                  if world_size % t == 0 and a.num_heads % t == 0 and (a.d_ff or a.expert_d_ff) % t == 0]
    return max(candidates)


def predict(
    workload: Workload,
    strategy: str,
    world_size: int,
    network: Network,
    compute: ComputeTime,
    device_memory_bytes: float,
    *,
    overlap: float | None = None,
    probe: SplitProbe | None = None,
    bucket_mb: float = 25.0,
    tp_size: int | None = None,
    compute_dtype_bytes: int | None = None,
    reduce_dtype_bytes: int | None = None,
) -> Prediction:
    """One world size under one strategy. overlap: a measured fraction of the hideable communication that hid
    (replaces the phase model). probe: the split probe's efficiency per TP degree and overlap slowdown (None: TP at
    constant MFU, hidden communication free); a TP degree outside its measured ones raises ValueError."""
    model, n = workload.model, world_size
    c = compute_dtype_bytes or (4 if workload.precision == "fp32" else 2)
    tp = tp_degree(strategy, n, model, network.gpus_per_node, tp_size)
    dp = n // tp
    collectives = collectives_per_step(
        model, strategy, n, c, reduce_dtype_bytes=reduce_dtype_bytes, bucket_mb=bucket_mb,
        batch_size=workload.batch_size, context_length=workload.context_length, tp_size=tp,
    )
    memory = memory_per_rank(
        model, strategy, n, workload.batch_size, workload.context_length, workload.precision,
        checkpointing=workload.checkpointing, compute_dtype_bytes=c, reduce_dtype_bytes=reduce_dtype_bytes,
        bucket_mb=bucket_mb, tp_size=tp,
    )
    # Compute per rank, by phase.
    recompute = 0.0
    if workload.checkpointing != "none":
        recompute = compute.forward * blocks_share_of_forward(model.architecture, workload.batch_size,
                                                              workload.context_length)
    shard = n if strategy in SHARDS_OPTIMIZER else tp
    efficiency, notes = 1.0, []
    if tp > 1 and probe is not None and probe.efficiency:
        efficiency, how = probe.efficiency_at(tp)
        notes.append(f"split efficiency {efficiency:.3g} ({how}, {probe.source})")
    phases = {
        "forward": compute.forward / (tp * efficiency),
        "backward": (compute.backward + recompute) / (tp * efficiency),
    }
    split_cost_s = (phases["forward"] + phases["backward"]) * (1 - efficiency)  # = ideal x (1 / efficiency - 1)
    optimizer = compute.optimizer / shard if n > 1 else compute.optimizer
    compute_s = phases["forward"] + phases["backward"] + optimizer
    # Communication, timed per collective on its group.
    per_node = min(n, network.gpus_per_node)
    groups = {"world": (n, per_node), "tp": (tp, min(tp, per_node)), "dp": (dp, max(1, per_node // tp))}
    comm_s, exposed_s, hideable = 0.0, 0.0, {"forward": [0.0, 0.0], "backward": [0.0, 0.0]}
    algorithms = set()
    for coll in collectives:
        size, ranks_per_node = groups[coll.group]
        t = collective_time(coll.op, coll.size_bytes, size, network, ranks_per_node, coll.calls)
        algorithms.add(f"{coll.op} {t.algorithm}")
        comm_s += t.seconds
        if coll.hideable and coll.phase in hideable:
            edge = collective_time(coll.op, coll.edge_bytes, size, network, ranks_per_node).seconds
            hideable[coll.phase][0] += t.seconds
            hideable[coll.phase][1] = max(hideable[coll.phase][1], edge)
        else:
            exposed_s += t.seconds
    hidden_s = 0.0
    for phase, (total, edge) in hideable.items():
        exposed = total * (1 - overlap) if overlap is not None else min(total, max(total - phases[phase], edge))
        exposed_s += exposed
        hidden_s += total - exposed
    slowdown = probe.slowdown if probe is not None and probe.slowdown else 1.0
    overlap_cost_s = hidden_s * (slowdown - 1)
    if hidden_s and slowdown != 1.0:
        notes.append(f"hidden communication slows the compute under it {slowdown:.3g}x ({probe.source})")
    step = compute_s + exposed_s + overlap_cost_s
    tokens = workload.batch_size * workload.context_length * dp / n
    return Prediction(
        strategy=strategy, world_size=n, nodes=network.nodes(n), dp=dp, tp=tp, compute_s=compute_s,
        comm_bytes={k: sum(x.size_bytes for x in collectives if x.op == k) for k in ("all_reduce", "all_gather", "reduce_scatter", "broadcast")},
        comm_s=comm_s, exposed_comm_s=exposed_s, step_s=step, tokens_per_s_per_gpu=tokens / step,
        memory=asdict(memory), memory_total_bytes=memory.total,
        fits=memory.total <= device_memory_bytes, algorithms=", ".join(sorted(algorithms)), notes=notes,
        split_cost_s=split_cost_s, overlap_cost_s=overlap_cost_s,
    )


def predict_scaling(
    workload: Workload, strategy: str, world_sizes: list[int], network: Network, compute: ComputeTime,
    device_memory_bytes: float, **options,
) -> list[Prediction]:
    """predict() at each world size; a size the strategy cannot use becomes a row whose status says why.
    Scaling efficiency is against world size 1 of the same workload (always computed, printed or not)."""
    base = predict(workload, "none", 1, network, compute, device_memory_bytes, **options)
    rows = []
    for n in world_sizes:
        try:
            row = predict(workload, strategy, n, network, compute, device_memory_bytes, **options)
        except ValueError as error:
            rows.append(_not_applicable(strategy, n, network, str(error)))
            continue
        row.scaling_efficiency = row.tokens_per_s_per_gpu / base.tokens_per_s_per_gpu
        rows.append(row)
    return rows


def _not_applicable(strategy: str, n: int, network: Network, reason: str) -> Prediction:
    nan = math.nan
    return Prediction(strategy, n, network.nodes(n), 0, 0, nan, {}, nan, nan, nan, nan, {}, 0, False,
                      status=f"n/a: {reason}", split_cost_s=nan, overlap_cost_s=nan)
