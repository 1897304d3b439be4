"""One benchmark configuration: every option of a single run, validated here, as the sweep hands it to a runner.

RunSpec is the boundary: a RunSpec that exists is one the runner can attempt. `__post_init__` raises ValueError
"<field>: <problem>" for a bad value or a combination that cannot run (the command turns it into its one-line
usage error, exit 2); facts derived from several fields (`compiled`, `profiled_steps`, `label`, `artifact_name`)
are worked out here once. Checks that need the live machine (is there a GPU, is transformers installed) stay in
the command, which runs in the parent process and never touches the GPU (see src/profiling/benchmark.py).
A new option is one field here: the results file's config columns are this dataclass's fields.
"""

import re
from dataclasses import asdict, dataclass, fields

from src.model.config import ModelConfig

MODES = ("forward", "forward_backward", "train")
PHASES = ("forward", "backward", "optimizer")  # what a step is timed in (train mode runs all three)
PRECISIONS = ("fp32", "bf16", "fp16")
RECIPES = ("fast",)
BACKENDS = ("ours", "hf_llama")
TIMERS = ("events", "sync")  # see src/harness/timing.py
DEVICES = ("cpu", "cuda")
ISOLATIONS = ("none", "process")
FUSED_ATTENTION = ("sdpa", "flash", "flash_pytorch")  # what the fast recipe accepts: not the naive softmax(QK^T)V
# AdamW: torch's default (foreach, what plain user code gets), torch's fused=True, or ours (src/kernels/
# master_adamw.py: bf16 weights with fp32 masters; CUDA and bf16 only). "" = the recipe's choice (see
# src/train/step.py chosen_optimizer), torch's default without a recipe.
OPTIMIZERS = ("default", "fused", "ours")


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
    size: str
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
    backend: str = "ours"  # or "hf_llama": transformers' Llama of the same shape, for comparison
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

    def __post_init__(self):
        _check_choices(self)
        _check_numbers(self)
        self.model_config()  # its ValueError names the field: sizes, heads dividing d_model, the attention
        _check_combinations(self)
        _check_memory_and_optimizer(self)
        if self.recipe == "fast" and not self.compile:
            object.__setattr__(self, "compile", True)  # frozen: the one normalisation, so the row tells the truth

    def model_config(self) -> ModelConfig:
        return ModelConfig(d_model=self.d_model, d_ff=self.d_ff, num_layers=self.num_layers, num_heads=self.num_heads,
                           vocab_size=self.vocab_size, context_length=self.context_length, attention=self.attention)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def compiled(self) -> bool:
        """Whether the step runs under torch.compile: --compile, or the fast recipe (which compiles)."""
        return self.compile or self.recipe == "fast"

    @property
    def checkpoint_group(self) -> int:
        return checkpoint_group(self.activation_checkpointing)

    @property
    def profiled_steps(self) -> int:
        """Measured steps inside the profilers' range: the first profile_steps, or all of them."""
        return self.profile_steps or self.benchmark_steps

    @property
    def label(self) -> str:
        return (f"{self.size} ctx={self.context_length} bs={self.batch_size} {self.mode} {self.precision} "
                f"{self.attention}{' compile' if self.compile else ''}{' ' + self.recipe if self.recipe else ''}"
                f"{'' if self.backend == 'ours' else ' ' + self.backend} "
                f"{'' if self.activation_checkpointing == 'none' else 'checkpoint=' + self.activation_checkpointing + ' '}"
                f"{'adamw=' + self.optimizer + ' ' if self.optimizer else ''}warmup={self.warmup_steps}")

    @property
    def artifact_name(self) -> str:
        """File-name stem for this configuration's traces and snapshots: "tiny ctx=128 ..." -> "tiny_ctx-128_...".

        benchmark_steps is added because it is a sweep axis the label leaves out; two configurations must never
        write over each other's files.
        """
        text = f"{self.label} steps={self.benchmark_steps}".replace("=", "-")
        return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


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
        if spec.memory_snapshot:
            raise ValueError("memory_snapshot: records the CUDA caching allocator and needs a CUDA device")
        if spec.nvtx:
            raise ValueError("nvtx: NVTX ranges are for Nsight Systems on CUDA; there is nothing to annotate on CPU")
    if spec.recipe == "fast":
        if spec.precision != "bf16":
            raise ValueError(f"precision: the fast recipe trains in bf16 autocast with fp32 master weights, "
                             f"not {spec.precision}")
        if spec.attention not in FUSED_ATTENTION:
            raise ValueError(f"attention: the fast recipe uses fused attention ({', '.join(FUSED_ATTENTION)}), "
                             f"not {spec.attention}")
    if spec.backend == "hf_llama" and spec.attention != "sdpa":
        raise ValueError(f"attention: the hf_llama backend always uses SDPA attention, not {spec.attention}")


def _check_memory_and_optimizer(spec: RunSpec) -> None:
    """Issue 14's options: activation checkpointing (our model only) and the AdamW (ours needs CUDA and bf16)."""
    checkpoint_group(spec.activation_checkpointing)
    if spec.activation_checkpointing != "none" and spec.backend != "ours":
        # Refused rather than mapped onto transformers' gradient_checkpointing, which has no groups of N.
        raise ValueError(f"activation_checkpointing: works on our model only, not backend {spec.backend}")
    if spec.optimizer not in ("", *OPTIMIZERS):
        raise ValueError(f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {spec.optimizer!r}")
    if spec.optimizer == "ours" and (spec.device, spec.precision, spec.backend) != ("cuda", "bf16", "ours"):
        raise ValueError("optimizer: ours (bf16 weights with fp32 masters, a Triton kernel) needs CUDA, bf16 and our "
                         f"model; got {spec.device}, {spec.precision}, {spec.backend}")
