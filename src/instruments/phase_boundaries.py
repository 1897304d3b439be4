"""Where a training step's phases begin, seen from outside the runner through torch's global hooks.

A module called while no other module runs is the step's forward: the harness calls one module for the model
and its loss (training.LanguageModelLoss), so that call's start and end are forward's start and backward's.
torch.optim's global step hooks give the optimizer's start and end; the runner's zero_grad follows.
The hooks exist only inside the `with`, so nothing is paid without the instrument that uses them.
"""

import contextlib

from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

FORWARD = "forward"
BACKWARD = "backward"
OPTIMIZER = "optimizer"
AFTER_OPTIMIZER = "zero_grad"
BETWEEN_STEPS = "between steps"


@contextlib.contextmanager
def phase_boundaries(on_boundary, after_forward: str = BACKWARD, modules: bool = True):
    """Call on_boundary(name of the phase that starts) at each boundary; `modules=False` leaves modules unhooked
    (torch.compile: hooks added after compiling would be traced into, or guard, the compiled graph)."""
    depth = [0]

    def model_starts(module, args):
        if depth[0] == 0:
            on_boundary(FORWARD)
        depth[0] += 1

    def model_ends(module, args, output):
        depth[0] -= 1
        if depth[0] == 0:
            on_boundary(after_forward)

    handles = [register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: on_boundary(OPTIMIZER)),
               register_optimizer_step_post_hook(lambda optimizer, args, kwargs: on_boundary(AFTER_OPTIMIZER))]
    if modules:
        handles += [register_module_forward_pre_hook(model_starts),
                    register_module_forward_hook(model_ends, always_call=True)]  # keeps depth right if forward raises
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
