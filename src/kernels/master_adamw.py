"""AdamW on fp32 master weights for a model that computes with bf16 weights: mixed precision without autocast's casts.

Under autocast every linear weight is cast fp32 -> bf16 in each forward and every weight gradient bf16 -> fp32 in
each backward: 12 bytes of traffic per parameter and step. Without them the 2.7B preset's step went from 226 to
205 ms on an H100 (docs/results/fast_path_h100_2026-11-24.md). Here the model's linear weights are bf16 Parameters, their gradients
arrive in bf16, and the fp32 master weights live in the optimizer, whose one pass per parameter reads the master
weight, the gradient and both moments and writes them back together with the new bf16 weight: the same bytes as
torch's fused AdamW, and no cast kernels. The arithmetic is torch.optim.AdamW's, in fp32: a bf16 weight is the
master weight rounded, as autocast's cast is, and a bf16 gradient is what autocast's matmul produced before its
cast. Parameters left in fp32 (embeddings, norms) are updated in place by the same pass.

lr and the step count live in device memory, so a CUDA graph can record the step (as torch's capturable AdamW).
One step count per parameter group: every parameter is expected to have a gradient at every step.
"""

import math

import torch
import triton
import triton.language as tl

from src.kernels.triton_interpreter import interpreted

BLOCK = 2048  # elements per program; memory-bound, so any size that fills the GPU does


@triton.jit
def _round_to_bf16(x):
    """fp32 -> bf16, round to nearest even, by hand: Triton's interpreter truncates in .to(tl.bfloat16) (3.9), the
    GPU rounds; done on the bits, both agree. (No NaN special case: a NaN master is lost either way.)"""
    bits = x.to(tl.uint32, bitcast=True)
    bits += 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _adamw_kernel(master_ptr, weight_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, lr_ptr, step_ptr, n,
                  beta1, beta2, log2_beta1, log2_beta2, eps, weight_decay,
                  WRITE_WEIGHT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    lr = tl.load(lr_ptr)
    step = tl.load(step_ptr)
    p = tl.load(master_ptr + offs, mask=mask)
    g = tl.load(grad_ptr + offs, mask=mask).to(tl.float32)
    m = tl.load(exp_avg_ptr + offs, mask=mask)
    v = tl.load(exp_avg_sq_ptr + offs, mask=mask)
    p = p * (1.0 - lr * weight_decay)
    m = m + (1.0 - beta1) * (g - m)  # torch's exp_avg.lerp_(grad, 1 - beta1)
    v = v * beta2 + (1.0 - beta2) * g * g
    bias_correction1 = 1.0 - tl.exp2(step * log2_beta1)  # 1 - beta1 ** step
    bias_correction2_sqrt = tl.sqrt_rn(1.0 - tl.exp2(step * log2_beta2))
    denom = tl.div_rn(tl.sqrt_rn(v), bias_correction2_sqrt) + eps
    p = p - tl.div_rn(lr, bias_correction1) * tl.div_rn(m, denom)
    tl.store(master_ptr + offs, p, mask=mask)
    tl.store(exp_avg_ptr + offs, m, mask=mask)
    tl.store(exp_avg_sq_ptr + offs, v, mask=mask)
    if WRITE_WEIGHT:  # the bf16 weight: the master rounded to nearest, ties to even, as autocast's cast rounds
        tl.store(weight_ptr + offs, _round_to_bf16(p), mask=mask)


def adamw_update_reference(master, weight, grad, exp_avg, exp_avg_sq, lr, step, beta1, beta2, eps, weight_decay):
    """The same update in torch ops (torch.optim.AdamW's single-tensor order); weight (bf16) gets the rounded master,
    or is None when the master is the parameter itself. lr and step are tensors or numbers."""
    lr, step = float(lr), float(step)
    g = grad.float()
    master.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
    master.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
    if weight is not None:
        weight.copy_(master)


def use_triton(t: torch.Tensor) -> bool:
    return t.is_cuda or interpreted()


class MasterWeightAdamW(torch.optim.Optimizer):
    """torch.optim.AdamW's update for `params`; a parameter found in `masters` (bf16 parameter -> its fp32 master
    weight, see bf16_with_masters) is updated through its master and receives the rounded result."""

    def __init__(self, params, masters: dict | None = None, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        masters = masters or {}
        for group in self.param_groups:
            device = group["params"][0].device
            group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32, device=device).clone()
            group["step"] = torch.zeros((), dtype=torch.float32, device=device)
            for p in group["params"]:
                master = masters.get(p, p)
                if master.dtype != torch.float32 or master.shape != p.shape or not master.is_contiguous():
                    raise ValueError(f"master weights must be contiguous float32 tensors shaped like their "
                                     f"parameter; got {master.dtype} {tuple(master.shape)} for {tuple(p.shape)}")
                # Created here, not at the first step: a CUDA graph's warm-up can save and restore all of it.
                self.state[p] = {"master": master, "exp_avg": torch.zeros_like(master),
                                 "exp_avg_sq": torch.zeros_like(master)}

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MasterWeightAdamW.step takes no closure")
        for group in self.param_groups:
            group["step"] += 1
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                master, grad = state["master"], p.grad.contiguous()
                weight = None if master is p else p
                if not use_triton(p):
                    adamw_update_reference(master, weight, grad, state["exp_avg"], state["exp_avg_sq"], group["lr"],
                                           group["step"], beta1, beta2, group["eps"], group["weight_decay"])
                    continue
                n = master.numel()
                _adamw_kernel[(triton.cdiv(n, BLOCK),)](
                    master, master if weight is None else weight, grad, state["exp_avg"], state["exp_avg_sq"],
                    group["lr"], group["step"], n, beta1, beta2, math.log2(beta1), math.log2(beta2), group["eps"],
                    group["weight_decay"], WRITE_WEIGHT=weight is not None, BLOCK=BLOCK)


def bf16_with_masters(params) -> dict:
    """Turn each parameter into a bf16 Parameter in place; -> {parameter: its fp32 master weight (the old values)}."""
    masters = {}
    for p in params:
        master = p.detach().clone()
        p.data = master.to(torch.bfloat16)
        masters[p] = master
    return masters
