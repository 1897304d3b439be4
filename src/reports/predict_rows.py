"""Which measured rows the predictor reads: a workload's newest single-GPU row, and the compute time it measured.

A row's model is compared through its RunSpec and the model interface (its Architecture), so a row of a config.json
and a preset of the same shape are the same workload; its world size is src/harness/record.py's, as for every report.
"""

from src.harness.record import world_size_of
from src.predict.scaling import ComputeTime, Workload
from src.spec import RunSpec


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values or [] if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def compute_from_record(record: dict, where: str = "") -> ComputeTime:
    """A measured single-GPU train row's median phase times (its median step where phases are missing)."""
    forward, backward = _median(record.get("time_forward")), _median(record.get("time_backward"))
    optimizer = _median(record.get("time_optimizer")) or 0.0
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
