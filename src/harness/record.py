"""One result row (a record): its declared fields, the phases listed once, and the helpers that build and read rows.

A record is a TypedDict rather than a dataclass because rows cross process and version boundaries as JSON lines
and CSV: the child writes one, the parent appends it, and the reports read files written by older versions that
lack some fields (or carry retired ones, like `peak_tflops` at the top level). A TypedDict declares the shape
for readers and type checkers while a row stays the plain dict that json and csv read and write, so every file
under docs/results/ loads unchanged, with no conversion layer to keep in step. What is derived from the shape
(the CSV's list columns, the per-phase statistics) is computed from FIELDS below.

Adding a field is one line in FIELDS (distributed rows: world_size, per-rank times, comm bytes; new config
options belong to RunSpec instead, whose fields are the `config` entry and the CSV's config columns).
"""

from dataclasses import fields as dataclass_fields
from types import UnionType
from typing import Any, TypedDict, Union, get_args, get_origin

import numpy as np

from src.spec import PHASES, RunSpec

STATS = ("mean", "std", "median", "min", "max")  # what src/harness/timing.py's summarize gives, in its order
STEP = "step"  # the whole step: the sum of its phases


def phase_field(phase: str) -> str:
    """The list of seconds per measured step of one phase: "time_forward"."""
    return f"time_{phase}"


def stat_field(stat: str, name: str) -> str:
    """One statistic of a phase (or of the whole step) over the measured steps: "median_time_step"."""
    return f"{stat}_time_{name}"


PHASE_FIELDS = tuple(phase_field(p) for p in PHASES)

FIELDS: dict[str, Any] = {
    "config": dict,  # RunSpec.to_dict(): every option of the configuration
    "status": str,  # "ok", "OOM", "non-finite loss", "error: <one line>", "crash: <how the child died>"
    "warnings": list[str],
    "error": str,  # the OOM's one-line message
    **{phase_field(p): list[float] for p in PHASES},  # seconds per measured step; empty when the phase did not run
    "warmup_time_step": list[float],  # seconds per warm-up step (whole steps)
    # the first measured step the statistics count (RunSpec.statistics_from_step: past profiled steps); the lists
    # above keep every step. Absent in rows before 2026-12-03's third run: 0, every step.
    "statistics_from_step": int,
    "compile_time_s": float | None,  # RunSpec.compile_steps under torch.compile, timed apart from the warm-up
    "recompilations": int,  # graphs torch.compile made after the first step
    # graphs the first step compiled (AOTAutograd's count): 1 for a whole model that compiled unbroken; fsdp2
    # compiles its blocks (blocks of one code share a graph), torch_ddp's DDPOptimizer splits the model at DDP's
    # bucket boundaries; fewer where a graph compiled earlier in the same process was reused
    "compiled_graphs": int,
    "peak_memory_bytes": int | None,  # torch.cuda.max_memory_allocated; None off CUDA
    **{stat_field(s, n): float | None for n in (*PHASES, STEP) for s in STATS},
    # the model interface's description (src/model/interface.py row_fields): beyond the RunSpec's shape
    "family": str,  # "cs336" (ours) or "hf" (a transformers model from its config)
    "architecture": str,  # "cs336", or the config's model_type ("llama", "gpt2", "mixtral", ...)
    "num_kv_heads": int,
    "tied_embeddings": bool,
    "num_experts": int,  # 0: dense
    "experts_per_token": int,
    "active_parameters": int,  # per token: the total less the experts a token is not routed to
    "flops_method": str,  # "analytic" (src/model/flops.py) or "counted" (FlopCounterMode on fake tensors)
    "parameters": int,
    "flops_per_step": int,
    # --precision fp8 (src/train/fp8.py): the linears torchao converted, the FLOPs they ran in fp8, and the MFU on
    # the bf16 rows' scale (mfu itself is against the GPU's dense fp8 peak)
    "fp8_linears": list[str],
    "fp8_flops_per_step": int,
    "fp8_flops_fraction": float,
    "mfu_bf16_equivalent": float | None,
    "tokens_per_second": float | None,
    "tflops": float | None,
    "device_peak_tflops": float | None,
    "peak_note": str,
    "mfu": float | None,
    "sol_time": float | None,  # speed-of-light step time from the peaks
    "speed_of_light_pct": float | None,
    "peak_memory_gb": float | None,
    "estimated_memory_bytes": int,
    "estimated_memory": dict,  # src/harness/ranks.py estimated_memory: the one estimate, by part, and its total
    "trace_summary": dict,  # --trace: src/instruments/torch_trace.py
    # --trace, per profiled step (trace_summary.py per_step_fields; with several ranks, rank 0's). Categories are a
    # {category: ms} dict rather than a column each: their names have spaces ("copies and casts"), a dict is one
    # CSV cell of JSON that reads back as the dict (results.py), and a new category leaves the CSV header as it is
    "trace_device": str,  # "cuda": ms are kernel time; "cpu": self CPU time of ops
    "trace_steps": int,  # the profiled steps the figures are averaged over
    "trace_step_ms": float,  # the harness's step time of those steps: categories + idle add up to it
    "trace_ms_per_step": dict,  # {category: ms}, every category of src/instruments/op_categories.py
    "trace_phase_ms_per_step": dict,  # {phase: {category: ms}}, nonzero entries only
    "trace_idle_ms_per_step": float,  # step less busy: on CUDA the GPU waiting for the host to launch work
    "trace_kernels_per_step": float,  # launches (kernels, memcpys, memsets) on CUDA; ops on CPU
    "trace_top_kernels": list[dict],  # [{name, category, calls_per_step, ms_per_step}], trace_summary.py's KEPT largest
    # [{call, op, calls_per_step, ms_per_step}]: runtime calls that wait for the device (CUDA; trace_summary.py)
    "trace_host_waits": list[dict],
    "memory_summary": dict,  # --memory_snapshot: src/instruments/memory.py
    # --parallel (src/harness/ranks.py): the group, every rank's medians, the strategy's analytic memory and bytes
    "world_size": int,
    "tokens_per_second_per_gpu": float | None,
    **{f"rank_median_time_{p}": list[float | None] for p in PHASES},  # None: a rank that did not time it
    **{f"{s}_time_step_across_ranks": float for s in ("min", "median", "max")},
    "slowest_rank": int,
    "rank_status": list[str],
    "rank_peak_memory_bytes": list[int | None],  # None off CUDA
    **{f"comm_bytes_{op}": int for op in ("all_reduce", "all_gather", "reduce_scatter", "broadcast")},
    # --parallel with --trace (src/instruments/overlap.py): per profiled step, averaged over ranks
    "compute_time_s": float,
    "comm_time_s": float,
    "overlap_time_s": float,
    "exposed_comm_time_s": float,
    "overlap_ratio": float | None,
    "overlap_source": str,
    "overlap_per_rank": list[dict],
    "overlap_table": str,
    "env": dict,  # src/harness/environment.py: where it ran
}
Record = TypedDict("Record", FIELDS, total=False)
LIST_FIELDS = tuple(name for name, kind in FIELDS.items() if get_origin(kind) is list)  # JSON text in a CSV cell
# The environment's fields (src/harness/environment.py) are text: versions, a commit, a host, a timestamp. These
# are the exceptions; a CSV reads every other env cell back as the string it was ("13.0" stays "13.0").
ENV_FIELDS: dict[str, Any] = {"gpu_memory_bytes": int}


def conforms(value, kind) -> bool:
    """Whether a value read from JSON has the declared type `kind`, as loosely as arithmetic allows: an int is a
    float, a whole float an int, a bool neither; a list's items are checked; an annotation not known here passes."""
    origin = get_origin(kind)
    if origin in (Union, UnionType):
        return any(conforms(value, k) for k in get_args(kind))
    if kind is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(conforms(v, get_args(kind)[0]) for v in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:  # 5e9 in a JSON line reads as 5000000000.0: a whole number is an int here
        whole = isinstance(value, float) and value.is_integer()
        return (isinstance(value, int) and not isinstance(value, bool)) or whole
    if kind in (str, bool, dict, list):
        return isinstance(value, kind)
    return True


CONFIG_TYPES = {f.name: f.type for f in dataclass_fields(RunSpec)}  # a config entry's (and CSV config column's) type


def row_problem(value) -> str:
    """Why a value read from a results file is not a row, or "" when it is one: a row is an object with a text
    `status` (every writer sets one) whose fields, where present, have the types FIELDS declares (its config's,
    those of RunSpec's fields; its env's, ENV_FIELDS'). Other keys are anyone's: prediction, attention and
    collectives rows carry their own. Readers skip what is not a row, so no report meets `42` or a string where
    a list of step times belongs."""
    if not isinstance(value, dict):
        return json_kind(value)
    if not isinstance(value.get("status"), str):
        return "an object without a text status"
    return fields_problem(value)


def fields_problem(record: dict) -> str:
    """The first field of `record` whose value is not of its declared type, said in words; "" when none. A null
    is a value not recorded (a CSV's empty cell, a column older rows lack) and fits every field."""
    for section, kinds in ((record, FIELDS), (record.get("config") or {}, CONFIG_TYPES),
                           (record.get("env") or {}, ENV_FIELDS)):
        for name, kind in kinds.items():
            if section.get(name) is not None and not conforms(section[name], kind):  # null: not recorded
                where = "" if section is record else ("config " if kinds is CONFIG_TYPES else "env ")
                return f"{where}{name} is {json_kind(section[name])}, not {_words(kind)}"
    return ""


def is_row(value) -> bool:
    """Whether a value read from a results file is a row (see row_problem)."""
    return not row_problem(value)


def json_kind(value) -> str:
    return {dict: "an object", list: "an array", str: "text", type(None): "null", bool: "true or false"}.get(
        type(value), "a number")


def _words(kind) -> str:
    return getattr(kind, "__name__", None) if get_origin(kind) is None else str(kind).replace("typing.", "")


def new_record(spec: RunSpec, status: str = "ok") -> Record:
    """The row of a configuration before anything was measured: its config, a status, no step times yet."""
    return Record(config=spec.to_dict(), status=status, warnings=[], **{f: [] for f in PHASE_FIELDS},
                  compile_time_s=None)


def with_fields(record: Record, fields: dict) -> Record:
    """`record` plus `fields` (what a measurement or an instrument adds): a new row, warnings appended."""
    extra = dict(fields)
    warnings = list(record.get("warnings") or []) + list(extra.pop("warnings", None) or [])
    return Record(**{**record, **extra, "warnings": warnings})


def config_of(record: dict) -> dict:
    return record.get("config") or {}


def world_size_of(record: dict) -> int:
    """How many ranks measured a row: its `world_size` (a multi-process benchmark row's field, a collectives
    row's config), else the configuration's `nproc_per_node`, else 1. Each is looked up in the row, then its
    config: a CSV file keeps fields it does not know as plain columns and reads an absent one back as ""."""
    config = config_of(record)
    for name in ("world_size", "nproc_per_node"):
        for value in (record.get(name), config.get(name)):
            if value not in (None, ""):
                return int(value)
    return 1


def phase_times(record: dict) -> dict[str, list[float]]:
    """Seconds per measured step of each phase ({} entries are empty lists for phases that did not run)."""
    return {p: list(record.get(phase_field(p)) or []) for p in PHASES}


def measured_step_times(record: dict) -> np.ndarray:
    """Seconds per measured step: the sum of the phases that were run (forward-only runs have one)."""
    phases = [np.asarray(t, dtype=float) for t in phase_times(record).values()]
    phases = [p for p in phases if p.size]
    if not phases:
        return np.zeros(0)
    steps = min(p.size for p in phases)  # equal in well-formed records; never index past the shortest
    return np.sum([p[:steps] for p in phases], axis=0)


def counted_phase_times(record: dict) -> dict[str, list[float]]:
    """phase_times from the first step the statistics count (statistics_from_step; every step in older rows)."""
    start = record.get("statistics_from_step") or 0
    return {p: times[start:] for p, times in phase_times(record).items()}


def counted_step_times(record: dict) -> np.ndarray:
    """measured_step_times from the first step the statistics count."""
    return measured_step_times(record)[record.get("statistics_from_step") or 0:]


def warmup_step_times(record: dict) -> np.ndarray:
    return np.asarray(record.get("warmup_time_step") or [], dtype=float)
