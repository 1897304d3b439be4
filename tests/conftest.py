"""Without a GPU, Triton kernels run under Triton's CPU interpreter. TRITON_INTERPRET is read when a @triton.jit
function is defined, so it is set here, before any test module imports a kernel."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
