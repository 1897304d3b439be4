"""One benchmark configuration: every option of a single run, as the sweep hands it to a runner (and a child process)."""

from dataclasses import asdict, dataclass, fields

from src.model.config import ModelConfig

MODES = ("forward", "forward_backward", "train")
PRECISIONS = ("fp32", "bf16", "fp16")
RECIPES = ("fast",)
BACKENDS = ("ours", "hf_llama")
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
    raise ValueError(f"activation_checkpointing must be none or blocks:N with N >= 1, got {activation_checkpointing!r}")


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
    activation_checkpointing: str = "none"  # or "blocks:N": recompute groups of N blocks in backward
    optimizer: str = ""  # one of OPTIMIZERS, or "" for the recipe's choice (torch's default without a recipe)

    def __post_init__(self):
        checkpoint_group(self.activation_checkpointing)
        if self.activation_checkpointing != "none" and self.backend != "ours":
            # Refused rather than mapped onto transformers' gradient_checkpointing, which has no groups of N.
            raise ValueError(f"activation_checkpointing works on our model only, not backend {self.backend}")
        if self.optimizer not in ("", *OPTIMIZERS):
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.optimizer == "ours" and (self.device, self.precision, self.backend) != ("cuda", "bf16", "ours"):
            raise ValueError("optimizer ours (bf16 weights with fp32 masters, a Triton kernel) needs CUDA, bf16 "
                             f"and our model; got {self.device}, {self.precision}, {self.backend}")

    @property
    def checkpoint_group(self) -> int:
        return checkpoint_group(self.activation_checkpointing)

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
                f"{'' if self.activation_checkpointing == 'none' else 'checkpoint=' + self.activation_checkpointing + ' '}"
                f"{'adamw=' + self.optimizer + ' ' if self.optimizer else ''}warmup={self.warmup_steps}")
