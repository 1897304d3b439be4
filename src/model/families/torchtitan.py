"""The torchtitan family: torchtitan's own Llama 3 model (torchtitan.models.llama3) at our model's shape, for
comparison (`--backend torchtitan`; torchtitan installed, 0.2.2 is the last release for torch 2.11).

Our model and torchtitan's compute the same function (pre-norm blocks, RoPE, SwiGLU, RMSNorm, untied head, no
biases); they differ in how: torchtitan uses nn.RMSNorm, complex-number RoPE on (B, T, nh, hs) and SDPA with
GQA built in. Its eager step was 19% faster than ours at the 2.7B shape (issue 19), so this backend puts both
steps through the same instruments (`--trace`, the A/B report by category).

torchtitan's package __init__ files import its trainer (tyro, torchdata, datasets, tensorboard: hundreds of MB
that a model needs none of), so the model's files are loaded without them: the packages on the way are entered
as bare namespaces and the three names the model files take from the trainer's side are stood in for (they are
type annotations and a base class there). torchtitan's code itself runs unmodified.
"""

import functools
import importlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass

from src.model.architecture import Architecture
from src.model.config import ModelConfig
from src.model.interface import ModelSpec

_PACKAGES = ("torchtitan", "torchtitan.models", "torchtitan.models.llama3", "torchtitan.models.llama3.model",
             "torchtitan.protocols", "torchtitan.components", "torchtitan.tools")


@functools.cache
def _llama3():
    """torchtitan.models.llama3.model.model, loaded as described above; ImportError when torchtitan is absent."""
    found = importlib.util.find_spec("torchtitan")  # finds the package without running its __init__
    if found is None or not found.submodule_search_locations:
        raise ImportError("--backend torchtitan needs the torchtitan package (0.2.2 for torch 2.11)")
    root = list(found.submodule_search_locations)[0]
    for name in _PACKAGES:
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [os.path.join(root, *name.split(".")[1:])]
            sys.modules[name] = package
    stand_ins = {"torchtitan.config": ("JobConfig", "LRScheduler"),  # the trainer's config (tyro)
                 "torchtitan.components.tokenizer": ("BaseTokenizer",)}  # an annotation in the model file
    for name, attributes in stand_ins.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            for attribute in attributes:
                setattr(module, attribute, type(attribute, (), {}))
            sys.modules[name] = module
    if "torchtitan.protocols.train_spec" not in sys.modules:  # the model takes only ModelProtocol from it
        train_spec = types.ModuleType("torchtitan.protocols.train_spec")
        train_spec.ModelProtocol = importlib.import_module("torchtitan.protocols.model").ModelProtocol
        sys.modules["torchtitan.protocols.train_spec"] = train_spec
    return importlib.import_module("torchtitan.models.llama3.model.model")


def model_args(config: ModelConfig):
    """torchtitan's TransformerModelArgs of our shape. Its FeedForward derives the hidden width from 4 * dim
    (int(2/3 of it), times ffn_dim_multiplier, rounded up to multiple_of): with multiple_of = d_ff and a multiplier
    <= 1 that keeps the product <= d_ff, the rounding lands on d_ff exactly. RoPE scaling factor 1: no Llama 3.1
    frequency scaling, as in ours."""
    _llama3()
    args_module = importlib.import_module("torchtitan.models.llama3.model.args")
    titan_hidden = int(2 * 4 * config.d_model / 3)
    return args_module.TransformerModelArgs(
        dim=config.d_model, n_layers=config.num_layers, n_heads=config.num_heads,
        n_kv_heads=config.num_kv_heads, vocab_size=config.vocab_size, multiple_of=config.d_ff,
        ffn_dim_multiplier=min(1.0, config.d_ff / titan_hidden), norm_eps=1e-5, rope_theta=config.rope_theta,
        max_seq_len=config.context_length, attn_type="sdpa",
        rope_scaling_args=args_module.RoPEScalingArgs(scaling_factor=1.0))


@dataclass(frozen=True)
class TorchtitanLlama(ModelSpec):
    name: str
    config: ModelConfig
    family = "torchtitan"

    @property
    def architecture(self) -> Architecture:
        return self.config.architecture()

    def build(self, checkpoint_group: int = 0):
        self.check_checkpoint_group(checkpoint_group)
        import torch

        model = _llama3().Transformer(model_args(self.config))
        with torch.no_grad():  # torchtitan's trainer calls it on meta-built weights, outside autograd
            model.init_weights()  # torchtitan's initialisation; its RoPE table on the default device
        if model.layers["0"].feed_forward.w1.out_features != self.config.d_ff:  # the rounding above, checked
            raise ValueError(f"torchtitan's FeedForward did not reproduce d_ff {self.config.d_ff}")
        return model

    def with_layers(self, num_layers: int) -> "TorchtitanLlama":
        return TorchtitanLlama(f"{self.name} ({num_layers} layers)", self.config.with_(num_layers=num_layers))

    def check_checkpoint_group(self, group: int) -> None:
        if group:
            raise ValueError("activation_checkpointing: torchtitan's model is checkpointed by its trainer, "
                             "which this backend does not run")

    def blocks(self, model) -> list:
        return list(model.layers.values())

    @property
    def shard_types(self) -> tuple:
        import torch.nn as nn

        return (nn.Linear, nn.Embedding)

    @property
    def linear_types(self) -> tuple:
        import torch.nn as nn

        return (nn.Linear,)
