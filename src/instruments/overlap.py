"""How much communication hid behind computation, per rank, from the torch.profiler trace each rank wrote.

The computation follows HolisticTraceAnalysis's comm/comp overlap (hta/analyzers/communication_analysis.py):
classify the intervals, merge each category's intervals into disjoint ones, and measure
    compute time        the merged computation intervals' total length
    communication time  the merged communication intervals' total length
    overlapped time     the time both are active (the intersection of the two merged sets)
    exposed comm        communication time - overlapped time: communication nothing was computed under
HTA reports overlapped / communication time as its percentage (`overlap_ratio` here).

What counts as what:
- On CUDA (the trace holds kernels), device intervals, classified by name as HTA 0.5 does: nccl...Kernel
  (ncclKernel_*, ncclDevKernel_*) is communication; memcpy, memset and *Sync* are neither; every other kernel is
  computation.
  A trace with kernels but no NCCL kernel (gloo on CUDA tensors) takes its communication from the host, below.
- On CPU (no kernels), host intervals: communication is every event named gloo:*, nccl:*, c10d::* or
  record_param_comms (gloo's worker threads record the transfer itself as gloo:<op>); computation is every other
  CPU op, minus the communication on its own thread (an autograd node whose hook all-reduces is not computing
  while it waits).
"""

import re
import statistics
from dataclasses import asdict, dataclass

COMMUNICATION_PREFIXES = ("gloo:", "nccl:", "c10d::", "record_param_comms")
HOST_CATEGORIES = ("cpu_op", "user_annotation")
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
COMM_KERNEL = re.compile(r"^nccl.*Kernel")
NOT_COMPUTE_KERNEL = re.compile(r"^nccl.*Kernel|Memcpy|Memset|^dma|Sync")
FIELDS = ("compute_time_s", "comm_time_s", "overlap_time_s", "exposed_comm_time_s")

Interval = tuple[float, float]  # (start, end), any unit; the trace's is microseconds


def merge(intervals) -> list[Interval]:
    """Disjoint, sorted intervals covering the same time; touching ones join, empty ones vanish."""
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def total(merged: list[Interval]) -> float:
    return sum(end - start for start, end in merged)


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Where two merged sets are both active; one pass over both, as they are sorted and disjoint."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """The parts of merged set `a` outside merged set `b`."""
    out, j = [], 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k, cursor = j, start
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                out.append((cursor, b[k][0]))
            cursor = max(cursor, b[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


@dataclass
class Overlap:
    compute_time_s: float
    comm_time_s: float
    overlap_time_s: float
    exposed_comm_time_s: float
    source: str  # "device" (kernels) or "host" (CPU ops), see the module docstring

    @property
    def overlap_ratio(self) -> float | None:
        """HTA's comp_comm_overlap_ratio: the share of communication time with computation running under it."""
        return self.overlap_time_s / self.comm_time_s if self.comm_time_s else None


def overlap_of(compute, comm, seconds_per_unit: float = 1.0, source: str = "host") -> Overlap:
    """The four figures of (unmerged) computation and communication intervals."""
    compute, comm = merge(compute), merge(comm)
    both = total(intersect(compute, comm))
    return Overlap(total(compute) * seconds_per_unit, total(comm) * seconds_per_unit, both * seconds_per_unit,
                   (total(comm) - both) * seconds_per_unit, source)


def is_communication(name: str) -> bool:
    return name.startswith(COMMUNICATION_PREFIXES)


def _span(event: dict) -> Interval:
    start = float(event["ts"])
    return start, start + float(event["dur"])


def classify(trace: dict) -> tuple[list[Interval], list[Interval], str]:
    """(computation, communication, source) intervals of one rank's Chrome trace, in microseconds."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "ts" in e and "dur" in e]
    host_comm = [e for e in events if e.get("cat") in HOST_CATEGORIES and is_communication(e.get("name", ""))]
    kernels = [e for e in events if e.get("cat") in DEVICE_CATEGORIES]
    if kernels:
        comm = [_span(e) for e in kernels if COMM_KERNEL.match(e.get("name", ""))]
        compute = [_span(e) for e in kernels if not NOT_COMPUTE_KERNEL.search(e.get("name", ""))]
        if comm or not host_comm:
            return compute, comm, "device"
        return compute, [_span(e) for e in host_comm], "host"
    by_thread: dict = {}
    for e in events:
        if e.get("cat") == "cpu_op" and not is_communication(e.get("name", "")):
            by_thread.setdefault((e.get("pid"), e.get("tid")), ([], []))[0].append(_span(e))
    for e in host_comm:
        by_thread.setdefault((e.get("pid"), e.get("tid")), ([], []))[1].append(_span(e))
    compute = [piece for ops, comm in by_thread.values() for piece in subtract(merge(ops), merge(comm))]
    return compute, [_span(e) for e in host_comm], "host"


def overlap_from_trace(trace: dict) -> Overlap:
    compute, comm, source = classify(trace)
    return overlap_of(compute, comm, seconds_per_unit=1e-6, source=source)  # Chrome traces count microseconds


def summarise_ranks(per_rank: list[Overlap], steps: int) -> dict:
    """The record's fields: each figure per profiled step, averaged over ranks (a mean keeps compute + exposed
    and overlapped + exposed = communication true of the averages), beside the per-rank lists and HTA's ratio."""
    if not per_rank or steps < 1:
        raise ValueError(f"need at least one rank's trace and one step, got {len(per_rank)} and {steps}")
    fields = {name: statistics.fmean(getattr(o, name) for o in per_rank) / steps for name in FIELDS}
    comm = fields["comm_time_s"]
    return {
        **fields,
        "overlap_ratio": fields["overlap_time_s"] / comm if comm else None,
        "overlap_source": per_rank[0].source,
        "overlap_per_rank": [{name: getattr(o, name) / steps for name in FIELDS} for o in per_rank],
    }


def markdown(per_rank: list[Overlap], steps: int, title: str) -> str:
    ms = 1e3 / steps
    lines = [f"### {title}", "",
             f"Per profiled step ({steps}), from the {per_rank[0].source} timeline of each rank's trace.", "",
             "| rank | compute ms | communication ms | overlapped ms | exposed comm ms | comm hidden |",
             "|---:|---:|---:|---:|---:|---:|"]
    for rank, o in enumerate(per_rank):
        hidden = f"{100 * o.overlap_ratio:.0f}%" if o.overlap_ratio is not None else ""
        lines.append(f"| {rank} | {o.compute_time_s * ms:.2f} | {o.comm_time_s * ms:.2f} | "
                     f"{o.overlap_time_s * ms:.2f} | {o.exposed_comm_time_s * ms:.2f} | {hidden} |")
    return "\n".join(lines) + "\n"


def as_dict(o: Overlap) -> dict:
    return {**asdict(o), "overlap_ratio": o.overlap_ratio}


def overlap_from_files(paths: list[str], steps: int, title: str) -> tuple[dict, str]:
    """The record's fields and the markdown table for one configuration, from its ranks' trace files in rank order."""
    from src.instruments.trace_summary import load_trace

    per_rank = [overlap_from_trace(load_trace(path)) for path in paths]
    return summarise_ranks(per_rank, steps), markdown(per_rank, steps, title)
