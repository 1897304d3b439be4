"""Opt-in instruments wrapped around the measured steps (torch.profiler traces, allocator snapshots).

Each instrument is a context manager entered just before the first measured step, with `step()` called after
every measured step and `report(record)` called once the record's figures are known. None are built unless the
user asks for one, and their modules are imported only then, so an ordinary benchmark pays nothing for them.
"""

from src.spec import RunSpec


def build_instruments(spec: RunSpec) -> list:
    instruments = []
    if spec.trace:
        from src.instruments.torch_trace import TorchTrace

        instruments.append(TorchTrace(spec))
    if spec.memory_snapshot:  # RunSpec refuses it off CUDA: the allocator is CUDA's
        from src.instruments.memory import MemorySnapshot

        instruments.append(MemorySnapshot(spec))
    return instruments
