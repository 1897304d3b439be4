"""The CS336 Transformer LM, its presets, and analytic FLOP and memory counts."""

from src.model.config import ORIGINAL_SIZES, PRESETS, ModelConfig
from src.model.transformer import TransformerLM, count_parameters

__all__ = ["ModelConfig", "PRESETS", "ORIGINAL_SIZES", "TransformerLM", "count_parameters"]
