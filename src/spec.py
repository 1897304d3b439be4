"""One benchmark configuration: every option of a single run, as the sweep hands it to a runner (and a child process)."""

from dataclasses import asdict, dataclass, fields

from src.model.config import ModelConfig

MODES = ("forward", "forward_backward", "train")
PRECISIONS = ("fp32", "bf16", "fp16")
RECIPES = ("fast",)
BACKENDS = ("ours", "hf_llama")


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
                f"warmup={self.warmup_steps}")
