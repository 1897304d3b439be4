"""The cs336 family: our TransformerLM (the course's BasicsTransformerLM, with optional GQA and a tied head)."""

from dataclasses import dataclass

from src.model.architecture import Architecture
from src.model.config import ModelConfig
from src.model.interface import ModelSpec, TensorParallelPlan


@dataclass(frozen=True)
class Cs336Model(ModelSpec):
    name: str
    config: ModelConfig
    family = "cs336"

    @property
    def architecture(self) -> Architecture:
        return self.config.architecture()

    def build(self, checkpoint_group: int = 0):
        from src.model.transformer import TransformerLM

        return TransformerLM(self.config, checkpoint_group=checkpoint_group)

    def build_reference(self):
        """Naive attention: plain matmuls the FLOP counter sees (SDPA on CPU has no FLOP formula)."""
        from src.model.transformer import TransformerLM

        return TransformerLM(self.config.with_(attention="naive"))

    def with_layers(self, num_layers: int) -> "Cs336Model":
        return Cs336Model(f"{self.name} ({num_layers} layers)", self.config.with_(num_layers=num_layers))

    def blocks(self, model) -> list:
        return list(model.layers)

    def tp_plan(self) -> TensorParallelPlan:
        return TensorParallelPlan(
            layers=(("attn.q_proj", "colwise"), ("attn.k_proj", "colwise"), ("attn.v_proj", "colwise"),
                    ("attn.output_proj", "rowwise"), ("ffn.w1", "colwise"), ("ffn.w3", "colwise"),
                    ("ffn.w2", "rowwise")),
            inputs=("attn", "ffn"))

    @property
    def shard_types(self) -> tuple:
        import torch.nn as nn

        from src.model import transformer

        return (nn.Linear, nn.Embedding, transformer.Linear, transformer.Embedding)

    @property
    def linear_types(self) -> tuple:
        from src.model import transformer

        return (transformer.Linear,)
