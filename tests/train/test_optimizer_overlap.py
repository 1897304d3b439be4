"""--optimizer overlap: each block's AdamW stepped once the block's gradients are ready trains exactly like AdamW
stepped after backward (fp32 and bf16 weights with masters, CPU), refuses a second backward, keeps a tied weight in
the rest group, and runs through the spec, the train step and the benchmark; on CUDA, on its side stream."""

import copy
import functools

import pytest
import torch

from src.model.transformer import TransformerLM
from src.train.optimizer_overlap import OverlappedOptimizer, split_by_block

from tests.conftest import needs_cuda
from tests.train.tiny_training import LR, TINY, loss_of, train_steps
from tests.specs import tiny_spec

STEPS = 3
train = functools.partial(train_steps, steps=STEPS)
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


def overlapped(model, **adamw) -> OverlappedOptimizer:
    groups, rest = split_by_block(model.parameters(), model.layers)
    return OverlappedOptimizer(groups, lambda params: torch.optim.AdamW(params, lr=LR, **adamw), rest=rest)


# Exact equality, as for in_backward (tests/train/test_optimizer_in_backward.py): each parameter gets the same
# gradient (a block is stepped only after autograd has finished everything that reads it) and the same AdamW
# arithmetic whether one AdamW steps all parameters or one per block does.
@pytest.mark.parametrize("fused", [False, True], ids=["for-loop", "fused"])
@pytest.mark.parametrize("checkpointing_group", [0, 1], ids=["no-checkpointing", "blocks:1"])
def test_n_steps_equal_the_plain_adamw_step_after_backward(tiny_model, fused, checkpointing_group):
    plain, overlap = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    expected = train(plain, torch.optim.AdamW(plain.parameters(), lr=LR, fused=fused), checkpointing_group)
    got = train(overlap, overlapped(overlap, fused=fused), checkpointing_group)
    assert got == expected
    for (name, p), q in zip(plain.named_parameters(), overlap.parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(plain.lm_head.weight, tiny_model.lm_head.weight)  # it did train


def test_blocks_step_inside_backward_and_the_rest_in_step(tiny_model):
    model = copy.deepcopy(tiny_model)
    optimizer = overlapped(model)
    blocks = [p for layer in model.layers for p in layer.parameters()]
    rest = [model.token_embeddings.weight, model.ln_final.weight, model.lm_head.weight]
    assert [len(g) for g in optimizer.groups] == [len(list(layer.parameters())) for layer in model.layers]
    assert [id(p) for p in optimizer.rest] == [id(p) for p in rest]
    before = {id(p): p.detach().clone() for p in model.parameters()}
    loss_of(model, 0).backward()
    assert all(not torch.equal(p, before[id(p)]) for p in blocks)  # stepped from the hooks
    assert all(torch.equal(p, before[id(p)]) for p in rest)
    optimizer.step()
    assert all(not torch.equal(p, before[id(p)]) for p in rest)
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_a_second_backward_before_step_is_refused(tiny_model):
    model = copy.deepcopy(tiny_model)
    optimizer = overlapped(model)
    loss_of(model, 0).backward()
    with pytest.raises(RuntimeError, match="second backward before step"):
        loss_of(model, 1).backward()
    optimizer.step()  # the counters start again
    optimizer.zero_grad()
    loss_of(model, 2).backward()
    optimizer.step()


def test_a_tied_or_twice_listed_parameter_steps_once_in_the_rest_group():
    torch.manual_seed(0)
    tied = TransformerLM(TINY.with_(tie_embeddings=True))
    plain, overlap = copy.deepcopy(tied), copy.deepcopy(tied)
    assert train(overlap, overlapped(overlap)) == train(plain, torch.optim.AdamW(plain.parameters(), lr=LR))
    for (name, p), q in zip(plain.named_parameters(), overlap.parameters()):
        assert torch.equal(p, q), name
    # A parameter two groups list (a weight shared by two blocks, say) is stepped once, in step()
    shared, a, b = (torch.nn.Parameter(torch.ones(3)) for _ in range(3))
    optimizer = OverlappedOptimizer([[a, shared], [b, shared, b]], lambda ps: torch.optim.AdamW(ps, lr=LR))
    assert [[id(p) for p in g] for g in optimizer.groups] == [[id(a)], [id(b)]]
    assert [id(p) for p in optimizer.rest] == [id(shared)]
    (a * shared).sum().backward()
    assert not torch.equal(a, torch.ones(3)) and torch.equal(shared, torch.ones(3))
    optimizer.step()
    assert optimizer.state[shared]["step"] == 1 and b not in optimizer.state  # b had no gradient: not stepped


def test_param_groups_state_dict_round_trip_and_remove(tiny_model):
    model = copy.deepcopy(tiny_model)
    optimizer = overlapped(model)
    assert len(optimizer.param_groups) == TINY.num_layers + 1  # one AdamW per block, one for the rest
    train(model, optimizer)
    state = copy.deepcopy(optimizer.state_dict())  # torch's state_dict holds the live moments
    copied = copy.deepcopy(model)
    other = overlapped(copied)
    other.load_state_dict(state)
    for optimizer_ in (optimizer, other):  # the same next step from the same weights and state
        train(model if optimizer_ is optimizer else copied, optimizer_)
    for p, q in zip(model.parameters(), copied.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="state for 1 groups"):
        other.load_state_dict({"per_group": state["per_group"][:1]})
    optimizer.remove()
    frozen = [p.detach().clone() for p in model.parameters()]
    loss_of(model, 0).backward()
    assert all(torch.equal(p, f) for p, f in zip(model.parameters(), frozen))  # unhooked: a plain backward
    optimizer.step()  # and step() steps every group
    assert all(not torch.equal(p, f) for p, f in zip(model.parameters(), frozen))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no parameters"):
        OverlappedOptimizer([[torch.nn.Parameter(torch.ones(2), requires_grad=False)]], torch.optim.AdamW)
    with pytest.raises(ValueError, match="closure"):
        OverlappedOptimizer([[torch.nn.Parameter(torch.ones(2))]], torch.optim.AdamW).step(lambda: 0.0)


def trained(optimizer, device="cpu", steps=STEPS, **spec_and_step):
    """Weights after `steps` steps of the train step built for --optimizer `optimizer`, and the step."""
    from src.train.step import TrainStep, build_model

    step_options = {k: spec_and_step.pop(k) for k in ("bf16_weights", "fused_adamw") if k in spec_and_step}
    spec = tiny_spec(context_length=16, batch_size=2, optimizer=optimizer, device=device, **spec_and_step)
    torch.manual_seed(0)
    step = TrainStep(spec, build_model(spec), lr=LR, **step_options)
    tokens = torch.randint(0, spec.vocab_size, (steps, 2, 17), generator=torch.Generator().manual_seed(1))
    for batch in tokens.to(device):
        step(batch[:, :-1], batch[:, 1:], None)
    return {n: p.detach().clone() for n, p in step.model.named_parameters()}, step


def test_the_train_step_with_overlap_trains_like_the_plain_step():
    """--optimizer overlap through the RunSpec and TrainStep (fp32, CPU): the plain step's weights, exactly."""
    plain, _ = trained("default")
    overlap, step = trained("overlap")
    assert type(step.optimizer) is OverlappedOptimizer and not step.cuda_graphs
    for name in plain:
        assert torch.equal(plain[name], overlap[name]), name


def test_bf16_weights_with_masters_per_block_train_like_one_master_weight_adamw():
    """The fast recipe's optimizer split by block (each MasterWeightAdamW over its block's masters; CPU: the update's
    torch reference): the same bf16 weights and fp32 masters as one MasterWeightAdamW over the model."""
    from src.kernels.master_adamw import MasterWeightAdamW

    # Under Triton's CPU interpreter (tests/conftest.py) the update runs one program per 2048 elements: small shapes
    options = dict(precision="bf16", attention="sdpa", bf16_weights=True, steps=2, d_model=32, d_ff=128,
                   num_heads=2, vocab_size=512)
    ours, _ = trained("default", **options)  # bf16_weights=True: one MasterWeightAdamW (ours is refused on CPU)
    overlap, step = trained("overlap", **options)
    inner = step.optimizer.optimizers + [step.optimizer.rest_optimizer]
    assert all(type(opt) is MasterWeightAdamW for opt in inner)
    assert {p.dtype for p in overlap.values()} == {torch.float32, torch.bfloat16}
    for name in ours:
        assert torch.equal(ours[name], overlap[name]), name


@pytest.mark.parametrize("changes,message", [
    (dict(device="cuda", precision="fp16"), "optimizer: overlap steps parameters from their gradient hooks, before "
                                            "GradScaler could unscale"),
    (dict(parallel="ddp_overlap", nproc_per_node=2), "does not run with optimizer in_backward or overlap"),
    (dict(parallel="fsdp2", nproc_per_node=2), "does not run with optimizer in_backward or overlap"),
])
def test_runspec_refuses_overlap_with_what_in_backward_is_refused_with(changes, message):
    with pytest.raises(ValueError, match=message) as refused:
        tiny_spec(optimizer="overlap", **changes)
    assert "\n" not in str(refused.value)


def test_the_benchmark_runs_an_overlap_row_and_refuses_a_strategy_in_one_line(tmp_path, capsys):
    from src.harness.results import read_records
    from src.profiling.benchmark import main

    base = ["--device", "cpu", "--sizes", "tiny", "--mode", "train", "--context_length", "16", "--batch_size", "2"]
    assert main(base + ["--optimizer", "overlap", "--parallel", "ddp_overlap", "--nproc_per_node", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "in_backward or overlap" in err
    output = tmp_path / "r.jsonl"
    assert main(base + ["--warmup_steps", "1", "--benchmark_steps", "1", "--isolate", "none",
                        "--optimizer", "default", "overlap", "--output", str(output)]) == 0
    records, _ = read_records(str(output))
    assert [(r["status"], r["config"]["optimizer"]) for r in records] == [("ok", "default"), ("ok", "overlap")]


@needs_cuda
@pytest.mark.parametrize("checkpointing_group", [0, 1], ids=["no-checkpointing", "blocks:1"])
def test_cuda_overlap_on_its_side_stream_trains_like_fused_adamw(tiny_model, checkpointing_group):
    """fp32 on CUDA: the updates run on the side stream while backward goes on; same kernels on the same values, so
    the weights after 3 steps agree with fused AdamW's to fp32 rounding at most (expected: exactly)."""
    plain, overlap = copy.deepcopy(tiny_model).cuda(), copy.deepcopy(tiny_model).cuda()
    expected = train(plain, torch.optim.AdamW(plain.parameters(), lr=LR, fused=True), checkpointing_group)
    optimizer = overlapped(overlap, fused=True)
    assert optimizer.side is not None
    got = train(overlap, optimizer, checkpointing_group)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    for (name, p), q in zip(plain.named_parameters(), overlap.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)


@needs_cuda
def test_cuda_fast_recipe_with_overlap_trains_like_the_fast_recipe_with_ours():
    """--recipe fast --optimizer overlap (bf16 weights, one MasterWeightAdamW per block on the side stream, compiled)
    against the recipe's own optimizer for large models, ours (bf16 weights, no CUDA graphs): the same weights."""
    options = dict(device="cuda", recipe="fast", precision="bf16", attention="sdpa")
    ours, _ = trained("ours", **options)
    overlap, step = trained("overlap", **options)
    assert step.bf16_weights and not step.cuda_graphs and step.optimizer.side is not None
    for name in ours:  # bf16 weights: a difference would be a whole bf16 ulp, so any tolerance is a loose one
        torch.testing.assert_close(overlap[name].float(), ours[name].float(), rtol=1e-6, atol=1e-7, msg=name)
