"""AdamW of each transformer block stepped on a side CUDA stream as soon as the block's gradients are ready, so its
memory-bound update overlaps the compute-bound backward of the blocks before it.

    groups, rest = split_by_block(model.parameters(), blocks)
    optimizer = OverlappedOptimizer(groups, lambda ps: torch.optim.AdamW(ps, fused=True), rest=rest)
    loss.backward()         # each block's AdamW is launched on the side stream from inside backward
    optimizer.step()        # the current stream waits for the side stream, then the rest (embedding, head) steps
    optimizer.zero_grad()

Why: --optimizer in_backward steps each parameter from its hook on backward's own stream, so the steps serialise
with backward's kernels (on an H200 the 2.7B backward grew 35.7 ms for a 24.8 ms optimizer phase removed). Here a
group's step runs on another stream: backward's matmuls and the update's memory traffic can share the GPU.

How: one inner optimizer per group (make_optimizer(params)). Each parameter's post-accumulate-grad hook marks it
ready; the group's last one records an event on the current (backward) stream, the side stream waits on it and the
group's optimizer steps there. The gradients stay alive until zero_grad, after step() has made the current stream
wait, and each is also record_stream'ed on the side stream, so the caching allocator cannot hand its memory to a
later allocation while the update may still read it, whenever it is freed. On CPU the hook steps in place.

The rest (the parameters of no block, and any parameter listed in two groups, such as a head tied to the embedding)
steps in step(), on the current stream: its last gradient, the embedding's, is the last of backward anyway, so a
hook could launch it no earlier, and a tied weight's gradient is only whole once both its uses are done.

The result is the plain step's: a parameter is updated only after autograd has finished every computation that reads
it (its hook fires after its gradient is fully accumulated), and one AdamW per group does to each parameter what one
AdamW over all of them does. The overlap needs a block's gradients to arrive while earlier blocks are still in
backward: eager or --compile_scope blocks; a model compiled whole yields every gradient at the end of its one
backward graph (the result is the same, the overlap is gone).

Refused with what in_backward is refused with (src/spec.py): GradScaler (fp16), every --parallel strategy, CUDA
graphs; a second backward before step() (gradient accumulation) raises, since a group would be stepped twice.
"""

from typing import Callable, Iterable

import torch
import torch.nn as nn


def split_by_block(parameters: Iterable[nn.Parameter], blocks: Iterable[nn.Module]):
    """-> (one parameter list per block, the parameters of no block): OverlappedOptimizer's groups and rest."""
    groups = [list(block.parameters()) for block in blocks]
    in_blocks = {id(p) for group in groups for p in group}
    return groups, [p for p in parameters if id(p) not in in_blocks]


class OverlappedOptimizer:
    def __init__(self, groups: Iterable[Iterable[nn.Parameter]],
                 make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
                 rest: Iterable[nn.Parameter] = ()):
        """groups: parameter lists stepped from backward as each completes (one per transformer block); rest:
        parameters stepped in step(). A parameter listed more than once moves to rest (see the module docstring)."""
        groups = [[p for p in group if p.requires_grad] for group in groups]
        rest = [p for p in rest if p.requires_grad]
        listed: dict[int, int] = {}  # id -> how many groups (rest included) list it
        for group in [*groups, rest]:
            for pid in {id(p) for p in group}:
                listed[pid] = listed.get(pid, 0) + 1
        shared = [p for group in groups for p in group if listed[id(p)] > 1]
        groups = [_unique([p for p in group if listed[id(p)] == 1]) for group in groups]
        self.groups = [group for group in groups if group]
        self.rest = _unique(rest + shared)
        if not self.groups and not self.rest:
            raise ValueError("OverlappedOptimizer got no parameters that require grad")
        self.optimizers = [make_optimizer(group) for group in self.groups]
        self.rest_optimizer = make_optimizer(self.rest) if self.rest else None
        device = (self.groups or [self.rest])[0][0].device
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None  # None: step in the hook (CPU)
        self._ready = [set() for _ in self.groups]  # ids of the parameters whose gradient is whole, this backward
        self._stepped = [False] * len(self.groups)
        self._handles = [p.register_post_accumulate_grad_hook(self._ready_hook(i))
                         for i, group in enumerate(self.groups) for p in group]

    def _ready_hook(self, i: int):
        def mark_ready(param: torch.Tensor) -> None:
            if self._stepped[i] or id(param) in self._ready[i]:
                raise RuntimeError(f"OverlappedOptimizer: a second backward before step() (group {i} has stepped or "
                                   "has this gradient already); accumulating gradients over backwards would step a "
                                   "group twice: call step() after each backward")
            self._ready[i].add(id(param))
            if len(self._ready[i]) == len(self.groups[i]):
                self._step_group(i)

        return mark_ready

    def _step_group(self, i: int) -> None:
        self._stepped[i] = True
        if self.side is None:
            self.optimizers[i].step()
            return
        self.side.wait_stream(torch.cuda.current_stream(self.side.device))  # the group's gradients are written
        for p in self.groups[i]:
            if p.grad is not None:
                p.grad.record_stream(self.side)  # freed on the current stream: not reused until the update has read it
        with torch.cuda.stream(self.side):
            self.optimizers[i].step()

    @property
    def param_groups(self) -> list[dict]:
        """Every inner optimizer's groups (what an LR scheduler or a train step that sets group["lr"] walks over)."""
        return [group for opt in self._all_optimizers() for group in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for opt in self._all_optimizers() for p, s in opt.state.items()}

    def step(self, closure=None) -> None:
        """Wait for the side stream's updates (the next forward reads the weights), then step the rest and any group
        whose gradients were not all computed this backward (as one AdamW skips a parameter without a gradient)."""
        if closure is not None:
            raise ValueError("OverlappedOptimizer.step takes no closure: the blocks step inside backward")
        if self.side is not None:
            torch.cuda.current_stream(self.side.device).wait_stream(self.side)
        for i, opt in enumerate(self.optimizers):
            if not self._stepped[i]:
                opt.step()
        if self.rest_optimizer is not None:
            self.rest_optimizer.step()
        self._ready = [set() for _ in self.groups]
        self._stepped = [False] * len(self.groups)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self._all_optimizers():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"per_group": [opt.state_dict() for opt in self._all_optimizers()]}

    def load_state_dict(self, state: dict) -> None:
        optimizers = self._all_optimizers()
        if len(state["per_group"]) != len(optimizers):
            raise ValueError(f"state for {len(state['per_group'])} groups, this optimizer has {len(optimizers)}")
        for opt, s in zip(optimizers, state["per_group"]):
            opt.load_state_dict(s)

    def remove(self) -> None:
        """Unhook from the parameters: backward only computes gradients, and step() steps every group."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _all_optimizers(self) -> list[torch.optim.Optimizer]:
        return self.optimizers + ([self.rest_optimizer] if self.rest_optimizer is not None else [])


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]
