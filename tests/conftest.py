"""Shared test fixtures: the CUDA skip marker and the Triton interpreter switch (the tiny RunSpec: tests/specs.py).

Without a GPU, Triton kernels run under Triton's CPU interpreter. TRITON_INTERPRET is read when a @triton.jit
function is defined, so it is set here, before any test module imports a kernel.
"""

import os
import signal

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# A suite started in the background by a non-interactive shell (`bash .ci/run &`) inherits SIGINT ignored, and so
# would every process it starts: the Ctrl-C tests' children then ran on and exited 0 (3 failures, 2026-12-04).
# Handled here, SIGINT is back to its default in each child (exec resets a handler, not an ignore).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
