"""Optimizer-in-backward trains exactly like AdamW stepped after backward (fp32, CPU, nothing distributed), frees
every gradient inside backward, and its no-op step/zero_grad stand in for an optimizer's."""

import copy
import functools

import pytest
import torch

from src.train.optimizer_in_backward import OptimizerInBackward

from tests.train.tiny_training import LR, loss_of, train_steps

STEPS = 4
train = functools.partial(train_steps, steps=STEPS)
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


# Exact equality (torch.equal), not a tolerance: each parameter gets the same gradient (it is updated only after
# autograd has finished everything that reads it) and the same single-tensor AdamW arithmetic, in the same order,
# whether one AdamW steps all parameters or one AdamW per parameter does; fused likewise runs the same kernel per
# element. Activation checkpointing recomputes a group's forward before any of its gradients exist, so the
# weights it reads are not yet updated: also exact.
@pytest.mark.parametrize("fused", [False, True], ids=["for-loop", "fused"])
@pytest.mark.parametrize("checkpointing_group", [0, 1], ids=["no-checkpointing", "blocks:1"])
def test_n_steps_equal_the_plain_adamw_step_after_backward(tiny_model, fused, checkpointing_group):
    plain, in_backward = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    expected = train(plain, torch.optim.AdamW(plain.parameters(), lr=LR, fused=fused), checkpointing_group)
    got = train(in_backward, OptimizerInBackward(in_backward.parameters(), lr=LR, fused=fused), checkpointing_group)
    assert got == expected
    for (name, p), q in zip(plain.named_parameters(), in_backward.parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(plain.lm_head.weight, tiny_model.lm_head.weight)  # it did train


def test_every_gradient_is_applied_and_freed_inside_backward(tiny_model):
    model = copy.deepcopy(tiny_model)
    optimizer = OptimizerInBackward(model.parameters(), lr=LR)
    before = [p.detach().clone() for p in model.parameters()]
    live_grads = []  # gradients alive right after each of our hooks (hooks run in the order registered)
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(
            lambda _p: live_grads.append(sum(q.grad is not None for q in model.parameters())))
    loss_of(model, 0).backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))  # all stepped in backward
    assert len(live_grads) == len(before) and max(live_grads) == 0  # each freed before the next is ready
    after_backward = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():  # a gradient left over from elsewhere: step() must not apply it
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), after_backward))
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_param_groups_state_and_remove(tiny_model):
    model = copy.deepcopy(tiny_model)
    optimizer = OptimizerInBackward(model.parameters(), lr=LR)
    assert len(optimizer.param_groups) == len(list(model.parameters()))
    for group in optimizer.param_groups:  # what an LR schedule does
        group["lr"] = 0.0
    frozen = [p.detach().clone() for p in model.parameters()]
    loss_of(model, 0).backward()
    # lr 0 with weight decay 0.01: p -= lr * wd * p -> unchanged; the moments moved
    assert all(torch.equal(p, f) for p, f in zip(model.parameters(), frozen))
    state = optimizer.state_dict()
    assert all(s["state"][0]["step"] == 1 for s in state["per_parameter"])
    optimizer.remove()
    loss_of(model, 1).backward()
    assert all(p.grad is not None for p in model.parameters())  # unhooked: a plain backward again
    other = OptimizerInBackward(copy.deepcopy(model).parameters(), lr=LR)
    other.load_state_dict(state)
    assert other.state_dict()["per_parameter"][0]["state"][0]["step"] == 1


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no parameters"):
        OptimizerInBackward([torch.nn.Parameter(torch.ones(2), requires_grad=False)])
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="twice"):
        OptimizerInBackward([p, p])
    with pytest.raises(ValueError, match="closure"):
        OptimizerInBackward([p]).step(lambda: 0.0)


def test_the_train_step_with_optimizer_in_backward_trains_like_the_plain_step():
    """--optimizer in_backward through the RunSpec and TrainStep (fp32, CPU): the same weights after 3 steps as
    torch's AdamW stepped after backward, and its optimizer phase is left with nothing to do."""
    from src.harness.timing import make_timer
    from src.spec import RunSpec
    from src.train.step import TrainStep, build_model

    def trained(optimizer):
        spec = RunSpec(size="tiny", d_model=64, d_ff=256, num_heads=4, num_layers=2, context_length=16,
                       batch_size=2, mode="train", optimizer=optimizer)
        torch.manual_seed(0)
        step = TrainStep(spec, build_model(spec))
        tokens = torch.randint(0, spec.vocab_size, (3, 2, 17), generator=torch.Generator().manual_seed(1))
        timer = make_timer("sync", "cpu")
        for batch in tokens:
            step(batch[:, :-1], batch[:, 1:], timer)
            timer.next_step()
        return {n: p.detach().clone() for n, p in step.model.named_parameters()}, step

    plain, _ = trained("default")
    in_backward, step = trained("in_backward")
    assert type(step.optimizer).__name__ == "OptimizerInBackward"
    for name in plain:
        assert torch.equal(plain[name], in_backward[name]), name
