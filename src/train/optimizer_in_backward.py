"""AdamW inside the backward pass: each parameter is stepped, and its gradient freed, as soon as that gradient is ready.

    optimizer = OptimizerInBackward(model.parameters(), lr=1e-4, fused=True)
    loss.backward()         # every parameter has been updated when this returns; no .grad is left
    optimizer.step()        # a no-op, so a train step written for an optimizer runs unchanged
    optimizer.zero_grad()

How: one torch.optim.AdamW per parameter, stepped from the parameter's post-accumulate-grad hook (autograd runs it
once the gradient is fully accumulated, i.e. after every use of the parameter in backward), then the gradient
is set to None. Two things follow. Memory: at most the gradients still in flight exist at once, not a whole
model's worth (the 2.7B preset's 3.41e9 fp32 gradients, 13.6 GB, are never all alive). Time: the optimizer's memory
traffic interleaves with backward's kernels instead of following them (issue 19: 24.8 ms of the 2.7B step).
The result is the plain step's: a parameter is changed only after autograd has finished every computation that
reads it, and a per-parameter AdamW does exactly what one AdamW over all of them does to each.

What cannot combine with it (each needs all gradients before any update, or updates from somewhere else):
- gradient accumulation over micro-batches: each backward would step; accumulate inside one backward instead;
- GradScaler (fp16): its unscale and inf/NaN check over all gradients must precede every step; use bf16;
- clipping by the global gradient norm (the project does not clip);
- data parallelism that synchronises gradients after the hook fires: our DDPs and ZeRO-1 all-reduce after
  backward (the step would use this rank's unsynchronised gradient), torch DDP's reducer all-reduces buckets
  asynchronously from its own hooks with no ordering against ours, our FSDP and FSDP2 reduce-scatter into
  sharded gradients outside autograd's accumulation. Single process only (tested with nothing distributed);
- CUDA graph capture of backward: would capture every AdamW step too; needs capturable=True and is untested;
- a separate optimizer phase in the timings: the optimizer's time now lies inside backward.
"""

from typing import Iterable

import torch
import torch.nn as nn


class OptimizerInBackward:
    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, fused: bool | None = None, **adamw_kwargs):
        """torch.optim.AdamW's arguments and defaults; fused=True runs each parameter's step as one fused kernel."""
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("OptimizerInBackward got no parameters that require grad")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("OptimizerInBackward got a parameter twice: it would be stepped twice per backward")
        self.optimizers = [torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                             fused=fused, **adamw_kwargs) for p in self.params]
        self._handles = [p.register_post_accumulate_grad_hook(self._step_hook(opt))
                         for p, opt in zip(self.params, self.optimizers)]

    @staticmethod
    def _step_hook(optimizer: torch.optim.Optimizer):
        def step_and_free(param: torch.Tensor) -> None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # the gradient is applied: free it now

        return step_and_free

    @property
    def param_groups(self) -> list[dict]:
        """One group per parameter (what an LR scheduler or a train step that sets group["lr"] walks over)."""
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property
    def state(self) -> dict:
        """Every parameter's AdamW state, as torch.optim.Optimizer.state holds it (parameter -> {name: tensor})."""
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def step(self, closure=None) -> None:
        """Nothing left to do: every parameter was stepped in backward."""
        if closure is not None:
            raise ValueError("OptimizerInBackward.step takes no closure: the step happens inside backward")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Gradients are freed in backward already; clears any left by a backward that skipped a hook."""
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"per_parameter": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        saved = len(state["per_parameter"])
        if saved != len(self.optimizers):
            raise ValueError(f"state for {saved} parameters, this optimizer has {len(self.optimizers)}")
        for opt, s in zip(self.optimizers, state["per_parameter"]):
            opt.load_state_dict(s)

    def remove(self) -> None:
        """Unhook from the parameters: backward computes gradients again without stepping."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
