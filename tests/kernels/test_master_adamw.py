"""MasterWeightAdamW against torch.optim.AdamW: the Triton kernel (CUDA, or the interpreter on CPU) and the
torch-ops reference, fp32 parameters and bf16 parameters with fp32 masters, under an lr schedule."""

import pytest
import torch

from src.kernels.master_adamw import MasterWeightAdamW, adamw_update_reference, bf16_with_masters

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(33, 17), (4097,), (3, 5, 7)]  # ragged against the kernel's 2048-element blocks
HYPER = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
RTOL = 1e-5  # fp32 arithmetic in another order: a few ulps, amplified by m / sqrt(v) where v is small


def _torch_adamw(values):
    params = [torch.nn.Parameter(v.clone()) for v in values]
    return params, torch.optim.AdamW(params, foreach=False, **HYPER)


def _train(opt, params, grads_per_step):
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (i + 1) / 3)  # the lr changes every step
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g.to(p.dtype)
        opt.step()
        schedule.step()


def _grads(steps, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(s, generator=g).to(dtype).to(DEVICE) for s in SHAPES] for _ in range(steps)]


def test_fp32_parameters_follow_torch_adamw():
    start = [torch.randn(s, device=DEVICE) for s in SHAPES]
    grads = _grads(4)
    ours = [torch.nn.Parameter(v.clone()) for v in start]
    _train(MasterWeightAdamW(ours, **HYPER), ours, grads)
    theirs, opt = _torch_adamw(start)
    _train(opt, theirs, grads)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=1e-7)


def test_bf16_parameters_follow_their_masters():
    """Masters move as torch's AdamW moves fp32 weights given the bf16 gradients; the bf16 weights are the masters
    rounded, exactly."""
    start = [torch.randn(s, device=DEVICE) for s in SHAPES]
    grads = _grads(4, torch.bfloat16)
    ours = [torch.nn.Parameter(v.clone()) for v in start]
    masters = bf16_with_masters(ours)
    assert all(p.dtype == torch.bfloat16 for p in ours)
    _train(MasterWeightAdamW(ours, masters=masters, **HYPER), ours, grads)
    theirs, opt = _torch_adamw(start)
    _train(opt, theirs, [[g.float() for g in step] for step in grads])
    for p, b, before in zip(ours, theirs, start):
        torch.testing.assert_close(masters[p], b, rtol=RTOL, atol=1e-7)
        assert torch.equal(p, masters[p].to(torch.bfloat16))
        assert not torch.equal(masters[p], before)  # it did move


def test_reference_update_is_torch_adamw():
    start = torch.randn(100, device=DEVICE)
    master, exp_avg, exp_avg_sq = start.clone(), torch.zeros(100, device=DEVICE), torch.zeros(100, device=DEVICE)
    (theirs,), opt = _torch_adamw([start])
    for step in range(1, 4):
        g = torch.randn(100, device=DEVICE)
        adamw_update_reference(master, None, g, exp_avg, exp_avg_sq, HYPER["lr"], step, *HYPER["betas"],
                               HYPER["eps"], HYPER["weight_decay"])
        theirs.grad = g
        opt.step()
    torch.testing.assert_close(master, theirs.detach(), rtol=RTOL, atol=1e-7)


def test_a_master_of_the_wrong_kind_is_refused():
    p = torch.nn.Parameter(torch.zeros(4, 4, device=DEVICE, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="master weights must be contiguous float32"):
        MasterWeightAdamW([p], masters={p: torch.zeros(4, 4, device=DEVICE, dtype=torch.bfloat16)})
