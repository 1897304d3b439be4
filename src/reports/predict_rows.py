"""Which measured rows the predictor reads: a workload's newest single-GPU row and the compute time it measured,
and the split probe's rows of its shape.

A row's model is compared through its RunSpec and the model interface (its Architecture), so a row of a config.json
and a preset of the same shape are the same workload; its world size is src/harness/record.py's, as for every report.
A probe row's model is compared by its recorded Architecture (src/predict/split.py probe_shape).
"""

import math
import statistics

from src.harness.record import counted_phase_times, world_size_of
from src.predict.scaling import ComputeTime, Workload
from src.predict.split import (COPY_ENGINE, NCCL_LIKE, OVERLAP, SUMMARY, OverlapTiming, SplitProbe, SplitSummary,
                               probe_shape, read_body, read_config)
from src.spec import RunSpec


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values or [] if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def compute_from_record(record: dict, where: str = "") -> ComputeTime:
    """A measured single-GPU train row's median phase times (its median step where phases are missing)."""
    times = counted_phase_times(record)  # past profiled steps, as the row's own statistics
    forward, backward = _median(times["forward"]), _median(times["backward"])
    optimizer = _median(times["optimizer"]) or 0.0
    if forward is None or backward is None:
        step = record.get("median_time_step")
        if not step:
            raise ValueError(f"row {where} has no step time")
        forward, backward, optimizer = step / 3, 2 * step / 3, 0.0
    return ComputeTime(forward, backward, optimizer, f"measured row {where}".strip())


def strategy_of(record: dict) -> str:
    return record.get("config", {}).get("parallel") or "none"


def architecture_of(record: dict):
    """The Architecture a results row measured (through its RunSpec and the model interface), or None."""
    try:
        return RunSpec.from_dict(record.get("config") or {}).model_spec().architecture
    except (TypeError, ValueError):  # an old or foreign row that is no configuration of ours
        return None


def matches(record: dict, workload: Workload) -> bool:
    """A record measured the same single replica: model (its architecture), batch, context, precision, train."""
    c = record.get("config", {})
    same = (
        architecture_of(record) == workload.model.architecture and c.get("batch_size") == workload.batch_size
        and c.get("context_length") == workload.context_length and c.get("mode") == "train"
        and (c.get("precision") or "fp32") == workload.precision
        and (c.get("activation_checkpointing") or "none") == workload.checkpointing
    )
    return same and record.get("status") == "ok"


def single_gpu_record(records: list[dict], workload: Workload) -> dict | None:
    """The newest ok world-size-1 train row of the same configuration without compile or a recipe."""
    found = [
        r for r in records
        if matches(r, workload) and world_size_of(r) == 1 and strategy_of(r) == "none"
        and not r["config"].get("compile") and not r["config"].get("recipe")
    ]
    return found[-1] if found else None


def probe_rows(records: list[dict]) -> list[tuple]:
    """(config, body) of every ok split-probe summary and overlap row; other rows, and probe rows missing a field,
    are not the probe's findings and are passed over."""
    found = []
    for r in records:
        if r.get("status") != "ok" or r.get("kind") not in (SUMMARY, OVERLAP):
            continue
        try:
            found.append((read_config(r), read_body(r)))
        except (TypeError, ValueError):
            continue
    return found


def split_probe(records: list[dict], workload: Workload, where: str = "") -> SplitProbe | None:
    """The probe's findings for `workload`: efficiency per degree from the summary rows of its shape and dtype,
    at its batch and context where measured there, else at the nearest token count (said in `source`; the newest
    row of a degree wins), and the median slowdown of every overlap row (those do not depend on the model).
    None when the file has neither."""
    rows = probe_rows(records)
    dtype = "fp32" if workload.precision == "fp32" else "bf16"  # fp16 runs on the tensor cores at bf16's rate
    shape = probe_shape(workload.model.architecture)
    mine = [(c, b) for c, b in rows
            if isinstance(b, SplitSummary) and c.dtype == dtype and c.shape() == shape]
    efficiency, source = {}, where
    if mine:
        tokens = workload.batch_size * workload.context_length

        def distance(c):
            return (abs(math.log(c.batch_size * c.context_length / tokens)),
                    (c.batch_size, c.context_length) != (workload.batch_size, workload.context_length))

        best = min((c for c, _ in mine), key=distance)
        efficiency = {b.tp: b.efficiency for c, b in mine
                      if (c.batch_size, c.context_length) == (best.batch_size, best.context_length)}
        if (best.batch_size, best.context_length) != (workload.batch_size, workload.context_length):
            source = f"{where} at batch {best.batch_size} x context {best.context_length}"
    slowdowns = {kind: [b.slowdown for _, b in rows if isinstance(b, OverlapTiming) and b.concurrent == kind]
                 for kind in (NCCL_LIKE, COPY_ENGINE)}
    if not efficiency and not any(slowdowns.values()):
        return None
    median = {kind: statistics.median(v) if v else None for kind, v in slowdowns.items()}
    return SplitProbe(efficiency, median[NCCL_LIKE], median[COPY_ENGINE], source)
