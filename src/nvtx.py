"""NVTX ranges for Nsight Systems: one nested name per sweep, step, phase and layer; free when switched off.

Two switches, because torch.compile cannot trace through range_push/range_pop without graph breaks:
`range` marks the harness's structure (configuration, warmup/measure, step, phase) and `model_range`
marks work inside the model (layers, attention parts), which the harness turns off under --compile.
"""

import torch

_push = torch.cuda.nvtx.range_push  # module attributes so tests can capture the calls on CPU
_pop = torch.cuda.nvtx.range_pop

_state = {"harness": False, "model": False}


class _Range:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        _push(self.name)

    def __exit__(self, *exc):
        _pop()


class _NoRange:
    __slots__ = ()

    def __enter__(self):
        pass

    def __exit__(self, *exc):
        pass


_NO_RANGE = _NoRange()


def configure(harness: bool, model: bool) -> None:
    _state["harness"], _state["model"] = harness, model


def range(name: str):  # noqa: A001 - reads as nvtx.range(...)
    return _Range(name) if _state["harness"] else _NO_RANGE


def model_range(name: str):
    return _Range(name) if _state["model"] else _NO_RANGE
