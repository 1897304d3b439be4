"""Analytic FLOPs of a step, for any Architecture the formulas know: what a step must compute, before it runs.

FLOPs count every matmul at 2 FLOPs per multiply-add: the q/k/v/output projections (k and v at the KV heads'
width under grouped-query attention), the two attention products over the full T x T score matrix of every query
head (causal masking is not subtracted, as in PaLM's MFU convention and torch.utils.flop_counter), the MLP's two
or three matrices, a mixture of experts' router and the experts each token is routed to (k of E, as they run:
not all E), a shared expert, and the LM head (tied or not, it is a matmul). Backward is twice the forward; a train
step is forward + backward = 3x forward (the optimizer's arithmetic is negligible; it is bounded by memory
traffic). Architectures the formula does not know are counted on fake tensors instead (src/model/counted.py).
"""

from src.model.architecture import Architecture

BACKWARD_FLOPS_PER_FORWARD = 2
ADAMW_BYTES_PER_PARAMETER = 7 * 4  # fp32: read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq


def layer_matmul_flops(a: Architecture, tokens: int) -> int:
    """One decoder layer's projection and MLP matmuls on `tokens` = B*T tokens (the T x T products aside)."""
    projections = 2 * tokens * a.d_model * (2 * a.q_width + 2 * a.kv_width)  # q, o: d <-> nh*hs; k, v: d -> nkv*hs
    matrices = 3 if a.mlp == "gated" else 2
    mlp = 2 * tokens * matrices * a.d_model * a.d_ff
    if a.moe:
        mlp += 2 * tokens * a.d_model * a.num_experts  # the router's logits
        mlp += a.experts_per_token * 2 * tokens * 3 * a.d_model * a.expert_d_ff  # each token's k routed experts
        if a.shared_expert_d_ff:  # Qwen2-MoE: an expert every token takes, and its scalar gate
            mlp += 2 * tokens * 3 * a.d_model * a.shared_expert_d_ff + 2 * tokens * a.d_model
    return projections + mlp


def attention_product_flops(a: Architecture, batch_size: int, seq_len: int) -> int:
    """Q K^T and P V of one layer over all query heads: (B, nh, T, hs) @ (B, nh, hs, T), then (T, T) @ (T, hs)."""
    return 2 * 2 * batch_size * a.num_heads * seq_len * seq_len * a.head_dim


def forward_flops(a: Architecture, batch_size: int, seq_len: int) -> int:
    tokens = batch_size * seq_len
    per_layer = layer_matmul_flops(a, tokens) + attention_product_flops(a, batch_size, seq_len)
    lm_head = 2 * tokens * a.d_model * a.vocab_size
    return a.num_layers * per_layer + lm_head


def step_flops_from_forward(forward: int, mode: str) -> int:
    """FLOPs of one step of `mode` (forward | forward_backward | train) from its forward's."""
    return forward if mode == "forward" else forward * (1 + BACKWARD_FLOPS_PER_FORWARD)


def step_flops(a: Architecture, batch_size: int, seq_len: int, mode: str) -> int:
    return step_flops_from_forward(forward_flops(a, batch_size, seq_len), mode)


def blocks_share_of_forward(a: Architecture, batch_size: int, seq_len: int) -> float:
    """Fraction of the forward's FLOPs inside the decoder layers: what activation checkpointing computes again."""
    head = 2 * batch_size * seq_len * a.d_model * a.vocab_size
    total = forward_flops(a, batch_size, seq_len)
    return (total - head) / total
