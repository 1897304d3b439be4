"""What a tensor-parallel rank computes, and what the split probe measured it costs: shapes, rows, efficiencies.

Shapes (Megatron-LM's layout, Shoeybi et al. 2019 sec. 3; Architecture.split gives the per-rank widths): q, k, v
and the MLP's gate and up (fc1 without a gate) are split column-wise, each rank computing out/t of the outputs;
o and down (fc2) row-wise, each rank reducing in/t of the inputs; the LM head is vocabulary-parallel (out/t);
attention runs at the rank's local heads (KV heads replicated where fewer than t). Each linear y = x W^T, x
(m, k), W (n, k) as nn.Linear stores it, is three GEMMs per step:
    forward      x @ W^T        (m, k) x (k, n)
    grad_input   dy @ W         (m, n) x (n, k)
    grad_weight  dy^T @ x       (n, m) x (m, k)
At t = 1 these are also what FSDP computes once a layer is gathered: FSDP splits storage, not the matmuls.
Norms, RoPE, the activation function and the loss are not probed (without sequence parallelism TP replicates them,
so the probe's efficiency is an upper bound on TP's).

The probe (python -m src.profiling.split_probe) times each distinct GEMM once per degree and writes one row per
(tp, shape), one summary row per degree and, with --overlap, one row per concurrent copy. The efficiency of degree
t is the time a rank would take at a constant rate over the time it measured:
    efficiency(t) = time(1) / t / time(t),   time(t) = layers x block(t) + LM head(t)
so the predictor's compute per rank is single-GPU compute / t / efficiency(t), exactly the old constant-MFU
assumption when efficiency is 1.
"""

import math
from dataclasses import asdict, dataclass, field, fields

from src.model.architecture import Architecture
from src.model.flops import BACKWARD_FLOPS_PER_FORWARD, attention_product_flops

SHAPE, SUMMARY, OVERLAP = "split_shape", "split_summary", "overlap"  # the probe's row kinds
ATTENTION = "attention"
NCCL_LIKE, COPY_ENGINE = "sm_copy", "copy_engine"  # the two concurrent copies --overlap times against compute


@dataclass(frozen=True)
class Gemm:
    """One matrix product of one linear: (m, k) x (k, n), 2 m k n FLOPs."""

    name: str  # the linear: q, k, v, o, gate, up, down, fc1, fc2, head
    op: str  # forward, grad_input or grad_weight
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


@dataclass(frozen=True)
class AttentionShape:
    """SDPA at one rank's heads: q (B, nh, T, hs), k and v (B, nkv, T, hs), causal."""

    batch_size: int
    num_heads: int
    num_kv_heads: int
    seq_len: int
    head_dim: int


def linear_gemms(name: str, tokens: int, in_features: int, out_features: int) -> list[Gemm]:
    """The three GEMMs of y = x W^T on `tokens` rows, W (out, in): forward, the input's and the weight's gradient."""
    m, k, n = tokens, in_features, out_features
    return [Gemm(name, "forward", m, k, n), Gemm(name, "grad_input", m, n, k), Gemm(name, "grad_weight", n, m, k)]


def check_splittable(a: Architecture, tp: int) -> Architecture:
    """The rank's shape at degree tp; ValueError (one line) for an architecture the probe does not model."""
    if a.moe:
        raise ValueError(f"the split probe models dense blocks; this {a.model_type} has {a.num_experts} experts")
    return a.split(tp)


def block_gemms(a: Architecture, tokens: int, tp: int) -> list[Gemm]:
    """Every GEMM one rank runs for one block at degree tp, in the block's order."""
    r = check_splittable(a, tp)
    d = a.d_model
    linears = [("q", d, r.q_width), ("k", d, r.kv_width), ("v", d, r.kv_width), ("o", r.q_width, d)]
    if a.mlp == "gated":
        linears += [("gate", d, r.d_ff), ("up", d, r.d_ff), ("down", r.d_ff, d)]
    else:
        linears += [("fc1", d, r.d_ff), ("fc2", r.d_ff, d)]
    return [g for name, i, o in linears for g in linear_gemms(name, tokens, i, o)]


def head_gemms(a: Architecture, tokens: int, tp: int) -> list[Gemm]:
    """The vocabulary-parallel LM head's GEMMs at degree tp (tied or not, it is a matmul)."""
    return linear_gemms("head", tokens, a.d_model, check_splittable(a, tp).vocab_size)


def attention_shape(a: Architecture, batch_size: int, seq_len: int, tp: int) -> AttentionShape:
    r = check_splittable(a, tp)
    return AttentionShape(batch_size, r.num_heads, r.num_kv_heads, seq_len, r.head_dim)


def attention_flops(a: Architecture, batch_size: int, seq_len: int, tp: int, op: str) -> int:
    """Q K^T and P V at the rank's heads over the full T x T (src/model/flops.py's convention); backward 2x."""
    forward = attention_product_flops(check_splittable(a, tp), batch_size, seq_len)
    return forward if op == "forward" else BACKWARD_FLOPS_PER_FORWARD * forward


def distinct(gemms: list[Gemm]) -> list[tuple[Gemm, list[str]]]:
    """Each distinct (pass, m, k, n) once, with the linears that share it (k and v, gate and up; q and o at t=1
    when the attention width is d_model), in first-seen order: one timing serves them all."""
    seen: dict[tuple, tuple[Gemm, list[str]]] = {}
    for g in gemms:
        seen.setdefault((g.op, g.m, g.k, g.n), (g, []))[1].append(g.name)
    return list(seen.values())


def efficiencies(model_ms: dict[int, float]) -> dict[int, float]:
    """{tp: time(1) / tp / time(tp)} from each degree's per-rank time; needs degree 1."""
    if 1 not in model_ms:
        raise ValueError("split efficiency is relative to tp 1: measure it")
    return {t: model_ms[1] / t / ms for t, ms in sorted(model_ms.items())}


def probe_shape(a: Architecture) -> Architecture:
    """What a probe row must share with a workload: every field but the attention kernel and the position table."""
    return a.with_(attention="sdpa", max_positions=1)


# --------------------------------------------------------------------------------------------------- the rows
@dataclass(frozen=True)
class ProbeConfig:
    """The `config` entry every probe row carries: what was measured, on what."""

    model: str
    architecture: dict  # asdict(Architecture)
    batch_size: int
    context_length: int
    dtype: str
    device: str
    warmup_ms: float
    rep_ms: float

    def shape(self) -> Architecture:
        return probe_shape(Architecture(**self.architecture))


@dataclass(frozen=True)
class ShapeTiming:
    """kind split_shape: one distinct GEMM (or attention pass) at one degree, and how many of it one rank runs."""

    tp: int
    part: str  # "block" (counted once per layer) or "head"
    names: list[str]  # the linears sharing this shape, or ["attention"]
    op: str  # forward, grad_input, grad_weight; attention: forward or backward
    m: int  # GEMM (m, k) x (k, n); attention: 0 (its shape is in `attention`)
    k: int
    n: int
    attention: dict | None  # asdict(AttentionShape) for attention rows
    count: int  # len(names): instances per part
    flops: int  # of one instance
    median_ms: float
    p20_ms: float
    p80_ms: float
    tflops: float


@dataclass(frozen=True)
class SplitSummary:
    """kind split_summary: one degree's per-rank times and its efficiency against degree 1."""

    tp: int
    block_ms: float  # one block: every GEMM of it and attention, forward and backward
    head_ms: float
    model_ms: float  # layers x block + head: the matmuls of one step on one rank
    block_efficiency: float
    efficiency: float  # of model_ms: what the predictor divides by


@dataclass(frozen=True)
class OverlapTiming:
    """kind overlap: a compute-bound bf16 GEMM loop alone and with a concurrent copy on another stream."""

    concurrent: str  # sm_copy (a copy kernel on CTAs, as NCCL's kernels) or copy_engine (pinned host <-> device)
    gemm_size: int  # (n, n) x (n, n)
    gemms: int  # in the timed loop
    copy_bytes: int  # per copy call
    ctas: int  # sm_copy's programs; 0 for the copy engine
    alone_ms: float  # median over repeats
    with_copy_ms: float
    slowdown: float  # with_copy_ms / alone_ms
    copy_busy_ms: float  # the side stream's time: above with_copy_ms, the copy spanned the whole loop
    repeats: int


BODIES = {SHAPE: ShapeTiming, SUMMARY: SplitSummary, OVERLAP: OverlapTiming}


def probe_record(kind: str, config: ProbeConfig, body, env: dict) -> dict:
    """One row: {"kind", "config", "status", body's fields, "env"}. The one writer of the schema above."""
    if not isinstance(body, BODIES[kind]):
        raise TypeError(f"a {kind} row holds a {BODIES[kind].__name__}")
    return {"kind": kind, "config": asdict(config), "status": "ok", **asdict(body), "env": env}


def read_body(record: dict):
    """The typed body of a probe row (ValueError for a row of another kind or missing a field)."""
    body = BODIES.get(record.get("kind"))
    if body is None:
        raise ValueError(f"not a probe row: kind {record.get('kind')!r}")
    missing = [f.name for f in fields(body) if f.name not in record]
    if missing:
        raise ValueError(f"{record['kind']} row lacks {', '.join(missing)}")
    return body(**{f.name: record[f.name] for f in fields(body)})


def read_config(record: dict) -> ProbeConfig:
    c = record.get("config") or {}
    missing = [f.name for f in fields(ProbeConfig) if f.name not in c]
    if missing:
        raise ValueError(f"probe row config lacks {', '.join(missing)}")
    return ProbeConfig(**{f.name: c[f.name] for f in fields(ProbeConfig)})


# ----------------------------------------------------------------------------------- what the predictor reads
@dataclass(frozen=True)
class SplitProbe:
    """The probe's findings for one workload: efficiency per measured degree and the overlap slowdown.

    efficiency: {tp: efficiency}, degree 1 included (1.0); empty when the file had overlap rows only.
    slowdown: compute time with an NCCL-like (SM-using) copy beside it over alone; None when not measured.
    copy_engine_slowdown: the same with a copy-engine copy (reported; NCCL's collectives are kernels).
    """

    efficiency: dict[int, float] = field(default_factory=dict)
    slowdown: float | None = None
    copy_engine_slowdown: float | None = None
    source: str = ""

    def efficiency_at(self, tp: int) -> tuple[float, str]:
        """(efficiency, how): measured; between two measured degrees linear in log2(tp) ("interpolated ...");
        ValueError outside the measured range (the predictor does not extrapolate a rate)."""
        if tp == 1:
            return 1.0, "tp 1"
        if tp in self.efficiency:
            return self.efficiency[tp], f"tp {tp} measured"
        below = [t for t in self.efficiency if t < tp]
        above = [t for t in self.efficiency if t > tp]
        if not above or not below:
            measured = ", ".join(map(str, sorted(self.efficiency))) or "none"
            raise ValueError(f"tp {tp} is outside the split probe's degrees ({measured}) in {self.source}: "
                             f"probe it (--tp {tp})")
        lo, hi = max(below), min(above)
        w = (math.log2(tp) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
        value = self.efficiency[lo] + w * (self.efficiency[hi] - self.efficiency[lo])
        return value, f"tp {tp} interpolated between tp {lo} and {hi}"
