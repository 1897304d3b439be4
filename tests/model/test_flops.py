import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from src.model import ModelConfig, TransformerLM
from src.model.families.cs336 import Cs336Model
from src.model.flops import forward_flops, step_flops
from src.model.memory import forward_logits_bytes, saved_activation_bytes
from src.train.step import LanguageModelLoss
from tests.model.live_bytes import LiveBytes, cpu_autocast_softmax_bytes, owned_storages, saved_bytes

SHAPES = [  # (config, batch, seq): a preset-like one, odd sizes, a long sequence where attention dominates
    (ModelConfig(d_model=64, d_ff=256, num_layers=2, num_heads=4), 2, 16),
    (ModelConfig(d_model=96, d_ff=200, num_layers=3, num_heads=6, vocab_size=500, context_length=64), 3, 50),
    (ModelConfig(d_model=32, d_ff=64, num_layers=1, num_heads=2, vocab_size=101, context_length=512), 1, 512),
]


def counted_flops(config, batch, seq, backward):
    model = TransformerLM(config)
    tokens = torch.randint(0, config.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        if backward:
            loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("config,batch,seq", SHAPES)
def test_forward_flops_agree_with_flop_counter(config, batch, seq):
    assert forward_flops(config.architecture(), batch, seq) == pytest.approx(counted_flops(config, batch, seq, False),
                                                                            rel=0.01)


@pytest.mark.parametrize("config,batch,seq", SHAPES)
def test_train_step_flops_agree_with_flop_counter(config, batch, seq):
    counted = counted_flops(config, batch, seq, True)
    a = config.architecture()
    assert step_flops(a, batch, seq, "train") == pytest.approx(counted, rel=0.01)
    assert step_flops(a, batch, seq, "forward_backward") == step_flops(a, batch, seq, "train")


def measured_saved_bytes(config, batch, seq, precision):
    """Bytes of the distinct tensors autograd saves for backward (parameters excluded), plus the kept logits."""
    tokens = torch.randint(0, config.vocab_size, (batch, seq))
    return saved_bytes(TransformerLM(config), tokens, precision)


@pytest.mark.parametrize("attention", ["naive", "sdpa"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("config,batch,seq", SHAPES[:2] + [(ModelConfig(768, 3072, 2, 12), 2, 128)])
def test_activation_estimate_matches_what_autograd_saves(config, batch, seq, precision, attention):
    config = config.with_(attention=attention)
    a = config.architecture()
    measured = measured_saved_bytes(config, batch, seq, precision) + cpu_autocast_softmax_bytes(a, batch, seq, precision)
    # Within 10%: the estimate ignores small tensors (RMSNorm's 1/rms, masks, token ids).
    assert saved_activation_bytes(a, batch, seq, precision) == pytest.approx(measured, rel=0.10)


def test_memory_estimate_parts_follow_the_mode():
    model = Cs336Model("tiny", ModelConfig(d_model=64, d_ff=256, num_layers=2, num_heads=4))
    forward = model.memory_estimate(2, 16, "forward", "fp32")
    backward = model.memory_estimate(2, 16, "forward_backward", "fp32")
    train = model.memory_estimate(2, 16, "train", "fp32")
    assert forward.gradients == forward.optimizer_state == 0
    assert backward.gradients == backward.parameters and backward.optimizer_state == 0
    assert train.optimizer_state == 2 * train.parameters
    assert train.total == train.parameters * 4 + train.activations


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_forward_only_peak_matches_the_estimate_where_the_loss_dominates(precision):
    # vocab 4096 against d_model 32: the loss's logits, upcast and log-probabilities are nearly all of the peak
    config = ModelConfig(d_model=32, d_ff=64, num_layers=1, num_heads=2, vocab_size=4096, attention="sdpa")
    batch, seq = 2, 64
    model = LanguageModelLoss(TransformerLM(config))
    tokens = torch.randint(0, config.vocab_size, (batch, seq))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.no_grad(), autocast, LiveBytes(owned_storages(model)) as live:
        model(tokens, tokens)
    estimate = Cs336Model("t", config).memory_estimate(batch, seq, "forward", precision)
    # Within 10%: the hidden states (B*T*d_model) and the loss's small tensors are not counted.
    assert estimate.activations == pytest.approx(live.peak, rel=0.10)
    assert forward_logits_bytes(config.architecture(), batch, seq, precision) == batch * seq * 4096 * (8 if precision == "fp32" else 10)
