"""Every shipped config (configs/*.json) at a tiny width of the same architecture, as an HfModel: what the
conformance tests build on CPU. Width 64, 2 layers, 4 heads (2 KV heads where the config groups them), MLP 128,
vocab 256, 4 experts routed top-2; every other field kept. GPT-2's dropout is set to 0: on CPU, SDPA under dropout
takes the math path and keeps the T x T probabilities that CUDA's fused kernels (what the estimate is for) do not."""

import json

from src.model.families.hf import HfModel, read_config, shipped_configs


def tiny_config(raw: dict, d: int = 64, ff: int = 128, heads: int = 4, kv: int = 2, layers: int = 2,
                vocab: int = 256) -> dict:
    c = dict(raw)
    if c["model_type"] == "gpt2":
        c.update(n_embd=d, n_layer=layers, n_head=heads, n_inner=ff, vocab_size=vocab, resid_pdrop=0.0,
                 embd_pdrop=0.0, attn_pdrop=0.0)
        return c
    grouped = c.get("num_key_value_heads", c["num_attention_heads"]) != c["num_attention_heads"]
    c.update(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
             num_key_value_heads=kv if grouped else heads, intermediate_size=ff, vocab_size=vocab)
    if "head_dim" in c:
        c["head_dim"] = d // heads
    for experts in ("num_local_experts", "num_experts"):
        if experts in c:
            c.update({experts: 4, "num_experts_per_tok": 2})
    if "moe_intermediate_size" in c:
        c["moe_intermediate_size"] = ff
    return c


def tiny_model(name: str, **shape) -> HfModel:
    return HfModel(f"{name} (tiny)", json.dumps(tiny_config(read_config(name), **shape), sort_keys=True))


SHIPPED = shipped_configs()
