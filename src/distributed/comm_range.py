"""NVTX ranges around collectives, named by operation and size, so an Nsight Systems timeline shows each one.

    with comm_range("all_reduce bucket 3", bucket.numel() * bucket.element_size()):
        work = dist.all_reduce(bucket, async_op=True)

The range covers the host's issue of the collective (for an async one, its launch, not its completion: NCCL's
kernels appear on their own stream in the same nsys timeline). It follows the harness's NVTX switch, so it
costs one f-string and nothing else when --nvtx is off.
"""

from src import nvtx

_UNITS = (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024))


def format_bytes(nbytes: int) -> str:
    for unit, scale in _UNITS:
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def comm_range(name: str, nbytes: int):
    """A context manager: the NVTX range `<name> <size>` (e.g. "all_reduce grads 12.5 MB") when NVTX is on."""
    return nvtx.range(f"{name} {format_bytes(nbytes)}")
