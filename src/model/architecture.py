"""The shape of a decoder-only LM as the analytic counts see it: one dataclass for every family and config.json.

Every figure the toolkit computes before measuring (FLOPs, activation bytes, the cost model's splits) reads an
Architecture, never a family's own config: ours (src/model/config.py's ModelConfig) and a Hugging Face config.json
(src/model/families/hf.py) both describe themselves as one. `from_hf_config` reads the fields that transformers'
configs share; the model types whose layer structure the formulas know are KNOWN_MODEL_TYPES, and any other
type is still benchmarked, its FLOPs and activations then counted on fake tensors instead (src/model/counted.py).
"""

from dataclasses import dataclass, replace

NORMS = ("rmsnorm", "layernorm")
MLPS = ("gated", "plain")  # gated: down(act(gate x) * up x), three matrices (SwiGLU); plain: fc2(act(fc1 x)), two
POSITIONS = ("rope", "learned")

# model_type -> (norm, mlp, positions) of the layer structure the analytic formulas model. Llama-like: pre-norm
# RMSNorm, RoPE, gated SiLU MLP, optional biases on q/k/v (Qwen2); the MoE types route each token to k of E
# gated experts (Mixtral; Qwen2-MoE adds a shared expert). GPT-2: LayerNorm, learned positions, GELU MLP, biases.
KNOWN_MODEL_TYPES: dict[str, tuple[str, str, str]] = {
    "cs336": ("rmsnorm", "gated", "rope"),
    "llama": ("rmsnorm", "gated", "rope"),
    "mistral": ("rmsnorm", "gated", "rope"),
    "qwen2": ("rmsnorm", "gated", "rope"),
    "qwen3": ("rmsnorm", "gated", "rope"),
    "mixtral": ("rmsnorm", "gated", "rope"),
    "qwen2_moe": ("rmsnorm", "gated", "rope"),
    "olmoe": ("rmsnorm", "gated", "rope"),
    "gpt2": ("layernorm", "plain", "learned"),
}
QK_NORM_TYPES = ("olmoe", "qwen3")


@dataclass(frozen=True)
class Architecture:
    model_type: str  # "cs336" for ours; a transformers model_type ("llama", "gpt2", "mixtral", ...) otherwise
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int  # = num_heads without grouped-query attention
    head_dim: int
    d_ff: int  # the dense MLP's hidden width; 0 in a model whose every MLP is a mixture of experts
    vocab_size: int
    max_positions: int
    tied_embeddings: bool = False
    norm: str = "rmsnorm"
    mlp: str = "gated"
    positions: str = "rope"
    qkv_bias: bool = False
    num_experts: int = 0  # 0: dense
    experts_per_token: int = 0
    expert_d_ff: int = 0  # each routed expert's hidden width
    shared_expert_d_ff: int = 0  # Qwen2-MoE's always-on expert (0: none)
    attention: str = "sdpa"  # naive keeps the T x T probabilities for backward; the fused kernels do not
    qk_norm: bool = False  # an RMSNorm on q and on k before RoPE (OLMoE, Qwen3)

    def __post_init__(self):
        for name in ("d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "max_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        if self.norm not in NORMS or self.mlp not in MLPS or self.positions not in POSITIONS:
            raise ValueError(f"unknown layer structure {self.norm}/{self.mlp}/{self.positions}")
        if self.num_experts and not 0 < self.experts_per_token <= self.num_experts:
            raise ValueError(f"experts_per_token must be in 1..{self.num_experts}, got {self.experts_per_token}")
        if not self.num_experts and self.d_ff < 1:
            raise ValueError(f"d_ff must be a positive integer in a dense model, got {self.d_ff!r}")

    @property
    def known(self) -> bool:
        """Whether the analytic formulas model this layer structure (else FLOPs/activations are counted)."""
        return self.model_type in KNOWN_MODEL_TYPES

    @property
    def moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_width(self) -> int:  # nh * hs: the attention's width, d_model unless head_dim is set apart (Qwen3)
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:  # nkv * hs
        return self.num_kv_heads * self.head_dim

    def with_(self, **changes) -> "Architecture":
        return replace(self, **changes)

    def split(self, tp: int) -> "Architecture":
        """The shapes one tensor-parallel rank computes with: heads, KV heads (at least 1, replicated when fewer
        than tp), MLP widths, experts' widths and the vocabulary split tp ways (Megatron-LM's layout)."""
        if self.num_heads % tp or (self.d_ff and self.d_ff % tp) or (self.expert_d_ff and self.expert_d_ff % tp):
            raise ValueError(f"tensor parallelism {tp} must divide num_heads ({self.num_heads}) and the MLP widths "
                             f"(d_ff {self.d_ff}, expert d_ff {self.expert_d_ff})")
        return replace(self, num_heads=self.num_heads // tp, num_kv_heads=max(1, self.num_kv_heads // tp),
                       d_ff=self.d_ff // tp, expert_d_ff=self.expert_d_ff // tp,
                       shared_expert_d_ff=self.shared_expert_d_ff // tp, vocab_size=-(-self.vocab_size // tp))


def _first(config: dict, *names, default=None):
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


def from_hf_config(config: dict) -> Architecture:
    """An Architecture from a transformers config (its to_dict(), or a config.json), by the fields configs share.

    Raises ValueError naming the missing field when the config does not describe a decoder-only transformer."""
    model_type = str(config.get("model_type") or "")
    d = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(config, "num_attention_heads", "n_head", "num_heads")
    vocab = config.get("vocab_size")
    for name, value in (("hidden_size", d), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                        ("vocab_size", vocab)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"config has no integer {name} (got {value!r})")
    kv = _first(config, "num_key_value_heads", default=heads)
    head_dim = _first(config, "head_dim", default=d // heads)
    norm, mlp, positions = KNOWN_MODEL_TYPES.get(model_type, ("rmsnorm", "gated", "rope"))
    experts = int(_first(config, "num_local_experts", "num_experts", "n_routed_experts", default=0) or 0)
    dense_ff = _first(config, "intermediate_size", "n_inner", "ffn_dim", default=None)
    if model_type == "gpt2" and dense_ff is None:
        dense_ff = 4 * d  # GPT-2's n_inner=None means 4 x n_embd
    expert_ff = int(_first(config, "moe_intermediate_size", default=dense_ff if experts else 0) or 0)
    if experts and model_type in ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe"):
        # every layer routed (Qwen2-MoE's decoder_sparse_step/mlp_only_layers left at their defaults)
        dense_ff_used = 0
    else:
        dense_ff_used = int(dense_ff or 0)
    return Architecture(
        model_type=model_type or "unknown", d_model=d, num_layers=layers, num_heads=heads, num_kv_heads=int(kv),
        head_dim=int(head_dim), d_ff=dense_ff_used, vocab_size=vocab,
        max_positions=int(_first(config, "max_position_embeddings", "n_positions", "n_ctx", default=1 << 20)),
        tied_embeddings=bool(config.get("tie_word_embeddings", True)), norm=norm, mlp=mlp, positions=positions,
        qkv_bias=bool(_first(config, "attention_bias", default=model_type in ("qwen2", "qwen2_moe", "gpt2"))),
        num_experts=experts, experts_per_token=int(_first(config, "num_experts_per_tok", default=0) or 0),
        expert_d_ff=expert_ff if experts else 0,
        shared_expert_d_ff=int(config.get("shared_expert_intermediate_size") or 0) if experts else 0,
        qk_norm=model_type in QK_NORM_TYPES,
    )
