"""Shared test fixtures: the CUDA skip marker and a tiny RunSpec factory, plus the Triton interpreter switch.

Without a GPU, Triton kernels run under Triton's CPU interpreter. TRITON_INTERPRET is read when a @triton.jit
function is defined, so it is set here, before any test module imports a kernel.
"""

import os

import pytest
import torch

from src.model.config import PRESETS
from src.spec import RunSpec

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_spec(**overrides) -> RunSpec:
    """The tiny preset training for 1 warm-up and 2 measured steps on CPU; any field can be overridden."""
    c = PRESETS["tiny"]
    fields = dict(size="tiny", d_model=c.d_model, d_ff=c.d_ff, num_heads=c.num_heads, num_layers=c.num_layers,
                  warmup_steps=1, benchmark_steps=2, mode="train")
    return RunSpec(**{**fields, **overrides})
