"""The tiny RunSpec the tests measure, in a module without torch: the writer processes of the results file's
concurrency test import their test module, and with it this, in 0.4 s instead of 2.5 s each."""

from src.model.config import PRESETS
from src.spec import RunSpec


def tiny_spec(**overrides) -> RunSpec:
    """The tiny preset training for 1 warm-up and 2 measured steps on CPU; any field can be overridden."""
    c = PRESETS["tiny"]
    fields = dict(size="tiny", d_model=c.d_model, d_ff=c.d_ff, num_heads=c.num_heads, num_layers=c.num_layers,
                  warmup_steps=1, benchmark_steps=2, mode="train")
    return RunSpec(**{**fields, **overrides})
