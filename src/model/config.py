"""Our model's configuration (the cs336 family): one dataclass, the named presets, and validation at the boundary."""

from dataclasses import dataclass, replace

from src.model.architecture import Architecture

ATTENTION_IMPLEMENTATIONS = ("naive", "sdpa", "cudnn", "flash", "flash_pytorch")


@dataclass(frozen=True)
class ModelConfig:
    d_model: int
    d_ff: int
    num_layers: int
    num_heads: int
    vocab_size: int = 10_000
    context_length: int = 128  # longest sequence the RoPE tables are built for
    rope_theta: float = 10_000.0
    attention: str = "naive"  # the original model's softmax(QK^T)V; see ATTENTION_IMPLEMENTATIONS
    num_kv_heads: int = 0  # grouped-query attention: k and v with this many heads; 0 = num_heads (the reference)
    tie_embeddings: bool = False  # the LM head reuses the token embedding's weight (the reference: untied)

    def __post_init__(self):
        if self.num_kv_heads == 0:  # frozen: the one normalisation, so equal shapes compare equal
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        for name in ("d_model", "d_ff", "num_layers", "num_heads", "vocab_size", "context_length", "num_kv_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head dimension d_model/num_heads = {self.head_dim} must be even for RoPE")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"tie_embeddings must be True or False, got {self.tie_embeddings!r}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {self.attention!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def with_(self, **changes) -> "ModelConfig":
        return replace(self, **changes)

    def architecture(self) -> Architecture:
        return Architecture(model_type="cs336", d_model=self.d_model, num_layers=self.num_layers,
                            num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
                            d_ff=self.d_ff, vocab_size=self.vocab_size, max_positions=self.context_length,
                            tied_embeddings=self.tie_embeddings, attention=self.attention)


# The five sizes of the original benchmark (CS336 assignment 2), a tiny one for tests, and the two larger models of
# the course's 2026 table. A preset's vocab_size and context_length are its defaults (the benchmark applies them
# unless --vocab_size / --context_length are given); the seed's sizes keep the original 10,000 and 128.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(d_model=64, d_ff=256, num_layers=2, num_heads=4),
    "small": ModelConfig(d_model=768, d_ff=3072, num_layers=12, num_heads=12),
    "medium": ModelConfig(d_model=1024, d_ff=4096, num_layers=24, num_heads=16),
    "large": ModelConfig(d_model=1280, d_ff=5120, num_layers=36, num_heads=20),
    "xl": ModelConfig(d_model=1600, d_ff=6400, num_layers=48, num_heads=25),
    "2.7B": ModelConfig(d_model=2560, d_ff=10240, num_layers=32, num_heads=32),
    "10B": ModelConfig(d_model=4608, d_ff=12288, num_layers=50, num_heads=36),  # 12.8e9 parameters at vocab 10,000
    "8B-leaderboard": ModelConfig(d_model=4096, d_ff=11008, num_layers=34, num_heads=32, vocab_size=151_936,
                                  context_length=32_768),  # the 2026 leaderboard model (Qwen's tokenizer)
}
# Batch size a preset runs at unless --batch_size is given (the others: the benchmark's default, 4).
PRESET_BATCH_SIZES: dict[str, int] = {"8B-leaderboard": 2}
ORIGINAL_SIZES = ("small", "medium", "large", "xl", "2.7B")
