"""Every model family keeps the interface's promises (src/model/interface.py): FLOPs, activations, parameters.

For our model (the reference shape, and with GQA and a tied head) and for every shipped Hugging Face config at a
tiny width of the same architecture (tests/model/tiny_configs.py):
- forward FLOPs (analytic) within 1% of FlopCounterMode over a forward+backward it fully sees. The counter misses
  what runs in kernels without a FLOP formula: SDPA on CPU (all of its attention products) and transformers'
  grouped_mm experts (about 2/3 of a Mixtral layer's matmuls). So the reference is the same model built with eager
  attention (matmuls and a softmax) and eager experts (one F.linear per expert over the tokens routed to it).
  Ours is counted with its naive attention, which is plain matmuls too.
- the activation estimate within 10% of the bytes autograd saves (saved-tensor hooks), in fp32 and under bf16
  autocast, with and without checkpointing;
- parameters counted on the meta device equal the model's own count.
"""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from src.model.config import ModelConfig
from src.model.families.cs336 import Cs336Model
from src.model.families.hf import HfModel
from tests.model.live_bytes import LiveBytes, owned_storages, saved_bytes
from tests.model.tiny_configs import SHIPPED, tiny_model

B, T = 2, 24
OURS = {
    "cs336": Cs336Model("tiny", ModelConfig(d_model=64, d_ff=160, num_layers=2, num_heads=4, vocab_size=256,
                                            attention="sdpa")),
    "cs336-gqa-tied": Cs336Model("tiny-gqa", ModelConfig(d_model=64, d_ff=160, num_layers=2, num_heads=4,
                                                         num_kv_heads=2, tie_embeddings=True, vocab_size=256,
                                                         attention="sdpa")),
}
SPECS = {**OURS, **{name: tiny_model(name) for name in SHIPPED}}


def tokens(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", SPECS)
def test_step_flops_match_the_counter_over_a_run_it_fully_sees(name):
    spec = SPECS[name]
    torch.manual_seed(0)
    model, ids = spec.build_reference(), tokens(spec.architecture.vocab_size)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    assert spec.flops_method == "analytic"
    assert spec.step_flops(B, T, "train") == pytest.approx(counter.get_total_flops(), rel=0.01)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", SPECS)
def test_the_activation_estimate_matches_what_autograd_saves(name, precision):
    spec = SPECS[name]
    torch.manual_seed(0)
    measured = saved_bytes(spec.build(), tokens(spec.architecture.vocab_size), precision)
    assert spec.activation_bytes(B, T, precision) == pytest.approx(measured, rel=0.10)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", SPECS)
def test_with_checkpointing_what_the_forward_keeps_and_one_block_remakes_match(name, precision):
    """Kept: what is alive after a checkpointed forward and its loss (LiveBytes; saved-tensor hooks do not see
    inside a non-reentrant checkpoint). Re-made: what one block saves when it runs with grad, measured as the
    difference between the same model with 2 and with 1 layers."""
    from src.model.memory import checkpointed_activation_bytes

    spec = SPECS[name]
    a, ids = spec.architecture, tokens(spec.architecture.vocab_size)
    torch.manual_seed(0)
    model = spec.build(checkpoint_group=1)
    with LiveBytes(owned_storages(model)) as live:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(ids)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids.flatten())
        kept = live.current
    assert loss.requires_grad
    estimate = checkpointed_activation_bytes(a, B, T, precision, 1)
    assert estimate.kept == pytest.approx(kept, rel=0.10)
    two, one = (spec.with_layers(n) for n in (2, 1))
    one_block = saved_bytes(two.build(), ids, precision) - saved_bytes(one.build(), ids, precision)
    group_input = 4 * B * T * a.d_model  # kept, not re-made
    assert estimate.re_made == pytest.approx(one_block - group_input, rel=0.10)


@pytest.mark.parametrize("name", SHIPPED)
def test_parameters_counted_on_the_meta_device_are_the_models_own(name):
    from transformers import AutoModelForCausalLM

    spec = HfModel.from_source(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(spec.transformers_config())
    assert spec.parameter_count().total == model.num_parameters()
    if spec.architecture.moe:  # active: the same model with k experts, less the router's rows for the E-k others
        a = spec.architecture
        k_experts = json_with(spec, num_local_experts=a.experts_per_token, num_experts=a.experts_per_token)
        router_rows = a.num_layers * a.d_model * (a.num_experts - a.experts_per_token)
        assert spec.parameter_count().active == k_experts.parameter_count().total + router_rows
    else:
        assert spec.parameter_count().active == spec.parameter_count().total


def json_with(spec: HfModel, **changes) -> HfModel:
    config = json.loads(spec.config_json)
    config.update({k: v for k, v in changes.items() if k in config})
    return HfModel(spec.name + " changed", json.dumps(config, sort_keys=True))


def test_the_published_counts():
    assert HfModel.from_source("llama-3.1-8b").parameter_count().total == 8_030_261_248
    assert HfModel.from_source("gpt2").parameter_count().total == 124_439_808  # the tied head counted once


def test_ours_with_gqa_and_a_tied_head_counts_what_it_builds():
    spec = OURS["cs336-gqa-tied"]
    model = spec.build()
    assert model.lm_head.weight is model.token_embeddings.weight
    assert model.layers[0].attn.k_proj.weight.shape == (2 * 16, 64)  # 2 KV heads of 16
    assert spec.parameter_count().total == sum(p.numel() for p in model.parameters())


# ---- architectures the formulas do not know: counted on fake tensors --------------------------------------------

NEOX = HfModel("gpt-neox tiny", json.dumps(dict(model_type="gpt_neox", hidden_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=128, vocab_size=256,
                                                max_position_embeddings=128), sort_keys=True))


@pytest.mark.parametrize("name", ["cs336-gqa-tied", "llama-3.2-1b", "qwen2.5-0.5b", "gpt2"])
def test_counting_on_fake_tensors_agrees_with_the_formula_where_it_knows(name):
    from src.model.counted import counted_activation_bytes, counted_forward_flops

    spec = SPECS[name]
    assert counted_forward_flops(spec, B, T) == pytest.approx(spec.forward_flops(B, T), rel=0.01)
    for precision, group in (("fp32", 0), ("bf16", 0), ("fp32", 1), ("bf16", 1)):
        counted = counted_activation_bytes(spec, B, T, precision, group)
        assert counted == pytest.approx(spec.activation_bytes(B, T, precision, group), rel=0.10), (precision, group)


def test_an_architecture_the_formulas_do_not_know_is_counted_and_says_so():
    """GPT-NeoX (parallel residual, partial rotary): not in src/model/architecture.py's KNOWN_MODEL_TYPES."""
    assert NEOX.flops_method == "counted" and NEOX.row_fields()["flops_method"] == "counted"
    torch.manual_seed(0)
    ids = tokens(256)
    with FlopCounterMode(display=False) as counter:
        NEOX.build_reference()(ids).sum().backward()
    assert NEOX.step_flops(B, T, "train") == pytest.approx(counter.get_total_flops(), rel=0.01)
    for precision in ("fp32", "bf16"):
        measured = saved_bytes(NEOX.build(), ids, precision)
        assert NEOX.activation_bytes(B, T, precision) == pytest.approx(measured, rel=0.10), precision
