"""The hf family: any transformers causal LM, built from its config.json with random weights (nothing downloaded).

    HfModel.from_source("llama-3.2-1b")            # a config shipped under configs/ (configs/SOURCES.md)
    HfModel.from_source("path/to/config.json")     # or a directory holding one
    HfModel.llama_of(ModelConfig(...))             # --backend hf_llama: transformers' Llama of our shape

`AutoModelForCausalLM.from_config` builds it in fp32 (a config's torch_dtype is ignored: autocast keeps fp32
masters, as for our model) with SDPA attention and no KV cache, wrapped so that it maps token ids to logits like
ours. A config is validated where it is read (one line naming the file and the problem), before any work; its
architecture (src/model/architecture.py) is read from transformers' own config object, so a field the file omits
takes the model class's default, as transformers itself would.
"""

import copy
import functools
import json
import os
from dataclasses import dataclass

from src.model.architecture import Architecture, from_hf_config
from src.model.config import ModelConfig
from src.model.interface import ModelSpec, TensorParallelPlan, _meta_model

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "configs")


def shipped_configs() -> list[str]:
    """Names of the configs under configs/ (without .json)."""
    try:
        return sorted(f[:-5] for f in os.listdir(CONFIGS_DIR) if f.endswith(".json"))
    except OSError:
        return []


def _config_path(source: str) -> str | None:
    """The config.json a --model value names: a shipped name, a .json file, or a directory with config.json."""
    if source in shipped_configs():
        return os.path.join(CONFIGS_DIR, source + ".json")
    if os.path.isdir(source):
        return os.path.join(source, "config.json")
    if source.endswith(".json") or os.sep in source or os.path.exists(source):
        return source
    return None


def is_hf_source(source: str) -> bool:
    return _config_path(source) is not None


def read_config(source: str) -> dict:
    """The config.json as a dict; ValueError "<path>: <problem>" when it cannot be one (one line)."""
    path = _config_path(source)
    if path is None:
        raise ValueError(f"{source!r} is neither a preset, a config under configs/ ({', '.join(shipped_configs())}) "
                         "nor a path to a config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read ({type(error).__name__}: {error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a config.json holds a JSON object, this holds {type(config).__name__}")
    if not isinstance(config.get("model_type"), str):
        raise ValueError(f"{path}: no model_type (a transformers config.json names its architecture there)")
    return config


def _layers_key(config: dict) -> str:
    return "n_layer" if "n_layer" in config and "num_hidden_layers" not in config else "num_hidden_layers"


@functools.lru_cache(maxsize=32)
def _transformers_config(config_json: str):
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = json.loads(config_json)
    model_type = config.pop("model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"model_type {model_type!r} is not a causal LM transformers can build")
    for key in ("architectures", "transformers_version", "_name_or_path", "auto_map"):
        config.pop(key, None)  # what to load, not what to build: auto_map would ask for remote code
    try:
        hf_config = AutoConfig.for_model(model_type, **config)
    except Exception as error:  # transformers' own validation of the fields
        raise ValueError(f"transformers refused the config: {type(error).__name__}: {str(error).splitlines()[0]}") \
            from None
    hf_config.use_cache = False
    return hf_config


@functools.cache
def _wrapper_class():  # defined on first use: torch is imported only when a model is built
    import torch.nn as nn

    class HfCausalLM(nn.Module):
        """A transformers causal LM as ours is called: token ids (B, T) -> logits (B, T, vocab)."""

        def __init__(self, model):
            super().__init__()
            self.hf = model

        def forward(self, token_ids):
            return self.hf(input_ids=token_ids, use_cache=False).logits

    return HfCausalLM


@dataclass(frozen=True)
class HfModel(ModelSpec):
    name: str
    config_json: str  # the config as given (sorted keys), with the overrides below applied
    source: str = ""  # the file it came from ("" when made here)
    family = "hf"

    @classmethod
    def from_source(cls, source: str, vocab_size: int | None = None, num_layers: int | None = None) -> "HfModel":
        """The config `source` names; vocab_size and num_layers, where given, replace the config's (a model of
        the same shape with fewer layers, where the whole does not fit)."""
        config = read_config(source)
        if vocab_size:
            config["vocab_size"] = vocab_size
        if num_layers:
            config[_layers_key(config)] = num_layers
        path = _config_path(source)
        name = source if source in shipped_configs() else os.path.basename(os.path.dirname(os.path.abspath(path))) \
            if os.path.basename(path) == "config.json" else os.path.splitext(os.path.basename(path))[0]
        spec = cls(name=name, config_json=json.dumps(config, sort_keys=True), source=path)
        try:
            spec.architecture  # transformers validates the fields; the architecture must be a decoder LM's
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        return spec

    @classmethod
    def llama_of(cls, config: ModelConfig, name: str) -> "HfModel":
        """transformers' Llama with our model's shape (untied head unless tied, no biases, RoPE theta 10,000)."""
        llama = dict(model_type="llama", vocab_size=config.vocab_size, hidden_size=config.d_model,
                     intermediate_size=config.d_ff, num_hidden_layers=config.num_layers,
                     num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                     max_position_embeddings=config.context_length, rms_norm_eps=1e-5, rope_theta=config.rope_theta,
                     tie_word_embeddings=config.tie_embeddings, attention_bias=False, mlp_bias=False)
        return cls(name=name, config_json=json.dumps(llama, sort_keys=True))

    def with_layers(self, num_layers: int) -> "HfModel":
        """The same model with `num_layers` decoder layers (what the fake-tensor count of one block differences)."""
        config = json.loads(self.config_json)
        config[_layers_key(config)] = num_layers
        return HfModel(f"{self.name} ({num_layers} layers)", json.dumps(config, sort_keys=True), self.source)

    def transformers_config(self):
        """A fresh copy each time: from_config writes the attention and experts implementation into the config it
        is given, and one build must not change what the next one gets."""
        return copy.deepcopy(_transformers_config(self.config_json))

    @property
    def architecture(self) -> Architecture:
        return _architecture(self.config_json)

    def build(self, checkpoint_group: int = 0):
        import torch
        from transformers import AutoModelForCausalLM

        self.check_checkpoint_group(checkpoint_group)
        model = AutoModelForCausalLM.from_config(self.transformers_config(), attn_implementation="sdpa",
                                                 dtype=torch.float32)
        model.train()
        if checkpoint_group:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return _wrapper_class()(model)

    def build_reference(self):
        """The model as the FLOP counter fully sees it: eager attention (matmuls and a softmax) and, in a mixture
        of experts, experts one by one over the tokens routed to them (SDPA on CPU and transformers' grouped_mm
        experts have no FLOP formula: FlopCounterMode counts them as 0)."""
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(self.transformers_config(), attn_implementation="eager",
                                                 dtype=torch.float32)
        if self.architecture.moe:
            model.set_experts_implementation("eager")
        return _wrapper_class()(model)

    def check_checkpoint_group(self, group: int) -> None:
        if group > 1:
            raise ValueError(f"blocks:{group}: transformers checkpoints each decoder layer on its own; use blocks:1")

    def tp_plan(self) -> TensorParallelPlan | None:
        return _tp_plan(self.config_json)

    def blocks(self, model) -> list:
        names = set(getattr(model.hf, "_no_split_modules", None) or ())
        return [m for m in model.modules() if type(m).__name__ in names]

    @property
    def shard_types(self) -> tuple:
        import torch.nn as nn
        from transformers.pytorch_utils import Conv1D  # GPT-2's linear layer: y = x W + b, W (d_in, d_out)

        return (nn.Linear, nn.Embedding, Conv1D)

    @property
    def linear_types(self) -> tuple:
        import torch.nn as nn
        from transformers.pytorch_utils import Conv1D

        return (nn.Linear, Conv1D)


@functools.lru_cache(maxsize=32)
def _tp_plan(config_json: str) -> TensorParallelPlan | None:
    """The config class's own base_model_tp_plan ({"layers.*.self_attn.q_proj": "colwise", ...}: Llama, Qwen,
    Mistral, ...) where it only splits nn.Linear layers of the blocks column- or row-wise; None for anything else
    (fused q/k/v in GPT-2's Conv1D, experts, "colwise_rep" or "local_rowwise" styles: not built here)."""
    import torch.nn as nn

    plan = getattr(_transformers_config(config_json), "base_model_tp_plan", None) or {}
    # the blocks' entries; the embedding's ("embed_tokens": "embedding_rowwise") is left out: ours is replicated
    layers = tuple((key.removeprefix("layers.*."), style) for key, style in plan.items() if key.startswith("layers.*."))
    if not layers or any(style not in ("colwise", "rowwise") for _, style in layers):
        return None
    spec = HfModel("plan", config_json)
    block = spec.blocks(_meta_model(spec))[0]
    if not all(isinstance(block.get_submodule(path), nn.Linear) for path, _ in layers):
        return None
    inputs = tuple(dict.fromkeys(path.rpartition(".")[0] for path, style in layers if style == "colwise"))
    return TensorParallelPlan(layers, inputs, input_kwarg="hidden_states")


@functools.lru_cache(maxsize=32)
def _architecture(config_json: str) -> Architecture:
    return from_hf_config(_transformers_config(config_json).to_dict())
