"""NVTX ranges around collectives: named by operation and size, present only when the harness's NVTX is on."""

import pytest

from src import nvtx
from src.distributed.comm_range import comm_range, format_bytes
from tests.test_nvtx import captured  # noqa: F401  (the fixture recording NVTX pushes and pops)


def test_range_names_the_collective_and_its_size(captured):
    nvtx.configure(harness=True, model=False)
    with comm_range("all_reduce bucket 0", 25 * 1024**2):
        pass
    assert captured == [("push", "all_reduce bucket 0 25 MB"), ("pop", None)]


def test_no_range_when_nvtx_is_off(captured):
    nvtx.configure(harness=False, model=False)
    with comm_range("all_gather layer 3", 4096):
        pass
    assert captured == []


@pytest.mark.parametrize("nbytes, text", [(512, "512 B"), (1024, "1 KB"), (1536, "1.5 KB"), (3 * 1024**3, "3 GB")])
def test_format_bytes(nbytes, text):
    assert format_bytes(nbytes) == text
