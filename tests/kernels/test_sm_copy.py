"""The SM copy kernel (the overlap probe's stand-in for an NCCL kernel) copies every element, on any CTA count."""

import pytest
import torch

from src.kernels.triton_interpreter import interpreted

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and not interpreted(),
                                reason="needs CUDA or Triton's interpreter (TRITON_INTERPRET=1)")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("numel, ctas, block", [(1000, 3, 128), (4096, 1, 4096), (37, 8, 16)])  # ragged ends too
def test_every_element_is_copied(numel, ctas, block):
    from src.kernels.sm_copy import sm_copy

    src = torch.arange(numel, dtype=torch.int32, device=DEVICE)
    dst = torch.full_like(src, -1)
    assert sm_copy(src, dst, ctas, block) is dst
    assert torch.equal(dst, src)


def test_tensors_of_another_size_or_dtype_are_refused():
    from src.kernels.sm_copy import sm_copy

    src = torch.zeros(8, dtype=torch.uint8, device=DEVICE)
    with pytest.raises(ValueError, match="one dtype and size"):
        sm_copy(src, torch.zeros(9, dtype=torch.uint8, device=DEVICE))
    with pytest.raises(ValueError, match="ctas"):
        sm_copy(src, torch.zeros_like(src), 0)
