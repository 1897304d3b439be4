"""Analytic FLOPs and memory of the model: what a step must compute and hold, before anything is measured.

FLOPs count every matmul at 2 FLOPs per multiply-add: the q/k/v/output projections, the two attention matmuls over
the full T x T score matrix (causal masking is not subtracted, as in PaLM's MFU convention and in
torch.utils.flop_counter), the three SwiGLU matmuls and the LM head. Backward is twice the forward; a train step
is forward + backward = 3x forward (the optimizer's arithmetic is negligible; it is bounded by memory traffic).
"""

from dataclasses import dataclass

from src.model.config import ModelConfig
from src.model.transformer import count_parameters

BACKWARD_FLOPS_PER_FORWARD = 2
ADAMW_BYTES_PER_PARAMETER = 7 * 4  # fp32: read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq


def forward_flops(config: ModelConfig, batch_size: int, seq_len: int) -> int:
    B, T, d, d_ff = batch_size, seq_len, config.d_model, config.d_ff
    projections = 2 * B * T * 4 * d * d  # q, k, v, output: (B*T, d) @ (d, d) each
    attention = 2 * 2 * B * T * T * d  # Q K^T and P V over all heads: (B, nh, T, hs) @ (B, nh, hs, T), ...
    feed_forward = 2 * B * T * 3 * d * d_ff  # w1, w3: (d -> d_ff), w2: (d_ff -> d)
    lm_head = 2 * B * T * d * config.vocab_size
    return config.num_layers * (projections + attention + feed_forward) + lm_head


def step_flops(config: ModelConfig, batch_size: int, seq_len: int, mode: str) -> int:
    """FLOPs of one step of `mode` (forward | forward_backward | train)."""
    forward = forward_flops(config, batch_size, seq_len)
    return forward if mode == "forward" else forward * (1 + BACKWARD_FLOPS_PER_FORWARD)


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.activations


def saved_activation_bytes(config: ModelConfig, batch_size: int, seq_len: int, precision: str) -> int:
    """Bytes autograd keeps for backward: the tensors saved by each op of the naive-attention model.

    Per layer, in elements (B*T*d = btd): each RMSNorm keeps its input, the normalised x and its output (3 btd);
    attention keeps rotated q and k, v and the merged heads before the output projection (4 btd) and the softmax
    probabilities (B*nh*T*T); SwiGLU keeps w1 x, silu(w1 x), w3 x and their product (4 B*T*d_ff). At the end: the
    final norm, the logits and log_softmax's output (B*T*vocab each).
    Under bf16/fp16 autocast, matmul outputs are 2 bytes but norms, softmax and log_softmax run in fp32, and each
    matmul input is kept as a low-precision copy, weights included (one copy of every linear weight per step).
    Fused attention (sdpa, flash) keeps no T x T matrix: its output and a per-row logsumexp (B*nh*T fp32) instead.
    """
    layers = config.num_layers * (_layer_bytes(config, batch_size, seq_len, precision)
                                  + _layer_weight_copy_bytes(config, precision))
    return layers + _head_bytes(config, batch_size, seq_len, precision)


def _layer_bytes(config: ModelConfig, batch_size: int, seq_len: int, precision: str) -> int:
    """What one transformer block saves for backward, its weights' autocast copies aside (see above)."""
    B, T, d, d_ff = batch_size, seq_len, config.d_model, config.d_ff
    btd = B * T * d
    low = 4 if precision == "fp32" else 2  # bytes of a matmul output
    if config.attention == "naive":
        probabilities = B * config.num_heads * T * T * (4 if precision == "fp32" else 4 + 2)  # + low-precision copy
    else:
        probabilities = low * btd + 4 * B * config.num_heads * T
    if precision == "fp32":
        return 2 * 3 * 4 * btd + 4 * 4 * btd + probabilities + 4 * 4 * B * T * d_ff
    norm = (4 + 4 + 2) * btd  # fp32 input and normalised x, and the low-precision copy the next matmul keeps
    return 2 * norm + 4 * 2 * btd + probabilities + 4 * 2 * B * T * d_ff


def _head_bytes(config: ModelConfig, batch_size: int, seq_len: int, precision: str) -> int:
    """The final norm, the logits and log-probabilities, and under autocast the head weight's copy."""
    btd, btv = batch_size * seq_len * config.d_model, batch_size * seq_len * config.vocab_size
    if precision == "fp32":
        return 3 * 4 * btd + 2 * 4 * btv
    return (4 + 4 + 2) * btd + (2 + 4) * btv + 2 * config.d_model * config.vocab_size  # bf16 logits, fp32 log-probs


def _layer_weight_copy_bytes(config: ModelConfig, precision: str) -> int:
    d = config.d_model
    return 0 if precision == "fp32" else 2 * (4 * d * d + 3 * d * config.d_ff)


@dataclass(frozen=True)
class CheckpointedActivations:
    """Activation checkpointing in groups of N blocks: what the forward keeps and what one group's backward re-makes.

    kept: each group's input (B, T, d), which is the fp32 residual stream (the embedding is fp32 and autocast's
    bf16 branch outputs are added to it in fp32), and the head (final norm, logits, log-probabilities), which is
    outside any group. re_made: the N blocks' saved tensors, with their autocast weight copies, alive during that
    group's backward only (N = all blocks is then exactly the estimate without checkpointing). Under autocast the
    forward also holds every linear weight's copy in autocast's cache until the forward ends, so the activation
    peak is kept + the larger of the two. Gradients and backward's transients are not here: the estimate counts
    gradients whole, beside the activations.
    """
    kept: int
    re_made: int
    forward_weight_copies: int

    @property
    def peak(self) -> int:
        return self.kept + max(self.re_made, self.forward_weight_copies)


def checkpointed_activation_bytes(config: ModelConfig, batch_size: int, seq_len: int, precision: str,
                                  group: int) -> CheckpointedActivations:
    L = config.num_layers
    groups, N = -(-L // group), min(group, L)
    kept = groups * 4 * batch_size * seq_len * config.d_model + _head_bytes(config, batch_size, seq_len, precision)
    # The group's first RMSNorm saves its input, the group input already counted as kept.
    re_made = (N * (_layer_bytes(config, batch_size, seq_len, precision) + _layer_weight_copy_bytes(config, precision))
               - 4 * batch_size * seq_len * config.d_model)
    return CheckpointedActivations(kept, re_made, L * _layer_weight_copy_bytes(config, precision))


def autocast_weight_copy_bytes(config: ModelConfig) -> int:
    """Autocast caches a 2-byte copy of every linear weight for as long as its context is open (a step)."""
    return config.num_layers * _layer_weight_copy_bytes(config, "bf16") + 2 * config.d_model * config.vocab_size


def forward_logits_bytes(config: ModelConfig, batch_size: int, seq_len: int, precision: str) -> int:
    """What the loss holds at once in a forward-only step: the logits, their fp32 upcast (a copy under autocast,
    the same tensor in fp32) and the fp32 log-probabilities, B*T*vocab each: 10 bytes a logit under autocast, 8 in
    fp32. Counting 6 under autocast (no upcast) put 8B-leaderboard's forward at 2 x 16384 on an H200 at 77.4 GB
    against a measured 97.6 GB peak; 10 gives 97.3 GB. At 2 x 32768 it gives 147 GB, 2% under the card's 150 GB:
    that run went OOM asking for the log-probabilities' 39.8 GB with 112 GB in use."""
    per_logit = 4 + 4 if precision == "fp32" else 2 + 4 + 4
    return batch_size * seq_len * config.vocab_size * per_logit


def estimate_memory(config: ModelConfig, batch_size: int, seq_len: int, mode: str, precision: str,
                    checkpoint_group: int = 0) -> MemoryEstimate:
    """Parameters, gradients and AdamW state in fp32 (autocast keeps fp32 weights), plus activations.

    Forward-only runs under no_grad and keeps nothing for backward: its activation figure is the largest
    transient, the loss's (forward_logits_bytes) or one layer's score and probability matrices, plus, under
    autocast, the cached low-precision weight copies (6.8 GB for 2.7B: measured 20.6 GB peak in bf16 against
    13.9 GB in fp32 on an H100).
    The sum is an upper bound for train steps: backward frees activations while gradients appear, and the
    measured peak of 2.7B at context 128 was 55.4 GB against 59.2 GB estimated. With activation checkpointing in
    groups of `checkpoint_group` blocks the activations are CheckpointedActivations.peak.
    """
    params = count_parameters(config) * 4
    if mode == "forward":
        B, T = batch_size, seq_len
        logits = forward_logits_bytes(config, B, T, precision)
        attention = 2 * B * config.num_heads * T * T * 4 if config.attention == "naive" else 0
        copies = autocast_weight_copy_bytes(config) if precision != "fp32" else 0
        return MemoryEstimate(params, 0, 0, max(logits, attention) + copies)
    activations = (checkpointed_activation_bytes(config, batch_size, seq_len, precision, checkpoint_group).peak
                   if checkpoint_group else saved_activation_bytes(config, batch_size, seq_len, precision))
    optimizer = 2 * params if mode == "train" else 0
    return MemoryEstimate(params, params, optimizer, activations)
