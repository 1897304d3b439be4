"""The models, and the one interface every layer above asks of them (interface.py: ModelSpec).

families/: cs336 (our TransformerLM, transformer.py, from a ModelConfig and its presets, config.py) and hf (any
transformers causal LM from its config.json); catalog.py resolves what --model names. architecture.py is the shape
every analytic count reads; flops.py and memory.py are those counts; counted.py counts on fake tensors what the
formulas do not know.

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
