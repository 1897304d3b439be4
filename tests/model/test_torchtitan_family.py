"""--backend torchtitan: torchtitan's Llama 3 model at our shape computes our model's function (the comparison of
issue 19 is of two implementations of one model, not of two models). torchtitan is in the lock's dev group
(without its trainer's dependencies); skipped only in an environment that lacks it."""

import importlib.util

import pytest
import torch

from src.model.config import ModelConfig
from src.model.families.cs336 import Cs336Model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchtitan") is None, reason="torchtitan not installed")

# ours -> torchtitan's parameter names, per block and at the ends
BLOCK_NAMES = {"ln1": "attention_norm", "attn.q_proj": "attention.wq", "attn.k_proj": "attention.wk",
               "attn.v_proj": "attention.wv", "attn.output_proj": "attention.wo", "ln2": "ffn_norm",
               "ffn.w1": "feed_forward.w1", "ffn.w2": "feed_forward.w2", "ffn.w3": "feed_forward.w3"}
END_NAMES = {"token_embeddings": "tok_embeddings", "ln_final": "norm", "lm_head": "output"}


def titan_name(ours: str) -> str:
    module, _, tensor = ours.rpartition(".")
    if module.startswith("layers."):
        _, index, rest = module.split(".", 2)
        return f"layers.{index}.{BLOCK_NAMES[rest]}.{tensor}"
    return f"{END_NAMES[module]}.{tensor}"


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_torchtitans_model_computes_ours(kv_heads):
    from src.model.families.torchtitan import TorchtitanLlama

    # d_ff 160 < 8/3 * 64 = 170: the multiplier path of the width rounding, not only the multiple_of one
    config = ModelConfig(d_model=64, d_ff=160, num_layers=2, num_heads=4, num_kv_heads=kv_heads, vocab_size=128,
                         context_length=32, attention="sdpa")
    torch.manual_seed(0)
    ours = Cs336Model("tiny", config).build()
    titan = TorchtitanLlama("tiny", config).build()
    state = {titan_name(name): value for name, value in ours.state_dict().items()}
    titan.load_state_dict(state, strict=True)  # every name maps, every shape matches
    tokens = torch.randint(0, config.vocab_size, (2, 32))
    with torch.no_grad():
        # fp32 on CPU: the two differ in the order of RoPE's and RMSNorm's arithmetic only
        torch.testing.assert_close(titan(tokens), ours(tokens), rtol=1e-5, atol=1e-5)


def test_the_interface_counts_torchtitans_model_like_ours():
    from src.model.families.torchtitan import TorchtitanLlama

    config = ModelConfig(d_model=64, d_ff=256, num_layers=2, num_heads=4, vocab_size=128, context_length=32)
    assert TorchtitanLlama("tiny", config).parameter_count() == Cs336Model("tiny", config).parameter_count()
