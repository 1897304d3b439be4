"""Activation checkpointing in groups of N blocks: the same loss and gradients, and the memory estimate's two parts."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from src.model import ModelConfig, TransformerLM
from src.model.families.cs336 import Cs336Model
from src.model.memory import checkpointed_activation_bytes, saved_activation_bytes
from tests.model.live_bytes import LiveBytes, cpu_autocast_softmax_bytes, owned_storages

CONFIG = ModelConfig(d_model=96, d_ff=200, num_layers=3, num_heads=6, vocab_size=500, context_length=64)
B, T = 3, 40
GROUPS = [1, 2, 4]  # every block, a split that does not divide the layers (2+1), more than there are layers


def autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def loss_and_gradients(config, group, precision, tokens):
    torch.manual_seed(0)
    model = TransformerLM(config, checkpoint_group=group)
    with autocast(precision):
        loss = F.cross_entropy(model(tokens).flatten(0, 1).float(), tokens.flatten())
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("attention", ["naive", "sdpa"])
@pytest.mark.parametrize("group", GROUPS)
def test_checkpointing_gives_the_same_loss_and_gradients(group, attention, precision):
    config = CONFIG.with_(attention=attention)
    tokens = torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
    loss, grads = loss_and_gradients(config, 0, precision, tokens)
    loss_ckpt, grads_ckpt = loss_and_gradients(config, group, precision, tokens)
    # Bit-for-bit, in fp32 and under bf16 autocast: the recomputation runs the same CPU kernels on the same inputs
    # in the same autocast state, so there is nothing for a tolerance to absorb.
    assert torch.equal(loss, loss_ckpt)
    assert grads.keys() == grads_ckpt.keys()
    for name in grads:
        assert torch.equal(grads[name], grads_ckpt[name]), name


def test_forward_without_grad_recomputes_nothing_and_matches():
    torch.manual_seed(0)
    model = TransformerLM(CONFIG, checkpoint_group=2)
    tokens = torch.randint(0, CONFIG.vocab_size, (B, T))
    with torch.no_grad():
        checkpointed = model(tokens)
        model.checkpoint_group = 0
        assert torch.equal(checkpointed, model(tokens))


@pytest.mark.parametrize("group", [-1, 1.5, "2"])
def test_a_bad_group_is_refused(group):
    with pytest.raises(ValueError, match="checkpoint_group"):
        TransformerLM(CONFIG, checkpoint_group=group)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("attention", ["naive", "sdpa"])
@pytest.mark.parametrize("group", GROUPS)
def test_what_the_forward_keeps_matches_the_estimate(group, attention, precision):
    """Everything still alive after the forward and its loss (outside autocast, whose weight cache is then gone)."""
    config = CONFIG.with_(attention=attention)
    model = TransformerLM(config, checkpoint_group=group)
    tokens = torch.randint(0, config.vocab_size, (B, T))
    with LiveBytes(owned_storages(model)) as live:
        with autocast(precision):
            logits = model(tokens)  # held, as tests/model/test_flops.py holds them: the estimate counts the logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
        kept = live.current
    assert loss.requires_grad
    # Within 10%, as the estimate of the whole model (tests/model/test_flops.py): it leaves out the token ids and
    # RMSNorm's 1/rms. Measured here: within 0.3%.
    assert checkpointed_activation_bytes(config.architecture(), B, T, precision, group).kept == \
        pytest.approx(kept, rel=0.10)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("attention", ["naive", "sdpa"])
@pytest.mark.parametrize("group", GROUPS)
def test_what_one_group_remakes_matches_what_autograd_saves_for_its_blocks(group, attention, precision):
    """The re-made part is what autograd saves when the group's N blocks run with grad: counted with saved-tensor
    hooks, as test_flops.py counts the whole model's."""
    config = CONFIG.with_(attention=attention)
    model = TransformerLM(config)
    owned = owned_storages(model)
    x = torch.randn(B, T, config.d_model, requires_grad=True)  # a group's input: the fp32 residual stream
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in owned and storage.data_ptr() != x.untyped_storage().data_ptr():
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(precision):
        model._blocks(x, 0, group)
    a = config.architecture()
    estimate = checkpointed_activation_bytes(a, B, T, precision, group).re_made
    softmax = cpu_autocast_softmax_bytes(a.with_(num_layers=min(group, a.num_layers)), B, T, precision)
    assert estimate == pytest.approx(sum(saved.values()) + softmax, rel=0.10)


def test_the_estimate_shrinks_with_checkpointing_and_without_it_is_unchanged():
    config = ModelConfig(d_model=2560, d_ff=10240, num_layers=32, num_heads=32, attention="sdpa")  # 2.7B
    model = Cs336Model("2.7B", config)
    plain = model.memory_estimate(4, 2048, "train", "bf16")
    assert plain.activations == saved_activation_bytes(config.architecture(), 4, 2048, "bf16")
    by_group = {n: model.memory_estimate(4, 2048, "train", "bf16", checkpoint_group=n) for n in (1, 2, 4, 8, 16, 32)}
    assert all(by_group[n].activations < plain.activations for n in (1, 2, 4, 8, 16))
    assert all(e.parameters == plain.parameters and e.optimizer_state == plain.optimizer_state
               for e in by_group.values())
    # One group of all 32 blocks keeps its input and re-makes everything: no memory saved, only time lost.
    assert by_group[32].activations == plain.activations
