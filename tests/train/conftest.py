"""Fixtures of the train tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one CPU thread. Their matmuls are tiny and gain nothing from threads; on a loaded
    2-core CPU two threads made an emulated fp8 step 15x slower (3.1 s against 0.20 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
