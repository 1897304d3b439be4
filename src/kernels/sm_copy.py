"""A copy that runs on a fixed number of SMs, as NCCL's collective kernels do: what compute shares its GPU with.

NCCL moves data with kernels of one CTA per channel (NCCL_MIN_NCHANNELS / NCCL_MAX_NCHANNELS, tens of them), each
looping over its slice of the buffer, so a collective hidden behind compute takes SMs and memory bandwidth from it.
This kernel does the same on one GPU: CTAS programs, each striding over the buffer BLOCK elements at a time. It
reads and writes local memory where NCCL reads or writes a peer's over NVLink, so it stands in for the SMs and
the local HBM traffic a collective costs, not for the link.
"""

import triton
import triton.language as tl


@triton.jit
def _strided_copy(src, dst, n, BLOCK: tl.constexpr, CTAS: tl.constexpr):
    pid = tl.program_id(0)
    for start in range(pid * BLOCK, n, CTAS * BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(dst + offsets, tl.load(src + offsets, mask=mask), mask=mask)


def sm_copy(src, dst, ctas: int = 32, block: int = 4096):
    """dst[:] = src on `ctas` programs (flat, same numel and dtype, contiguous); returns dst."""
    if src.numel() != dst.numel() or src.dtype != dst.dtype or not (src.is_contiguous() and dst.is_contiguous()):
        raise ValueError("sm_copy takes two contiguous tensors of one dtype and size")
    if ctas < 1:
        raise ValueError(f"ctas must be at least 1, got {ctas}")
    _strided_copy[(ctas,)](src, dst, src.numel(), BLOCK=block, CTAS=ctas)
    return dst
