"""One benchmark configuration: every option of a single run, as the sweep hands it to a runner (and a child process)."""

from dataclasses import asdict, dataclass, fields

from src.model.config import ModelConfig

MODES = ("forward", "forward_backward", "train")
PRECISIONS = ("fp32", "bf16", "fp16")
RECIPES = ("fast",)
BACKENDS = ("ours", "hf_llama")
# --parallel: none (one process), our strategies (src/distributed), PyTorch's engines (torch_ddp, torch_zero1, fsdp2)
PARALLEL = ("none", "ddp_naive", "ddp_flat", "ddp_overlap", "ddp_bucketed", "zero1", "fsdp",
            "torch_ddp", "torch_zero1", "fsdp2")
DIST_BACKENDS = ("", "nccl", "gloo")  # "": nccl on CUDA, gloo on CPU
# What a strategy cannot run, and why: (strategies, the option, the reason), checked in RunSpec.__post_init__.
PARALLEL_REFUSALS = (
    (("fsdp",), "compile", "our FSDP gathers weights in forward wrappers and saved-tensor hooks, which "
                           "torch.compile does not trace"),
    (("fsdp2",), "compile", "fully_shard's hooks under torch.compile of the whole model are not supported here"),
    (("fsdp2",), "fp16", "GradScaler over fully_shard's DTensor gradients is not wired up; use bf16"),
    (PARALLEL[1:], "recipe", "the fast recipe's CUDA graphs and bf16 master weights are single-process"),
    (PARALLEL[1:], "hf_llama", "the strategies are set up for our model's blocks"),
    (PARALLEL[1:], "trace", "profiler traces are not yet written per rank"),
    (PARALLEL[1:], "memory_snapshot", "allocator snapshots are not yet written per rank"),
)


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
    compile: bool = False
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
    parallel: str = "none"  # see PARALLEL
    nproc_per_node: int = 1  # ranks on this host, launched through torchrun by the sweep
    bucket_mb: float = 25.0  # ddp_bucketed's bucket size (MiB)
    dist_backend: str = ""  # see DIST_BACKENDS

    def __post_init__(self):
        self._check_parallel()

    def _check_parallel(self) -> None:
        """Raise ValueError naming the field when the distributed options cannot run together."""
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {', '.join(PARALLEL)}, got {self.parallel!r}")
        if not isinstance(self.nproc_per_node, int) or self.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node must be a positive integer, got {self.nproc_per_node!r}")
        if not self.bucket_mb > 0:
            raise ValueError(f"bucket_mb must be positive, got {self.bucket_mb!r}")
        if self.dist_backend not in DIST_BACKENDS:
            raise ValueError(f"dist_backend must be nccl or gloo, got {self.dist_backend!r}")
        if self.dist_backend == "nccl" and self.device != "cuda":
            raise ValueError("dist_backend nccl needs a CUDA device; use gloo on CPU")
        if self.parallel == "none" and self.nproc_per_node > 1:
            raise ValueError("nproc_per_node > 1 needs a parallel strategy (parallel none is one process)")
        chosen = {"compile": self.compile, "fp16": self.precision == "fp16", "recipe": bool(self.recipe),
                  "hf_llama": self.backend == "hf_llama", "trace": bool(self.trace),
                  "memory_snapshot": bool(self.memory_snapshot)}
        for strategies, option, reason in PARALLEL_REFUSALS:
            if self.parallel in strategies and chosen[option]:
                raise ValueError(f"parallel {self.parallel} does not run with {option}: {reason}")

    @property
    def distributed_backend(self) -> str:
        return self.dist_backend or ("nccl" if self.device == "cuda" else "gloo")

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
    def label(self) -> str:
        return (f"{self.size} ctx={self.context_length} bs={self.batch_size} {self.mode} {self.precision} "
                f"{self.attention}{' compile' if self.compile else ''}{' ' + self.recipe if self.recipe else ''}"
                f"{'' if self.backend == 'ours' else ' ' + self.backend} "
                f"warmup={self.warmup_steps}"
                f"{'' if self.parallel == 'none' else f' {self.parallel} x{self.nproc_per_node}'}")
