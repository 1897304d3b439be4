"""Opt-in instruments wrapped around the measured steps (torch.profiler traces, allocator snapshots).

Each instrument is a context manager entered just before the first measured step, with `step()` called after
every measured step and `report(record)` called once the record's figures are known. None are built unless the
user asks for one, so an ordinary benchmark pays nothing for them.
"""

from src.profiling.spec import RunSpec


def build_instruments(spec: RunSpec) -> list:
    instruments = []
    return instruments
