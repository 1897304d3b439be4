"""What a --model value names: a preset of ours (cs336), a config shipped under configs/, or a config.json path."""

from src.model.config import PRESETS
from src.model.families.cs336 import Cs336Model
from src.model.families.hf import HfModel, is_hf_source, shipped_configs
from src.model.interface import ModelSpec


def resolve_model(name: str, vocab_size: int | None = None, num_layers: int | None = None) -> ModelSpec:
    """The ModelSpec of a --model value, vocab_size and num_layers replacing its own where given; ValueError (one
    line, naming the value) when it names none."""
    if name in PRESETS:
        changes = {k: v for k, v in (("vocab_size", vocab_size), ("num_layers", num_layers)) if v}
        return Cs336Model(name, PRESETS[name].with_(**changes))
    if is_hf_source(name):
        return HfModel.from_source(name, vocab_size=vocab_size, num_layers=num_layers)
    raise ValueError(f"{name!r} is neither a preset ({', '.join(PRESETS)}), a config under configs/ "
                     f"({', '.join(shipped_configs()) or 'none'}) nor a path to a config.json")
