"""What a --model value names: a preset of ours (cs336), a config shipped under configs/, or a config.json path."""

from src.model.config import PRESETS, ModelConfig
from src.model.families.cs336 import Cs336Model
from src.model.families.hf import HfModel, is_hf_source, shipped_configs
from src.model.interface import ModelSpec


def model_names() -> list[str]:
    """Every name --model takes without a path: our presets, then the shipped configs."""
    return [*PRESETS, *shipped_configs()]


def resolve_model(name: str, vocab_size: int | None = None) -> ModelSpec:
    """The ModelSpec of a --model value; ValueError (one line, naming the value) when it names none."""
    if name in PRESETS:
        config = PRESETS[name]
        return Cs336Model(name, config.with_(vocab_size=vocab_size) if vocab_size else config)
    if is_hf_source(name):
        return HfModel.from_source(name, vocab_size=vocab_size)
    raise ValueError(f"{name!r} is neither a preset ({', '.join(PRESETS)}), a config under configs/ "
                     f"({', '.join(shipped_configs()) or 'none'}) nor a path to a config.json")


def cs336_model(name: str, config: ModelConfig) -> ModelSpec:
    return Cs336Model(name, config)
