"""What the predictor prints and writes: the markdown table, result records, measured bus bandwidth read from a
collectives results file, and the check of predictions against measured rows."""

import math
import statistics
from dataclasses import dataclass

import pandas as pd

from src.predict.alpha_beta import Network
from src.harness.hardware import device_memory_gb, find_gpu_spec
from src.reports.pick import Choice, describe, pick
from src.spec import RunSpec
from src.harness.record import world_size_of
from src.predict.scaling import ComputeTime, Prediction, Workload, compute_from_flops, predict
from src.reports.predict_rows import compute_from_record, single_gpu_record, split_probe, strategy_of

GB = 1e9
COLLECTIVE_FIELDS = ("op", "world_size", "size_bytes", "busbw_gbps")  # rows of python -m src.profiling.collectives


def _fmt(value, digits: int = 4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return value


def table_rows(predictions: list[Prediction]) -> list[dict]:
    rows = []
    for p in predictions:
        bytes_moved = sum(p.comm_bytes.values()) if p.comm_bytes else None
        rows.append({
            "strategy": p.strategy, "GPUs": p.world_size, "nodes": p.nodes, "dp x tp": f"{p.dp}x{p.tp}" if p.dp else "",
            "compute ms": p.compute_s * 1e3, "comm GB/rank": bytes_moved / GB if bytes_moved is not None else None,
            "split ms": p.split_cost_s * 1e3, "comm ms": p.comm_s * 1e3, "exposed ms": p.exposed_comm_s * 1e3,
            "overlap ms": p.overlap_cost_s * 1e3, "step ms": p.step_s * 1e3,
            "tok/s/GPU": p.tokens_per_s_per_gpu, "efficiency": p.scaling_efficiency,
            "mem GB/rank": p.memory_total_bytes / GB if p.memory_total_bytes else None,
            "fits": ("yes" if p.fits else "no") if p.status == "ok" else "", "status": p.status,
        })
    return rows


def format_table(predictions: list[Prediction]) -> str:
    frame = pd.DataFrame(table_rows(predictions))
    return frame.map(_fmt).to_markdown(index=False)


def pick_summary(predictions: list[Prediction]) -> str:
    """Per world size with two strategies or more: the fastest predicted strategy whose memory fits the GPU, its
    margin over the next, and those that do not fit (src/reports/pick.py). A prediction has no run-to-run noise;
    its error is what `--check` measures."""
    by_size: dict[int, list[Choice]] = {}
    for p in predictions:
        if p.status == "ok":
            by_size.setdefault(p.world_size, []).append(Choice(p.strategy, p.tokens_per_s_per_gpu, p.fits))
    lines = [f"- {n} GPU{'s' if n > 1 else ''}: {describe(pick(choices), choices=choices)}"
             for n, choices in sorted(by_size.items()) if len(choices) > 1]
    return "\n".join(["Which strategy to pick (the fastest that fits in memory):", *lines]) if lines else ""


def prediction_record(p: Prediction, workload: Workload, network: Network, compute: ComputeTime, extra: dict) -> dict:
    """A results-file record: the configuration under `config` (as the benchmark's rows), the prediction's fields."""
    m = workload.model.architecture
    config = {
        "size": workload.size, "d_model": m.d_model, "d_ff": m.d_ff, "num_heads": m.num_heads, "num_layers": m.num_layers,
        "vocab_size": m.vocab_size, "context_length": workload.context_length, "batch_size": workload.batch_size,
        "mode": "train", "precision": workload.precision, "attention": m.attention,
        "model": getattr(workload.model, "source", ""), "num_kv_heads": m.num_kv_heads,
        "tie_embeddings": m.tied_embeddings,
        "activation_checkpointing": workload.checkpointing, "parallel": p.strategy, "world_size": p.world_size,
        "link": network.intra.name, "inter_link": network.inter.name if network.inter else "",
        "gpus_per_node": network.gpus_per_node, **extra,
    }
    return {
        "config": config, "kind": "prediction", "status": p.status, "compute_source": compute.source,
        "nodes": p.nodes, "dp": p.dp, "tp": p.tp, "compute_s": p.compute_s, "comm_bytes": p.comm_bytes,
        "comm_s": p.comm_s, "hidden_comm_s": p.hidden_comm_s, "exposed_comm_s": p.exposed_comm_s,
        "split_cost_s": p.split_cost_s, "overlap_cost_s": p.overlap_cost_s, "notes": p.notes,
        "median_time_step": p.step_s, "tokens_per_second_per_gpu": p.tokens_per_s_per_gpu,
        "scaling_efficiency": p.scaling_efficiency, "estimated_memory": p.memory,
        "estimated_memory_bytes": p.memory_total_bytes, "fits": p.fits, "algorithms": p.algorithms,
    }


def measured_busbw(records: list[dict], backend: str | None = None) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """{(op, world_size): [(size_bytes, busbw GB/s), ...]} from collectives rows (fields at the top or in config),
    of one torch.distributed backend when `backend` is given; rows whose status is not ok are skipped. Several
    rows of one size (dtypes, repeated runs) become their median, so each size is one point."""
    samples: dict[tuple[str, int, int], list[float]] = {}
    for r in records:
        if r.get("status", "ok") != "ok":
            continue
        row = {**r.get("config", {}), **{k: v for k, v in r.items() if k != "config"}}
        if any(row.get(k) in (None, "") for k in COLLECTIVE_FIELDS):
            continue
        if backend and row.get("dist_backend", backend) != backend:
            continue
        samples.setdefault((row["op"], int(row["world_size"]), int(row["size_bytes"])), []).append(float(row["busbw_gbps"]))
    found: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for (op, n, size), values in sorted(samples.items()):
        found.setdefault((op, n), []).append((size, float(statistics.median(values))))
    return found


def backends_in(records: list[dict]) -> list[str]:
    return sorted({(r.get("config") or {}).get("dist_backend") or r.get("dist_backend") or "" for r in records} - {""})


# ----------------------------------------------------------------------------------------------------------------
# --check: prediction error per measured row
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CheckRow:
    where: str
    strategy: str
    world_size: int
    device: str
    measured_step_s: float | None
    predicted_step_s: float | None
    measured_memory_bytes: float | None
    predicted_memory_bytes: float | None
    compute_source: str
    note: str = ""

    @staticmethod
    def error(measured, predicted):
        return (predicted - measured) / measured if measured and predicted is not None else None


def workload_of(record: dict) -> Workload:
    """The workload a measured row ran: its model through the RunSpec it records (ValueError if it is none)."""
    c = record["config"]
    model = RunSpec.from_dict(c).model_spec()
    return Workload(model, c.get("size") or "custom", c["batch_size"], c["context_length"],
                    c.get("precision") or "fp32", c.get("activation_checkpointing") or "none")


def check(records: list[dict], network: Network, mfu: float, source: str = "", probe_records: list[dict] = (),
          probe_source: str = "") -> list[CheckRow]:
    """Each ok train row: its step time and peak memory against the prediction for its strategy and world size.

    Compute comes from the world-size-1 row of the same configuration in `records` when one exists and the row
    checked is not that row itself; otherwise from FLOPs at `mfu` of the row's GPU (so world-size-1 rows check
    the FLOPs model and the memory estimate; a CPU row without a world-size-1 partner cannot be predicted).
    probe_records: split-probe rows; each row's workload takes the probe's findings of its shape (predict's probe).
    """
    result = []
    for index, r in enumerate(records, 1):
        c = r.get("config", {})
        if r.get("status") != "ok" or c.get("mode") != "train" or r.get("kind") == "prediction":
            continue
        where = f"{source}#{index}"
        n, strategy, device = world_size_of(r), strategy_of(r), c.get("device") or ""
        gpu_name = (r.get("env") or {}).get("gpu_name") or ""
        try:
            workload = workload_of(r)
        except (KeyError, TypeError, ValueError) as error:
            result.append(CheckRow(where, strategy, n, device, None, None, None, None, "", f"unreadable: {error}"))
            continue
        partner = single_gpu_record(records, workload) if n > 1 else None
        gpu = find_gpu_spec(gpu_name) if gpu_name else None
        if partner is not None:
            compute = compute_from_record(partner, f"{source}#{records.index(partner) + 1}")
        elif gpu is not None:
            compute = compute_from_flops(workload, gpu, mfu)
        else:
            result.append(CheckRow(where, strategy, n, device, r.get("median_time_step"), None,
                                   r.get("peak_memory_bytes"), None, "",
                                   "no world-size-1 row of this configuration and no GPU peak to use instead"))
            continue
        memory_limit = gpu.memory_gb * GB if gpu else math.inf
        try:
            probe = split_probe(list(probe_records), workload, probe_source) if probe_records else None
            p = predict(workload, strategy, n, network, compute, memory_limit, bucket_mb=c.get("bucket_mb") or 25.0,
                        probe=probe)
            predicted_step, predicted_memory = p.step_s, p.memory_total_bytes
        except ValueError as error:
            result.append(CheckRow(where, strategy, n, device, r.get("median_time_step"), None,
                                   r.get("peak_memory_bytes"), None, compute.source, str(error)))
            continue
        notes = [] if device == "cuda" else ["CPU run: memory is not measured there; the link model is NCCL's, not gloo's"]
        if c.get("compile") or c.get("recipe"):
            notes.append(f"{'compiled' if c.get('compile') else c['recipe'] + ' recipe'}: the FLOPs model does not know it"
                         if partner is None else "")
        note = "; ".join(x for x in notes if x)
        result.append(CheckRow(where, strategy, n, device, r.get("median_time_step"), predicted_step,
                               r.get("peak_memory_bytes"), predicted_memory, compute.source, note))
    return result


def format_check(rows: list[CheckRow]) -> str:
    frame = pd.DataFrame([{
        "row": x.where, "strategy": x.strategy, "GPUs": x.world_size, "device": x.device,
        "measured ms": x.measured_step_s * 1e3 if x.measured_step_s else None,
        "predicted ms": x.predicted_step_s * 1e3 if x.predicted_step_s else None,
        "time error": _pct(CheckRow.error(x.measured_step_s, x.predicted_step_s)),
        "measured GB": x.measured_memory_bytes / GB if x.measured_memory_bytes else None,
        "predicted GB": x.predicted_memory_bytes / GB if x.predicted_memory_bytes else None,
        "memory error": _pct(CheckRow.error(x.measured_memory_bytes, x.predicted_memory_bytes)),
        "compute from": x.compute_source, "note": x.note,
    } for x in rows])
    return frame.map(_fmt).to_markdown(index=False) if len(frame) else "(no ok train rows to check)"


def _pct(value):
    return f"{value:+.1%}" if value is not None else None


def check_summary(rows: list[CheckRow]) -> str:
    multi = [x for x in rows if x.world_size > 1]
    errors = [abs(CheckRow.error(x.measured_step_s, x.predicted_step_s)) for x in rows
              if CheckRow.error(x.measured_step_s, x.predicted_step_s) is not None]
    line = f"{len(rows)} rows checked, {len(multi)} with world size > 1"
    if errors:
        line += f"; step-time error: median {sorted(errors)[len(errors) // 2]:.1%}, max {max(errors):.1%}"
    if not multi:
        line += ". No multi-GPU rows yet: these are world-size-1 rows (the compute model and memory estimate only)"
    return line


def device_memory_bytes(gpu_name: str, override_gb: float | None) -> float:
    if override_gb:
        return override_gb * GB
    memory_gb = device_memory_gb(gpu_name)
    if memory_gb is None:
        raise ValueError(f"no memory size known for GPU {gpu_name!r}: pass --gpu_memory_gb")
    return memory_gb * GB

