"""Name every module call in a torch.profiler trace: a `module: <class>` range around each forward, while active.

The harness marks its phases with NVTX, which torch.profiler does not record, and RMSNorm or attention are
compositions of plain ops that no op name identifies. Global forward hooks (the same for every module, so the
runner and the model need no change) open a record_function range per call; the trace summary reads them to
put RMSNorm's dozen elementwise ops under normalisation, and a reader of the trace sees the model's structure.
The hooks exist only inside `with module_ranges():`, so a run without --trace pays nothing. Not used under
torch.compile: hooks added after compiling would be traced into, or guard, the compiled graph.
"""

import contextlib

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

MODULE_RANGE_PREFIX = "module: "


@contextlib.contextmanager
def module_ranges():
    open_ranges = []

    def enter(module, args):
        scope = torch.profiler.record_function(MODULE_RANGE_PREFIX + type(module).__name__)
        scope.__enter__()
        open_ranges.append(scope)

    def leave(module, args, output):
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    pre = register_module_forward_pre_hook(enter)
    post = register_module_forward_hook(leave, always_call=True)  # always_call: close the range if forward raises
    try:
        yield
    finally:
        pre.remove()
        post.remove()
        while open_ranges:
            open_ranges.pop().__exit__(None, None, None)
