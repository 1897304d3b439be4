"""transformers' Llama of the same shape as our model: the comparison point for `--backend hf_llama`."""

import torch.nn as nn

from src.model.config import ModelConfig


class HuggingFaceLlama(nn.Module):
    """transformers' LlamaForCausalLM with our shape (untied head, no biases, SDPA): ids (B, T) -> logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        try:
            from transformers import LlamaConfig, LlamaForCausalLM
        except ImportError as error:
            raise RuntimeError("--backend hf_llama needs the transformers package") from error
        llama_config = LlamaConfig(
            vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
            num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads, max_position_embeddings=config.context_length,
            rms_norm_eps=1e-5, rope_theta=10_000.0, tie_word_embeddings=False, attention_bias=False,
            mlp_bias=False, attn_implementation="sdpa", use_cache=False,
        )
        self.llama = LlamaForCausalLM(llama_config)

    def forward(self, token_ids):
        return self.llama(input_ids=token_ids, use_cache=False).logits
