"""NVTX ranges for Nsight Systems: one nested name per sweep, step, phase and layer; free when switched off.

Two switches, because torch.compile cannot trace through range_push/range_pop without graph breaks:
`range` marks the harness's structure (configuration, warmup/measure, step, phase) and `model_range`
marks work inside the model (layers, attention parts), which the harness turns off under --compile.
"""

import contextlib

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


def configure(harness: bool, model: bool) -> None:
    _state["harness"], _state["model"] = harness, model


# Switched off, a range is contextlib.nullcontext: the one no-op context manager torch.compile traces through. A
# class of our own with empty __enter__/__exit__ broke the compiled graph at every `with` under torch 2.11 ("Dynamo
# does not know how to enter a `_NoRange` context manager"): the large preset's compiled step fell into ~10 graphs
# per layer, 70% of its step the GPU waiting for the host, its forward (84 ms) slower than eager (52 ms) on an H200.
def range(name: str):  # noqa: A001 - reads as nvtx.range(...)
    return _Range(name) if _state["harness"] else contextlib.nullcontext()


def model_range(name: str):
    return _Range(name) if _state["model"] else contextlib.nullcontext()
