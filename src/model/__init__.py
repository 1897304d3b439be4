"""The CS336 Transformer LM, its presets, and analytic FLOP and memory counts.

The model (TransformerLM, count_parameters) is imported on first use, not with the package: the presets, RunSpec
and the results files need no torch, so a command that only reads results starts in 0.2 s instead of 2.4 s (the
summary of scripts/gpu_issue14.sh, on a 2-core CPU).
"""

from src.model.config import ORIGINAL_SIZES, PRESETS, ModelConfig

__all__ = ["ModelConfig", "PRESETS", "ORIGINAL_SIZES", "TransformerLM", "count_parameters"]


def __getattr__(name: str):
    if name in ("TransformerLM", "count_parameters"):
        from src.model import transformer

        return getattr(transformer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
