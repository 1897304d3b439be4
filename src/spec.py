"""One benchmark configuration: every option of a single run, validated here, as the sweep hands it to a runner.

RunSpec is the boundary: a RunSpec that exists is one the runner can attempt. `__post_init__` raises ValueError
"<field>: <problem>" for a bad value or a combination that cannot run (the command turns it into its one-line
usage error, exit 2); facts derived from several fields (`compiled`, `profiled_steps`, `label`, `artifact_name`)
are worked out here once. Checks that need the live machine (is there a GPU, is transformers installed) stay in
the command, which runs in the parent process and never touches the GPU (see src/profiling/benchmark.py).
A new option is one field here: the results file's config columns are this dataclass's fields.
"""

import functools
import re
from dataclasses import asdict, dataclass, fields

from src.model.config import ModelConfig

MODES = ("forward", "forward_backward", "train")
PHASES = ("forward", "backward", "sync", "optimizer")  # a step's timed phases; sync: --parallel's gradient-sync wait
PRECISIONS = ("fp32", "bf16", "fp16", "fp8")  # fp8: torchao's float8 linears, the rest under bf16 autocast
LOW_PRECISIONS = ("bf16", "fp16", "fp8")  # autocast runs the step's activations in 2 bytes
FP8_RECIPES = ("tensorwise", "rowwise", "rowwise_with_gw_hp")  # torchao's Float8LinearRecipeName values
RECIPES = ("fast",)
# What torch.compile compiles: "model" (the model with its loss, one graph: the fast recipe's 2.7B step, 180.3 ms on
# an H200) or "blocks" (each transformer block on its own, as torchtitan does: the blocks share one graph, so compile
# time stops growing with depth; the fp8 2.7B step took 166 s to compile whole). "" when nothing is compiled.
COMPILE_SCOPES = ("model", "blocks")
# torch.compile's mode. "reduce-overhead" replays each compiled graph as a CUDA graph (inductor's CUDA graph trees):
# no per-kernel launches left on the host. The fast recipe picks it for our model in fp8 (float8 linears add ~69
# launches a block: 4,072 kernels a 2.7B step against 1,861 in bf16). Blocks compiled alone, H200, 2026-12-04, fp8
# step in one run small 38.7 -> 14.7 ms, medium 92.9 -> 32.5, large 120.0 -> 64.1, xl 185.5 -> 116.5; 2.7B 155.2 ->
# 153.5 (two calls). bf16 gains less (large 66.1 -> 64.0, xl 126.4 -> 124.7), so the recipe leaves bf16 alone.
# "max-autotune-no-cudagraphs" searches Triton configs for every matmul and reduction (long compiles).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
GRAPHED_COMPILE_MODE = "reduce-overhead"
COMPILE_MODE_BEFORE_THE_FIELD = "default"  # what a compiled row written before compile_mode existed ran
BACKENDS = ("ours", "hf_llama", "torchtitan")
TIMERS = ("events", "sync")  # see src/harness/timing.py
DEVICES = ("cpu", "cuda")
ISOLATIONS = ("none", "process")
# what the fast recipe accepts: not the naive softmax(QK^T)V
FUSED_ATTENTION = ("sdpa", "cudnn", "flash", "flash_pytorch")
# The one strategy registry, read by this spec, the cost model (src/predict/cost.py) and the predictor:
# name -> how it divides the work. "ddp": replicas, gradients all-reduced; "zero1": replicas with the optimizer
# state sharded; "fsdp": parameters, gradients and state sharded; "tp": tensor parallelism in groups of tp_size
# ranks, data-parallel replicas across the groups; "fsdp_tp": TP inside, FSDP2 across (src/distributed/
# tensor_parallel.py).
STRATEGIES = {
    "none": "single", "ddp_naive": "ddp", "ddp_flat": "ddp", "ddp_overlap": "ddp", "ddp_bucketed": "ddp",
    "zero1": "zero1", "fsdp": "fsdp", "torch_ddp": "ddp", "torch_zero1": "zero1", "fsdp2": "fsdp",
    "tp": "tp", "fsdp_tp": "fsdp_tp",
}
TENSOR_PARALLEL = tuple(name for name, kind in STRATEGIES.items() if kind in ("tp", "fsdp_tp"))  # take --tp_size
# --parallel: none (one process), our strategies (src/distributed), PyTorch's engines (torch_ddp, torch_zero1,
# fsdp2), tensor parallelism on DTensor (tp, fsdp_tp)
PARALLEL = tuple(STRATEGIES)
DIST_BACKENDS = ("", "nccl", "gloo")  # "": nccl on CUDA, gloo on CPU
# strategies whose optimizer is sharded (it wraps torch's default AdamW)
SHARDED_OPTIMIZERS = tuple(name for name, kind in STRATEGIES.items() if kind == "zero1")
# What a strategy cannot run, and why: (strategies, the option, the reason), checked in RunSpec.__post_init__.
# "compile" is --compile or the fast recipe, which compiles; under a strategy the recipe is bf16 autocast, fused
# attention, torch.compile and fused AdamW (no CUDA graphs, no bf16 weights: src/train/step.py).
PARALLEL_REFUSALS = (
    (("fsdp",), "compile", "our FSDP gathers weights in forward wrappers and saved-tensor hooks, which "
                           "torch.compile does not trace"),
    (("fsdp2",), "fp16", "GradScaler over fully_shard's DTensor gradients is not wired up; use bf16"),
    (("torch_ddp", "torch_zero1"), "compile with bucket_mb below 1",
     "DDPOptimizer asserts that DDP's 1 MiB first bucket is no larger than the others (torch 2.11)"),
    (PARALLEL[1:], "memory_snapshot", "allocator snapshots are not yet written per rank"),
    (("fsdp",), "activation_checkpointing", "recomputing a block would re-enter our FSDP's gathers and saved-tensor "
                                            "hooks; not built or tested"),
    (PARALLEL[1:], "optimizer ours", "bf16 weights with fp32 masters in the optimizer are single-process"),
    (SHARDED_OPTIMIZERS, "optimizer fused", "the sharded optimizers wrap torch's default AdamW"),
    (PARALLEL[1:], "optimizer in_backward or overlap",
     "every strategy synchronises gradients after the hook that steps them"),
    (TENSOR_PARALLEL, "compile", "torch.compile of DTensor layers with our replicated-input hooks is not built or "
                                 "tested"),
    (TENSOR_PARALLEL, "fp16", "GradScaler over DTensor gradients is not wired up; use bf16"),
    (TENSOR_PARALLEL, "fp8", "torchao's float8 linears under DTensor sharding are not built or tested"),
    (TENSOR_PARALLEL, "activation_checkpointing", "recomputing a block with DTensor layers is not built or tested"),
    (TENSOR_PARALLEL, "optimizer fused", "fused AdamW over DTensor parameters is not tested; use default"),
)
# AdamW: torch's default (foreach, what plain user code gets), torch's fused=True, or ours (src/kernels/
# master_adamw.py: bf16 weights with fp32 masters; CUDA and bf16 only). "" = the recipe's choice (see
# src/train/step.py chosen_optimizer), torch's default without a recipe.
# in_backward: AdamW run inside the backward as each gradient is ready (src/train/optimizer_in_backward.py);
# overlap: each block's AdamW on a side CUDA stream once its gradients are ready (src/train/optimizer_overlap.py)
OPTIMIZERS = ("default", "fused", "ours", "in_backward", "overlap")
HOOKED_OPTIMIZERS = ("in_backward", "overlap")  # stepped from gradient hooks inside backward: refused alike
MIN_STATISTICS_STEPS = 3  # a row's statistics leave the profiled steps out only if this many steps remain


def checkpoint_group(activation_checkpointing: str) -> int:
    """'none' -> 0; 'blocks:N' -> N, the number of consecutive blocks recomputed together (N >= 1)."""
    if activation_checkpointing == "none":
        return 0
    kind, _, count = str(activation_checkpointing).partition(":")
    if kind == "blocks" and count.isdigit() and int(count) >= 1:
        return int(count)
    raise ValueError(f"activation_checkpointing: must be none or blocks:N with N >= 1, got {activation_checkpointing!r}")


@dataclass(frozen=True)
class RunSpec:
    size: str  # the model's name: a preset, "custom", or the name of a Hugging Face config (see `model`)
    d_model: int
    d_ff: int
    num_heads: int
    num_layers: int
    vocab_size: int = 10_000
    context_length: int = 128
    batch_size: int = 4
    warmup_steps: int = 5
    benchmark_steps: int = 10
    mode: str = "forward_backward"
    precision: str = "fp32"
    attention: str = "naive"
    compile: bool = False  # True for every fast-recipe row: the recipe compiles, and its rows say so
    recipe: str = ""  # "" or "fast" (see src/train/step.py)
    backend: str = "ours"  # or "hf_llama" / "torchtitan": transformers' / torchtitan's Llama of the same shape
    timer: str = "sync"
    device: str = "cpu"
    seed: int = 0
    isolate: str = "none"
    nvtx: bool = False
    peak_tflops: float | None = None
    trace: str = ""  # directory for torch.profiler traces, "" = off
    memory_snapshot: str = ""  # path prefix for allocator snapshots, "" = off
    profile_steps: int = 0  # 0 = all measured steps inside the profiler range
    activation_checkpointing: str = "none"  # or "blocks:N": recompute groups of N blocks in backward
    optimizer: str = ""  # one of OPTIMIZERS, or "" for the recipe's choice (torch's default without a recipe)
    parallel: str = "none"  # see PARALLEL
    nproc_per_node: int = 1  # ranks on this host, launched through torchrun by the sweep
    bucket_mb: float = 25.0  # ddp_bucketed's bucket size (MiB)
    dist_backend: str = ""  # see DIST_BACKENDS
    fp8_recipe: str = ""  # with precision fp8: one of FP8_RECIPES ("" = tensorwise, torchao's default)
    collective_timeout_s: float = 0.0  # a rank's longest wait on its peers; 0 = estimated (harness/dist_worker.py)
    # The model beyond our presets: a config shipped under configs/ or a path to a config.json (the hf family;
    # d_model .. num_layers then only describe it, read from the config); "" is our model (cs336) of the fields.
    model: str = ""
    num_kv_heads: int = 0  # ours: grouped-query attention's k/v heads; 0 = num_heads (the reference)
    tie_embeddings: bool = False  # ours: the LM head reuses the token embedding (the reference: untied)
    # tp / fsdp_tp: ranks in a tensor-parallel group (consecutive ranks); the nproc_per_node / tp_size groups are
    # data-parallel replicas (tp) or FSDP2's shards (fsdp_tp). 0: tp over all ranks (tp), or not tensor parallel.
    tp_size: int = 0
    compile_scope: str = ""  # one of COMPILE_SCOPES when compiled ("" = model; fsdp2 compiles blocks), else ""
    compile_mode: str = ""  # one of COMPILE_MODES when compiled ("" = the recipe's choice, else default), else ""

    @property
    def distributed_backend(self) -> str:
        return self.dist_backend or ("nccl" if self.device == "cuda" else "gloo")

    def __post_init__(self):
        if self.precision == "fp8" and not self.fp8_recipe:  # frozen: normalised so the row tells the truth
            object.__setattr__(self, "fp8_recipe", FP8_RECIPES[0])
        if self.parallel == "tp" and self.tp_size == 0:
            object.__setattr__(self, "tp_size", self.nproc_per_node)
        _check_choices(self)
        _check_numbers(self)
        _check_model(self)
        _check_combinations(self)
        _check_memory_and_optimizer(self)
        _check_parallel(self)
        if self.recipe == "fast" and not self.compile:
            object.__setattr__(self, "compile", True)  # frozen: the normalisations, so the row tells the truth
        if self.compiled and not self.compile_scope:
            object.__setattr__(self, "compile_scope", "blocks" if self.parallel == "fsdp2" else "model")
        if self.compiled and not self.compile_mode:
            object.__setattr__(self, "compile_mode", recipe_compile_mode(self))

    def model_config(self) -> ModelConfig:
        """Our model's config of this shape (the cs336 family, and the shape --backend hf_llama copies)."""
        return ModelConfig(d_model=self.d_model, d_ff=self.d_ff, num_layers=self.num_layers, num_heads=self.num_heads,
                           vocab_size=self.vocab_size, context_length=self.context_length, attention=self.attention,
                           num_kv_heads=self.num_kv_heads, tie_embeddings=self.tie_embeddings)

    def model_spec(self):
        """The model interface of this configuration (src/model/interface.py): what every layer above asks."""
        if self.model:  # vocab_size and num_layers replace the config's where they differ (--num_layers 4)
            return _hf_model(self.model, self.vocab_size, self.num_layers)
        return _model_spec(self.backend, self.size, self.model_config())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        if not known.get("compile_mode"):  # a row from before the field: not the recipe's choice of today
            known["compile_mode"] = compile_mode_before_the_field(known) or ""
        return cls(**known)

    @property
    def data_parallel_size(self) -> int:
        """Ranks (of this host) that see different batches: all of them, but for tensor parallelism one per group."""
        return self.nproc_per_node // self.tp_size if self.tp_size else self.nproc_per_node

    @property
    def compiled(self) -> bool:
        """Whether the step runs under torch.compile: --compile, or the fast recipe (which compiles)."""
        return self.compile or self.recipe == "fast"

    @property
    def compile_steps(self) -> int:
        """Steps timed as compilation, apart from the warm-up: the first step of a compiled run, and in reduce-overhead
        mode the second too, when inductor records its CUDA graphs (2.7B fp8, H200, 2026-12-04: 2.6 s, against
        152-154 ms for the steps after it)."""
        return (2 if self.replays_compiled_graphs else 1) if self.compiled else 0

    @property
    def replays_compiled_graphs(self) -> bool:
        """Whether inductor replays the compiled graphs as CUDA graphs (compile mode reduce-overhead)."""
        return self.compile_mode == GRAPHED_COMPILE_MODE

    @property
    def checkpoint_group(self) -> int:
        return checkpoint_group(self.activation_checkpointing)

    @property
    def profiled_steps(self) -> int:
        """Measured steps inside the profilers' range: the first profile_steps, or all of them."""
        return self.profile_steps or self.benchmark_steps

    @property
    def statistics_from_step(self) -> int:
        """The first measured step a row's statistics count (median, mean, tokens/s, MFU, the A/B verdict): past
        the steps that ran under torch's profiler or the allocator's history (--trace / --memory_snapshot with
        --profile_steps N) and the one after them, when at least MIN_STATISTICS_STEPS remain; else 0, every step.
        The profiled steps are slower by the profiler's cost per op, and so, at times, is the next: 2.7B fp8 step,
        profile_steps 2 (H200, 2026-12-03): 199.3, 180.8, 176.2, then 154.2-154.4 ms, warm-ups 153.5-154.4."""
        skip = self.profile_steps + 1
        profiled = bool(self.trace or self.memory_snapshot) and self.profile_steps > 0
        return skip if profiled and self.benchmark_steps - skip >= MIN_STATISTICS_STEPS else 0

    @property
    def label(self) -> str:
        return (f"{self.size} ctx={self.context_length} bs={self.batch_size} {self.mode} {self.precision} "
                f"{self.attention}{' ' + self.fp8_recipe if self.precision == 'fp8' and self.fp8_recipe else ''}"
                f"{' compile' if self.compile else ''}{' ' + self.recipe if self.recipe else ''}"
                f"{' compile=blocks' if self.compile_scope == 'blocks' and self.parallel == 'none' else ''}"
                f"{' mode=' + self.compile_mode if self.compile_mode not in ('', 'default') else ''}"
                f"{'' if self.backend == 'ours' else ' ' + self.backend} "
                f"{'' if self.activation_checkpointing == 'none' else 'checkpoint=' + self.activation_checkpointing + ' '}"
                f"{'adamw=' + self.optimizer + ' ' if self.optimizer and self.mode == 'train' else ''}warmup={self.warmup_steps}"
                f"{'' if self.parallel == 'none' else f' {self.parallel} x{self.nproc_per_node}'}")

    @property
    def artifact_name(self) -> str:
        """File-name stem for this configuration's traces and snapshots: "tiny ctx=128 ..." -> "tiny_ctx-128_...".

        benchmark_steps is added because it is a sweep axis the label leaves out; two configurations must never
        write over each other's files.
        """
        text = f"{self.label} steps={self.benchmark_steps}".replace("=", "-")
        return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


@functools.lru_cache(maxsize=64)
def _hf_model(model: str, vocab_size: int, num_layers: int):
    from src.model.catalog import resolve_model

    return resolve_model(model, vocab_size=vocab_size, num_layers=num_layers)


@functools.lru_cache(maxsize=64)
def _model_spec(backend: str, size: str, config: ModelConfig):
    from src.model.families.cs336 import Cs336Model
    from src.model.families.hf import HfModel
    from src.model.families.torchtitan import TorchtitanLlama

    if backend == "hf_llama":
        return HfModel.llama_of(config, size)
    if backend == "torchtitan":
        return TorchtitanLlama(size, config)
    return Cs336Model(size, config)


def _check_model(spec: RunSpec) -> None:
    """The model's own validation (its ValueError names the field), and what it asks of the options."""
    if spec.model and spec.backend != "ours":
        raise ValueError(f"model: {spec.model} is a Hugging Face config already; --backend {spec.backend} builds "
                         "transformers' Llama of our shape instead")
    if not spec.model:
        model = spec.model_spec()  # ModelConfig's ValueError names the field: sizes, heads dividing d_model, ...
    else:
        try:
            model = spec.model_spec()
        except ValueError as error:
            raise ValueError(f"model: {error}") from None
    if model.family in ("hf", "torchtitan") and spec.attention != "sdpa":
        raise ValueError(f"attention: {model.family} models run with SDPA attention here, not {spec.attention}")
    a = model.architecture
    if a.positions == "learned" and spec.context_length > a.max_positions:
        raise ValueError(f"context_length: {spec.context_length} is more than the {a.max_positions} positions "
                         f"{spec.size} has embeddings for")
    group = checkpoint_group(spec.activation_checkpointing)
    try:
        model.check_checkpoint_group(group)
    except ValueError as error:
        raise ValueError(f"activation_checkpointing: {error}") from None


def config_fields() -> tuple[str, ...]:
    """The options that identify a configuration, in declaration order: the results file's config columns."""
    return tuple(f.name for f in fields(RunSpec))


def _check_choices(spec: RunSpec) -> None:
    for name, choices in (("mode", MODES), ("precision", PRECISIONS), ("recipe", ("",) + RECIPES),
                          ("backend", BACKENDS), ("timer", TIMERS), ("device", DEVICES), ("isolate", ISOLATIONS)):
        if getattr(spec, name) not in choices:
            raise ValueError(f"{name}: must be one of {', '.join(repr(c) for c in choices)}, got {getattr(spec, name)!r}")
    for name in ("size", "trace", "memory_snapshot"):
        if not isinstance(getattr(spec, name), str):
            raise ValueError(f"{name}: must be text, got {getattr(spec, name)!r}")
    if not spec.size:
        raise ValueError("size: must name the size (a preset, or 'custom')")
    for name in ("compile", "nvtx"):
        if not isinstance(getattr(spec, name), bool):
            raise ValueError(f"{name}: must be True or False, got {getattr(spec, name)!r}")


def _check_numbers(spec: RunSpec) -> None:
    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    for name in ("batch_size", "benchmark_steps"):
        if not integer(getattr(spec, name)) or getattr(spec, name) < 1:
            raise ValueError(f"{name}: must be at least 1, got {getattr(spec, name)!r}")
    for name in ("warmup_steps", "profile_steps"):
        if not integer(getattr(spec, name)) or getattr(spec, name) < 0:
            raise ValueError(f"{name}: must be at least 0, got {getattr(spec, name)!r}")
    if not integer(spec.seed):
        raise ValueError(f"seed: must be an integer, got {spec.seed!r}")
    if spec.peak_tflops is not None and not (isinstance(spec.peak_tflops, (int, float))
                                             and 0 < spec.peak_tflops < float("inf")):
        raise ValueError(f"peak_tflops: must be a positive number, got {spec.peak_tflops!r}")
    if spec.profile_steps > spec.benchmark_steps:
        raise ValueError(f"profile_steps: {spec.profile_steps} is more than the {spec.benchmark_steps} measured "
                         "steps (benchmark_steps); profile at most that many")


def _check_combinations(spec: RunSpec) -> None:
    """Combinations that cannot run, or would silently not do what they say, on the named device."""
    if spec.device != "cuda":
        if spec.precision == "fp16":
            raise ValueError("precision: fp16 needs a CUDA device (bf16 autocast works on CPU)")
        if spec.timer == "events":
            raise ValueError("timer: events needs a CUDA device; use the sync timer")
        if spec.attention == "flash":
            raise ValueError("attention: flash is the Triton kernel and needs CUDA; use flash_pytorch on CPU")
        if spec.attention == "cudnn":
            raise ValueError("attention: cudnn is cuDNN's fused kernel and needs a CUDA GPU; use sdpa on CPU")
        if spec.memory_snapshot:
            raise ValueError("memory_snapshot: records the CUDA caching allocator and needs a CUDA device")
        if spec.nvtx:
            raise ValueError("nvtx: NVTX ranges are for Nsight Systems on CUDA; there is nothing to annotate on CPU")
    if spec.attention == "cudnn" and spec.precision == "fp32":
        raise ValueError("attention: cudnn runs cuDNN's bf16/fp16 kernel; use precision bf16, fp16 or fp8")
    if spec.precision == "fp8":
        if spec.device != "cuda":
            raise ValueError("precision: fp8 needs a GPU with fp8 tensor cores (Hopper, Ada, Blackwell); on CPU the "
                             "tests use torchao's emulation directly")
        if spec.fp8_recipe not in FP8_RECIPES:
            raise ValueError(f"fp8_recipe: must be one of {', '.join(FP8_RECIPES)}, got {spec.fp8_recipe!r}")
    elif spec.fp8_recipe:
        raise ValueError(f"fp8_recipe: applies to precision fp8 only, not {spec.precision}")
    if spec.recipe == "fast":
        if spec.precision not in ("bf16", "fp8"):
            raise ValueError(f"precision: the fast recipe trains in bf16 autocast with fp32 master weights, "
                             f"not {spec.precision}")
        if spec.attention not in FUSED_ATTENTION:
            raise ValueError(f"attention: the fast recipe uses fused attention ({', '.join(FUSED_ATTENTION)}), "
                             f"not {spec.attention}")


def _check_parallel(spec: RunSpec) -> None:
    """Raise ValueError naming the field when the distributed options cannot run together."""
    if spec.parallel not in PARALLEL:
        raise ValueError(f"parallel: must be one of {', '.join(PARALLEL)}, got {spec.parallel!r}")
    if not isinstance(spec.nproc_per_node, int) or spec.nproc_per_node < 1:
        raise ValueError(f"nproc_per_node: must be a positive integer, got {spec.nproc_per_node!r}")
    if not spec.bucket_mb > 0:
        raise ValueError(f"bucket_mb: must be positive, got {spec.bucket_mb!r}")
    if not 0 <= spec.collective_timeout_s < float("inf"):
        raise ValueError(f"collective_timeout_s: must be a positive number (0: estimated), got {spec.collective_timeout_s!r}")
    if spec.dist_backend not in DIST_BACKENDS:
        raise ValueError(f"dist_backend: must be nccl or gloo, got {spec.dist_backend!r}")
    if spec.dist_backend == "nccl" and spec.device != "cuda":
        raise ValueError("dist_backend: nccl needs a CUDA device; use gloo on CPU")
    if spec.parallel == "none" and spec.nproc_per_node > 1:
        raise ValueError("nproc_per_node: more than 1 needs a parallel strategy (parallel none is one process)")
    chosen = {"compile": spec.compiled, "fp16": spec.precision == "fp16",
              "compile with bucket_mb below 1": spec.compiled and spec.bucket_mb < 1,  # 1 MiB: torch's first bucket
              "memory_snapshot": bool(spec.memory_snapshot),
              "activation_checkpointing": spec.activation_checkpointing != "none",
              "optimizer ours": spec.optimizer == "ours", "optimizer fused": spec.optimizer == "fused",
              "optimizer in_backward or overlap": spec.optimizer in HOOKED_OPTIMIZERS, "fp8": spec.precision == "fp8"}
    for strategies, option, reason in PARALLEL_REFUSALS:
        if spec.parallel in strategies and chosen[option]:
            raise ValueError(f"parallel: {spec.parallel} does not run with {option}: {reason}")
    _check_tensor_parallel(spec)
    _check_compile_scope(spec)
    _check_compile_mode(spec)


def compile_mode_before_the_field(config: dict) -> str | None:
    """What a row written before compile_mode existed ran: torch's default mode where it compiled, else nothing."""
    return COMPILE_MODE_BEFORE_THE_FIELD if config.get("compile") or config.get("recipe") else None


def recipe_compile_mode(spec: RunSpec) -> str:
    """The compile mode a compiled step gets when none is asked for: reduce-overhead for the fast recipe in fp8 on
    one CUDA process with our model (see COMPILE_MODES for the measurement), default elsewhere. The Hugging Face and
    torchtitan models were not measured in that mode: they get it when asked (--compile_mode reduce-overhead)."""
    graphed = (spec.recipe == "fast" and spec.precision == "fp8" and spec.device == "cuda" and spec.parallel == "none"
               and spec.backend == "ours" and not spec.model)
    return GRAPHED_COMPILE_MODE if graphed else "default"


def _check_compile_mode(spec: RunSpec) -> None:
    if spec.compile_mode not in ("", *COMPILE_MODES):
        raise ValueError(f"compile_mode: must be one of {', '.join(COMPILE_MODES)}, got {spec.compile_mode!r}")
    if spec.compile_mode and not spec.compiled:
        raise ValueError("compile_mode: applies to compiled steps (--compile or --recipe fast)")
    if spec.replays_compiled_graphs and spec.device != "cuda":
        raise ValueError(f"compile_mode: {GRAPHED_COMPILE_MODE} replays CUDA graphs and needs a CUDA device")
    if spec.replays_compiled_graphs and spec.parallel != "none":
        raise ValueError(f"compile_mode: {GRAPHED_COMPILE_MODE} with parallel {spec.parallel}: collectives and "
                         "gradient hooks under CUDA graph capture are not built; one process only")


def _check_compile_scope(spec: RunSpec) -> None:
    if spec.compile_scope not in ("", *COMPILE_SCOPES):
        raise ValueError(f"compile_scope: must be one of {', '.join(COMPILE_SCOPES)}, got {spec.compile_scope!r}")
    if spec.compile_scope and not spec.compiled:
        raise ValueError("compile_scope: applies to compiled steps (--compile or --recipe fast)")
    if spec.parallel == "fsdp2" and spec.compile_scope == "model":
        raise ValueError("compile_scope: fsdp2 compiles each block before sharding it (its units are the blocks); "
                         "use blocks")
    if spec.parallel not in ("none", "fsdp2") and spec.compile_scope == "blocks":
        raise ValueError(f"compile_scope: parallel {spec.parallel} compiles its wrapped model whole; blocks is "
                         "built for one process and fsdp2")


def _check_tensor_parallel(spec: RunSpec) -> None:
    """tp_size against the strategy, the ranks and the model: whole heads, KV heads and MLP columns per rank."""
    if not isinstance(spec.tp_size, int) or isinstance(spec.tp_size, bool) or spec.tp_size < 0:
        raise ValueError(f"tp_size: must be a non-negative integer, got {spec.tp_size!r}")
    if spec.parallel not in TENSOR_PARALLEL:
        if spec.tp_size:
            raise ValueError(f"tp_size: applies to parallel {' and '.join(TENSOR_PARALLEL)}, not {spec.parallel}")
        return
    t, n = spec.tp_size, spec.nproc_per_node
    if t == 0:
        raise ValueError(f"tp_size: parallel {spec.parallel} needs the tensor-parallel degree (ranks per group)")
    if t < 2:
        raise ValueError(f"tp_size: tensor parallelism needs at least 2 ranks in a group, got {t}")
    if n % t:
        raise ValueError(f"tp_size: {t} must divide nproc_per_node {n}")
    if spec.parallel == "fsdp_tp" and n // t < 2:
        raise ValueError(f"tp_size: fsdp_tp shards across nproc_per_node / tp_size groups, which is {n // t}; "
                         "use parallel tp, or more ranks")
    model = spec.model_spec()
    if model.tp_plan() is None:
        raise ValueError(f"parallel: {spec.parallel} needs a tensor-parallel plan, which {model.name} "
                         f"({model.architecture.model_type}) does not have")
    a = model.architecture
    for name, value in (("num_heads", a.num_heads), ("num_kv_heads", a.num_kv_heads), ("d_ff", a.d_ff)):
        if value % t:
            raise ValueError(f"tp_size: {t} does not divide {name} {value} (each rank takes whole heads and "
                             "an equal part of the MLP)")


def _check_memory_and_optimizer(spec: RunSpec) -> None:
    """Issue 14's options: activation checkpointing (blocks:N parsed once, here) and the AdamW (ours needs CUDA and
    bf16)."""
    checkpoint_group(spec.activation_checkpointing)
    if spec.optimizer not in ("", *OPTIMIZERS):
        raise ValueError(f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {spec.optimizer!r}")
    if spec.optimizer in HOOKED_OPTIMIZERS and spec.precision == "fp16":
        raise ValueError(f"optimizer: {spec.optimizer} steps parameters from their gradient hooks, before GradScaler "
                         "could unscale and check all of them; use bf16")
    if spec.optimizer == "ours" and (spec.device != "cuda" or spec.precision not in ("bf16", "fp8")):
        raise ValueError("optimizer: ours (bf16 weights with fp32 masters, a Triton kernel) needs CUDA and bf16 or "
                         f"fp8; got {spec.device}, {spec.precision}")
