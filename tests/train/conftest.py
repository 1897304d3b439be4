"""Fixtures of the train tests."""

import pytest
import torch

from tests.train.tiny_training import TINY


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one CPU thread. Their matmuls are tiny and gain nothing from threads; on a loaded
    2-core CPU two threads made an emulated fp8 step 15x slower (3.1 s against 0.20 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model():
    """The optimizer tests' fp32 model (tests/train/tiny_training.py), the same initial weights for each module."""
    from src.model.transformer import TransformerLM

    torch.manual_seed(0)
    return TransformerLM(TINY)
