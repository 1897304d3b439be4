"""Shared test fixtures: the CUDA skip marker and the Triton interpreter switch (the tiny RunSpec: tests/specs.py).

Without a GPU, Triton kernels run under Triton's CPU interpreter. TRITON_INTERPRET is read when a @triton.jit
function is defined, so it is set here, before any test module imports a kernel.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
