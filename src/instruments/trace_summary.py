"""Where a profiled step's time went, read from the Chrome trace torch.profiler wrote: by category, by phase, top kernels.

Busy time is GPU kernel (and memcpy/memset) time on CUDA and the self CPU time of ops on CPU; idle is the time
the harness measured minus busy time: on a GPU, time the device waited for the host to launch work
(launch-bound); on CPU, time outside any op (Python, the framework, the profiler itself).

Phase of an op, without any help from the runner: inside `Optimizer.step#...` (the range every torch.optim
optimizer records) or a GradScaler op -> optimizer; inside `autograd::engine::evaluate_function: ...` (every
autograd node) -> backward; anything else -> forward, the loss included, as the harness times it.
Category: see op_categories.py. Backward nodes carry the sequence number of the forward op that made them, so a
node inherits that op's module context: RMSNorm's backward counts as normalisation, as its forward does.
A kernel inherits the phase and category of the op that launched it, found through the runtime call
(cudaLaunchKernel, cuLaunchKernel) carrying the kernel's correlation id; a kernel with no such op is sorted by
its own name and counted in forward. GradScaler's .item() check and its loss scaling (fp16) are not inside any
of these ranges and count as forward, though the harness times them in the optimizer and backward phases.

Host waits (CUDA): the runtime calls that block the host until the device catches up (a stream, event or device
synchronize, a blocking copy or a copy to host, cudaFree/cudaMalloc), by call and by the op that made them. Each
one drains the launch queue: the GPU then idles for as long as the host takes to queue the next work, so a step
with a sync per layer is launch-bound whatever its kernels. The harness's own end-of-step wait (no op) is listed
too, so a healthy step shows one wait per step and nothing else.

The row carries the same figures per profiled step (per_step_fields: ms by category and by phase x category, idle,
launches per step, the top kernels, the host waits), which the A/B report sets side by side for two rows.

Why the JSON file and not prof.events(): Kineto's trace format has stayed the same across the torch versions we
run on (2.11 to 2.15), while the in-memory FunctionEvent API has not (cuda_time renamed device_time, how
kernels link to ops). And the table is then a reading of the very file the user opens.
"""

import gzip
import json
from dataclasses import asdict, dataclass, field

from src.instruments.module_ranges import MODULE_RANGE_PREFIX
from src.instruments.op_categories import (ATTENTION, CATEGORIES, ELEMENTWISE, NORMALISATION, OPTIMIZER, OTHER,
                                         enclosing_category, is_attention_module, is_norm_module, kernel_category,
                                         op_category)
from src.spec import PHASES
STEP_RANGE_PREFIX = "measured step "
HOST_EVENTS = ("cpu_op", "user_annotation", "cuda_runtime", "cuda_driver")
DEVICE_EVENTS = ("kernel", "gpu_memcpy", "gpu_memset")
AGREEMENT = 0.10  # a trace whose steps span more or less than measured +-10% did not see what the harness timed
TOP = 10  # kernels (ops) in the printed table
KEPT = 15  # kept in the summary and the row: an A/B report lists those that differ, and a 10th of one side may be
# a 13th of the other
# Runtime calls that wait for the device (cudaMemcpyAsync only where its copy goes to the host, below)
BLOCKING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                  "cudaFree", "cudaMalloc", "cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize",
                  "cuMemcpyDtoH", "cuMemFree", "cuMemAlloc")
NO_OP = "(no op)"  # a wait outside every op: the harness's own end-of-step synchronize
_NESTING_SLACK_US = 0.01  # ts and dur are rounded to the nanosecond independently


@dataclass
class _Node:
    name: str
    start: float
    end: float
    is_op: bool
    phase: str = "forward"
    modules: tuple = ()
    enclosing: str | None = None
    category: str | None = None
    children_us: float = 0.0


@dataclass
class TraceSummary:
    device: str  # "cuda": busy = kernel time; "cpu": busy = self CPU time of ops
    steps: int
    measured_s: float
    span_s: float  # wall time of the profiled steps in the trace (the `measured step i` ranges)
    by_category: dict = field(default_factory=dict)
    by_phase: dict = field(default_factory=dict)
    measured_by_phase: dict = field(default_factory=dict)
    by_phase_category: dict = field(default_factory=dict)  # {phase: {category: seconds}}
    top: list = field(default_factory=list)  # [name, category, calls, seconds], the KEPT largest
    host_waits: list = field(default_factory=list)  # [runtime call, op that made it, calls, seconds], largest first
    graph_replayed_s: float = 0.0  # kernels launched by a CUDA graph replay: no op launched them
    kernels: int = 0  # device events (kernels, memcpys, memsets: one launch each) on CUDA; ops on CPU

    @property
    def busy_s(self) -> float:
        return sum(self.by_category.values())

    @property
    def idle_s(self) -> float:
        return self.measured_s - self.busy_s

    def to_dict(self) -> dict:
        return {**asdict(self), "busy_s": self.busy_s, "idle_s": self.idle_s}

    def per_step_fields(self) -> dict:
        """The row's trace fields (src/harness/record.py FIELDS): milliseconds per profiled step by category, by
        phase x category, idle and the harness's step; launches per step; the KEPT top kernels per step."""
        if not self.steps:
            return {}
        ms = 1e3 / self.steps
        return {
            "trace_device": self.device,
            "trace_steps": self.steps,
            "trace_step_ms": self.measured_s * ms,
            "trace_ms_per_step": {name: self.by_category.get(name, 0.0) * ms for name in CATEGORIES},
            "trace_phase_ms_per_step": {phase: {name: seconds * ms for name, seconds in by.items() if seconds}
                                        for phase, by in self.by_phase_category.items() if any(by.values())},
            "trace_idle_ms_per_step": self.idle_s * ms,
            "trace_kernels_per_step": self.kernels / self.steps,
            "trace_top_kernels": [{"name": name, "category": category, "calls_per_step": calls / self.steps,
                                   "ms_per_step": seconds * ms} for name, category, calls, seconds in self.top],
            "trace_host_waits": [{"call": call, "op": op, "calls_per_step": calls / self.steps,
                                  "ms_per_step": seconds * ms} for call, op, calls, seconds in self.host_waits],
        }

    def warnings(self) -> list[str]:
        notes = []
        if self.measured_s and abs(self.span_s - self.measured_s) > AGREEMENT * self.measured_s:
            notes.append(f"the trace's steps span {self.span_s * 1e3:.1f} ms but the harness measured "
                         f"{self.measured_s * 1e3:.1f} ms: the table may not describe the timed work")
        if self.measured_s and self.busy_s > (1 + AGREEMENT) * self.measured_s:
            notes.append(f"busy time {self.busy_s * 1e3:.1f} ms exceeds the measured {self.measured_s * 1e3:.1f} ms")
        if self.graph_replayed_s:
            notes.append(f"{self.graph_replayed_s * 1e3:.1f} ms of kernel time was replayed from CUDA graphs: no op "
                         "launched those kernels, so they count in forward and are sorted by their names alone "
                         "(the phase table does not split them)")
        return notes

    def markdown(self, title: str) -> str:
        ms = 1e3
        share = (lambda s: f"{100 * s / self.measured_s:.1f}%") if self.measured_s else (lambda s: "")
        busy_what = "GPU kernel time" if self.device == "cuda" else "self CPU time of ops"
        idle_what = ("idle: GPU waiting for the host (launch-bound)" if self.device == "cuda"
                     else "idle: outside any op (Python, framework, profiler)")
        lines = [f"### {title}", "",
                 f"{self.steps} profiled step(s): measured {self.measured_s * ms:.2f} ms by the harness, "
                 f"{self.span_s * ms:.2f} ms in the trace; busy ({busy_what}) {self.busy_s * ms:.2f} ms "
                 f"= {share(self.busy_s)} of measured.", "",
                 "| category | ms | % of measured |", "|---|---:|---:|"]
        for name in CATEGORIES:
            seconds = self.by_category.get(name, 0.0)
            lines.append(f"| {name} | {seconds * ms:.2f} | {share(seconds)} |")
        lines += [f"| {idle_what} | {self.idle_s * ms:.2f} | {share(self.idle_s)} |",
                  f"| **total = measured** | **{self.measured_s * ms:.2f}** | |", "",
                  "| phase | busy ms | measured ms | busy / measured |", "|---|---:|---:|---:|"]
        for name in PHASES:
            busy, measured = self.by_phase.get(name, 0.0), self.measured_by_phase.get(name, 0.0)
            if busy or measured:
                ratio = f"{100 * busy / measured:.0f}%" if measured else ""
                lines.append(f"| {name} | {busy * ms:.2f} | {measured * ms:.2f} | {ratio} |")
        kind = "kernel" if self.device == "cuda" else "op (self time)"
        lines += ["", f"| top {kind} | category | calls | ms | % of measured |", "|---|---|---:|---:|---:|"]
        for name, category, calls, seconds in self.top[:TOP]:
            shown = name if len(name) <= 90 else name[:87] + "..."
            lines.append(f"| `{shown}` | {category} | {calls} | {seconds * ms:.2f} | {share(seconds)} |")
        if self.host_waits:
            lines += ["", "| host wait (the GPU idles until the host queues more) | made by | calls | ms |",
                      "|---|---|---:|---:|"]
            lines += [f"| `{call}` | `{op}` | {calls} | {seconds * ms:.2f} |"
                      for call, op, calls, seconds in self.host_waits[:TOP]]
        lines += [f"\nwarning: {note}" for note in self.warnings()]
        return "\n".join(lines) + "\n"


def load_trace(path: str) -> dict:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def _host_tree(events: list) -> tuple[list, dict, set, list]:
    """Nest host events per thread by time and give each its phase, module context and category.

    Returns (nodes in start order, {runtime correlation id: node of the op that made the call}, the correlation
    ids of CUDA graph launches, whose kernels were recorded at capture and have no op of their own, and every
    runtime call as (name, node of the op that made it or None, seconds, correlation id or None)).
    """
    ordered = sorted(events, key=lambda e: (e["ts"], -e["dur"]))
    stacks: dict[tuple, list] = {}
    forward_modules: dict[int, tuple] = {}  # forward op's sequence number -> its module context
    by_external_id: dict[int, _Node] = {}  # Kineto's link from a runtime call to its op, where nesting fails
    nodes, launches, graph_launches, calls = [], {}, set(), []
    for event in ordered:
        start, end = float(event["ts"]), float(event["ts"]) + float(event["dur"])
        name, cat, args = event.get("name", ""), event.get("cat"), event.get("args") or {}
        runtime = cat in ("cuda_runtime", "cuda_driver")
        # A runtime call belongs to the op it starts in: CUPTI's clock may put its end a hair past the op's.
        inner_end = start if runtime else end
        stack = stacks.setdefault((event.get("pid"), event.get("tid")), [])
        while stack and not (start >= stack[-1].start and inner_end <= stack[-1].end + _NESTING_SLACK_US):
            stack.pop()
        parent = stack[-1] if stack else None
        if runtime:
            if parent is None or not parent.is_op:
                parent = by_external_id.get(args.get("External id"), parent)
            if "correlation" in args:
                launches[args["correlation"]] = parent
                if "GraphLaunch" in name:  # cudaGraphLaunch, cuGraphLaunch
                    graph_launches.add(args["correlation"])
            calls.append((name, parent if parent is not None and parent.is_op else None, (end - start) / 1e6,
                          args.get("correlation")))
            continue  # a leaf: nothing nests in it, and its time is the op's, not device time
        node = _Node(name, start, end, is_op=cat == "cpu_op")
        if parent is not None:
            parent.children_us += end - start
            node.phase, node.modules, node.enclosing = parent.phase, parent.modules, parent.enclosing
        sequence = args.get("Sequence number")
        if name.startswith("autograd::engine::evaluate_function"):
            node.phase = "backward"
            node.modules = forward_modules.get(sequence, ())
        elif node.is_op and sequence is not None and node.phase == "forward" and not args.get("Fwd thread id"):
            forward_modules[sequence] = node.modules  # the last op holding a number is the one that made the node
        if name.startswith(MODULE_RANGE_PREFIX):
            node.modules = node.modules + (name[len(MODULE_RANGE_PREFIX):],)
        if node.enclosing is None:
            node.enclosing = (enclosing_category(name) if node.is_op or name.startswith("Optimizer.") else None) or (
                NORMALISATION if any(is_norm_module(m) for m in node.modules) else None)
        if node.enclosing == OPTIMIZER:
            node.phase = "optimizer"
        node.category = _category(node, parent)
        if args.get("External id"):
            by_external_id[args["External id"]] = node
        stack.append(node)
        nodes.append(node)
    return nodes, launches, graph_launches, calls


def _host_waits(calls: list, to_host: set) -> list:
    """[call, op, calls, seconds] for the runtime calls that wait for the device, largest first; to_host: the
    correlation ids of copies whose destination is host memory (a cudaMemcpyAsync to the host waits too)."""
    waits: dict[tuple, list] = {}
    for name, op, seconds, correlation in calls:
        if name in BLOCKING_CALLS or (name.startswith("cudaMemcpy") and correlation in to_host):
            entry = waits.setdefault((name, op.name if op is not None else NO_OP), [0, 0.0])
            entry[0] += 1
            entry[1] += seconds
    return sorted(([*key, *entry] for key, entry in waits.items()), key=lambda row: -row[3])


def _category(node: _Node, parent: _Node | None) -> str | None:
    if node.enclosing:
        return node.enclosing
    in_attention = bool(node.modules) and is_attention_module(node.modules[-1])
    own = op_category(node.name) if node.is_op else None
    if own is None:
        if parent is not None and parent.category is not None:
            return parent.category
        if not node.is_op:
            return None  # a range (module, step) has no category; its ops have
        return ATTENTION if in_attention else OTHER
    if own in (ELEMENTWISE, OTHER) and in_attention:
        return ATTENTION  # masking, scaling, the causal mask: attention's own work besides matmul and softmax
    return own


def _kernel_category(name: str, launcher: _Node | None) -> str:
    """The launching op's category where it has one (enclosing ones first), else the kernel's own name's."""
    if launcher is not None and launcher.enclosing:
        return launcher.enclosing
    if launcher is not None and launcher.category not in (None, OTHER):
        return launcher.category
    return kernel_category(name)


def summarise_trace(trace: dict, device: str, measured_by_phase: dict, steps: int) -> TraceSummary:
    """Busy time by category and phase, and the top ops or kernels, for `steps` steps the harness measured."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e and "ts" in e]
    host = [e for e in events if e.get("cat") in HOST_EVENTS]
    nodes, launches, graph_launches, calls = _host_tree(host)
    graph_replayed_s = 0.0
    by_category = dict.fromkeys(CATEGORIES, 0.0)
    by_phase = dict.fromkeys(PHASES, 0.0)
    by_phase_category = {phase: dict.fromkeys(CATEGORIES, 0.0) for phase in PHASES}
    top: dict[tuple, list] = {}  # (name, category) -> [calls, seconds]: aten::fill_ zeroes grads and norms alike

    def count(name, category, phase, seconds):
        by_category[category] += seconds
        by_phase[phase] += seconds
        by_phase_category[phase][category] += seconds
        entry = top.setdefault((name, category), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    if device == "cuda":
        for event in events:
            if event.get("cat") in DEVICE_EVENTS:
                correlation = (event.get("args") or {}).get("correlation")
                if correlation in graph_launches:
                    graph_replayed_s += float(event["dur"]) / 1e6
                    correlation = None  # the graph launch is not the op that made the kernel
                launcher = launches.get(correlation)
                count(event.get("name", ""), _kernel_category(event.get("name", ""), launcher),
                      launcher.phase if launcher is not None else "forward", float(event["dur"]) / 1e6)
    else:
        for node in nodes:
            if node.is_op:
                self_us = max(node.end - node.start - node.children_us, 0.0)
                count(node.name, node.category or OTHER, node.phase, self_us / 1e6)
    span_s = sum(n.end - n.start for n in nodes if n.name.startswith(STEP_RANGE_PREFIX)) / 1e6
    to_host = {(e.get("args") or {}).get("correlation") for e in events
               if e.get("cat") == "gpu_memcpy" and "DtoH" in e.get("name", "")} - {None}  # only linked copies
    ranked = sorted(([*key, *entry] for key, entry in top.items()), key=lambda row: -row[3])
    return TraceSummary(device=device, steps=steps, measured_s=sum(measured_by_phase.values()), span_s=span_s,
                        by_category=by_category, by_phase=by_phase, measured_by_phase=dict(measured_by_phase),
                        by_phase_category=by_phase_category, top=ranked[:KEPT], graph_replayed_s=graph_replayed_s,
                        host_waits=_host_waits(calls, to_host) if device == "cuda" else [],
                        kernels=sum(calls for _, _, calls, _ in ranked))

