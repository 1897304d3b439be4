"""A multi-process row: every rank's phase times and peak memory gathered to rank 0, and the strategy's analytic
memory and communication (src/predict/cost.py) beside them.

Fields added to a row with world size > 1 (rank 0's record; the other ranks' records are not written):
  rank_median_time_<phase>    per rank, the median over measured steps (phases: forward, backward, sync, optimizer)
  {min,median,max}_time_step_across_ranks, slowest_rank   of the per-rank median step times
  rank_peak_memory_bytes      per rank (CUDA); peak_memory_bytes becomes their maximum
  rank_status                 per rank
The group's step ends when its slowest rank's does, so tokens/s for the group is world_size x B x T over the
slowest rank's median step, and tokens/s per GPU (and MFU, per GPU) follow from that same time.
"""

import numpy as np
import torch.distributed as dist

from src.distributed.common import world  # the one process-level (rank, world size)
from src.harness.record import counted_phase_times
from src.spec import LOW_PRECISIONS, PHASES, RunSpec


def world_size() -> int:
    return world()[1]


def gather_ranks(record: dict) -> dict:
    """Collective: every rank calls it; on rank 0 it returns the per-rank fields for the record ({} elsewhere)."""
    mine = {
        "status": record.get("status"),
        "peak_memory_bytes": record.get("peak_memory_bytes"),
        **{phase: float(np.median(times)) if times else None for phase, times in counted_phase_times(record).items()},
    }
    everyone = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    if world()[0] != 0:
        return {}
    fields = {f"rank_median_time_{phase}": [r[phase] for r in everyone] for phase in PHASES}
    steps = [sum(r[p] or 0.0 for p in PHASES) for r in everyone]
    if all(r["forward"] is not None for r in everyone):
        fields.update(min_time_step_across_ranks=min(steps), median_time_step_across_ranks=float(np.median(steps)),
                      max_time_step_across_ranks=max(steps), slowest_rank=int(np.argmax(steps)))
    fields["rank_status"] = [r["status"] for r in everyone]
    fields["rank_peak_memory_bytes"] = [r["peak_memory_bytes"] for r in everyone]
    peaks = [p for p in fields["rank_peak_memory_bytes"] if p is not None]
    if peaks:
        fields["peak_memory_bytes"] = max(peaks)
    return fields


def group_step_time(record: dict) -> float | None:
    """The group's step: the slowest rank's median when the ranks were gathered, else this process's median."""
    return record.get("max_time_step_across_ranks") or record.get("median_time_step")


def estimated_memory(spec: RunSpec, world_size: int) -> dict:
    """The one memory estimate of a configuration, as a row records it: the model's single-process estimate
    (ModelSpec.memory_estimate, checkpointing included) divided as the strategy divides it on `world_size` ranks
    (src/predict/cost.py; at world size 1, or without a strategy, the single-process estimate itself). The
    guard that refuses configurations far above the device's memory reads this same figure."""
    from src.predict.cost import memory_per_rank

    memory = memory_per_rank(spec.model_spec(), spec.parallel, world_size, spec.batch_size, spec.context_length,
                             spec.precision, spec.mode, checkpointing=spec.activation_checkpointing,
                             bucket_mb=spec.bucket_mb, tp_size=spec.tp_size or None)
    return {"estimated_memory_bytes": memory.total, "estimated_memory": {**memory.__dict__, "total": memory.total}}


def communication_options(spec: RunSpec) -> dict:
    """What the cost model needs of a configuration beyond the strategy: buckets, and TP's activations and degree."""
    return dict(bucket_mb=spec.bucket_mb, batch_size=spec.batch_size, context_length=spec.context_length,
                tp_size=spec.tp_size or None)


def data_parallel_rank(spec: RunSpec) -> tuple[int, int]:
    """(this rank's data-parallel index, how many): which batch it trains on. A tensor-parallel group (consecutive
    ranks, src/distributed/tensor_parallel.py) shares one; every other strategy gives each rank its own."""
    rank, n = world()
    return (rank // spec.tp_size, n // spec.tp_size) if spec.tp_size else (rank, n)


def strategy_estimates(spec: RunSpec, record: dict) -> dict:
    """Bytes per step by collective, as the cost model counts them for this strategy."""
    from src.predict.cost import communication_per_step

    n = record.get("world_size") or 1
    model = spec.model_spec()
    compute_dtype_bytes = 2 if spec.precision in LOW_PRECISIONS else 4
    fields = {}
    if spec.mode == "forward":  # no gradients: only FSDP's forward gathers would move, and no row needs them
        return fields
    for op, nbytes in communication_per_step(model, spec.parallel, n, compute_dtype_bytes,
                                             **communication_options(spec)).items():
        fields[f"comm_bytes_{op}"] = nbytes
    return fields
