"""The one memory estimate of a single-process step: parameters, gradients, AdamW state and activations.

Every place that needs it asks the model interface (src/model/interface.py, `ModelSpec.memory_estimate`), which
calls `estimate_memory` here with its exact parameter count: the guard that refuses configurations far above the
device's memory, the row's estimate, the allocator-snapshot report, and the cost model at world size 1 (which
shards these same parts; src/predict/cost.py).

Activations are what autograd keeps for backward, by the tensors each op saves (a test counts them with
saved-tensor hooks for ours and for every shipped Hugging Face config at a tiny width, tests/model/):
- each norm keeps its input and normalised x, and its output is kept by the next matmul; under autocast the
  norms run in fp32 and the matmul keeps a 2-byte copy of its input;
- attention keeps q, k, v as the kernel receives them (k, v at the query heads' width where they are repeated
  before the kernel), the merged heads before the output projection, and either the softmax probabilities
  (naive: B*nh*T*T, fp32 plus a low-precision copy under autocast) or the fused kernel's output and per-row
  logsumexp (B*nh*T fp32);
- a gated MLP keeps gate x, act(gate x), up x and their product (4 x d_ff per token); a plain GELU MLP keeps
  fc1 x and gelu(fc1 x) (2 x d_ff); a mixture of experts keeps, per routed token, the gathered input and each
  expert's gated-MLP tensors, plus the router's logits and probabilities;
- after the layers: the final norm, the logits and log_softmax's output (B*T*vocab each).
Under autocast every linear weight's 2-byte copy is kept too (autocast's cache, one copy a step).
"""

from dataclasses import dataclass

from src.model.architecture import Architecture

PARAM_BYTES = 4  # parameters, gradients and AdamW moments are fp32 (autocast keeps fp32 master weights)


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.activations


def _low(precision: str) -> int:
    """Bytes of a matmul's output: 4 in fp32, 2 under bf16/fp16 autocast."""
    return 4 if precision == "fp32" else 2


def norm_bytes(a: Architecture, tokens: int, precision: str, consumers: int) -> int:
    """What a norm of (tokens, d) keeps: its fp32 input and (RMSNorm) normalised x, and its output as the matmuls
    after it keep it: itself in fp32, or one 2-byte copy per consuming matmul under autocast (autocast casts per
    op: q, k and v make three copies, gate and up two; measured with saved-tensor hooks, tests/model/)."""
    kept = (4 if a.norm == "layernorm" else 2 * 4) * tokens * a.d_model
    return kept + (4 if precision == "fp32" else 2 * consumers) * tokens * a.d_model


def layer_activation_bytes(a: Architecture, batch_size: int, seq_len: int, precision: str) -> int:
    """What one decoder layer saves for backward, its weights' autocast copies aside (see the module docstring)."""
    B, T, d = batch_size, seq_len, a.d_model
    N, low = B * T, _low(precision)
    ours = a.model_type == "cs336"
    fused_qkv = a.model_type == "gpt2"  # one c_attn matmul makes q, k and v (views of one tensor)
    norms = norm_bytes(a, N, precision, 1 if fused_qkv else 3)
    if not a.moe:
        norms += norm_bytes(a, N, precision, 2 if a.mlp == "gated" else 1)
    kv = a.q_width if ours else a.kv_width  # ours repeats k, v to every query head before the kernel
    attention = N * (a.q_width + 2 * kv) * low
    if ours:  # the heads merged back by a copy, input of the output projection
        attention += N * a.q_width * low
    if a.attention == "naive":
        attention += B * a.num_heads * T * T * (4 if precision == "fp32" else 4 + 2)  # + low-precision copy
    else:  # the fused kernel's output (B, T, nh, hs) and logsumexp; Hugging Face's o_proj reads that output
        attention += N * a.q_width * low + 4 * B * a.num_heads * T
    if a.qk_norm:  # fp32 input and normalised x of q and of k
        attention += 2 * 4 * N * (a.q_width + a.kv_width)
    mlp = N * (4 if a.mlp == "gated" else 5) * a.d_ff * low  # GELU's tanh form keeps 4 intermediates and fc1 x
    if a.moe:
        S = N * a.experts_per_token  # (token, expert) pairs: every routed tensor scales with these, not with E
        mlp += norm_bytes(a, N, precision, 1)  # the router and the experts read the norm's output
        mlp += N * a.num_experts * 4 + N * a.experts_per_token * (8 + 4)  # router probabilities, top-k ids, weights
        # Gathered input, gate|up, act, product, output; in fp32 even under autocast: transformers' grouped_mm
        # experts are not autocast (measured on CPU: fp32 tensors and no weight copies; not yet seen on CUDA).
        mlp += S * (2 * d + 4 * a.expert_d_ff) * 4 + 29 * S
        if a.shared_expert_d_ff:
            mlp += N * 4 * a.shared_expert_d_ff * low
    return norms + attention + mlp


def layer_weight_copy_bytes(a: Architecture, precision: str) -> int:
    """One layer's linear weights as autocast caches them (2 bytes each); 0 in fp32."""
    if precision == "fp32":
        return 0
    d = a.d_model
    weights = d * (2 * a.q_width + 2 * a.kv_width) + (3 if a.mlp == "gated" else 2) * d * a.d_ff
    if a.moe:  # the router's weight and a shared expert's; the routed experts run in fp32 (see above)
        weights += a.num_experts * d + 3 * d * a.shared_expert_d_ff
    return 2 * weights


def head_activation_bytes(a: Architecture, batch_size: int, seq_len: int, precision: str) -> int:
    """The final norm, the logits and log-probabilities, and under autocast the head weight's copy."""
    N, btv = batch_size * seq_len, batch_size * seq_len * a.vocab_size
    norm = norm_bytes(a, N, precision, 1)
    if precision == "fp32":
        return norm + 2 * 4 * btv
    return norm + (2 + 4) * btv + 2 * a.d_model * a.vocab_size  # bf16 logits, fp32 log-probs


def autocast_weight_copy_bytes(a: Architecture) -> int:
    """Autocast caches a 2-byte copy of every linear weight for as long as its context is open (a step)."""
    return a.num_layers * layer_weight_copy_bytes(a, "bf16") + 2 * a.d_model * a.vocab_size


def saved_activation_bytes(a: Architecture, batch_size: int, seq_len: int, precision: str) -> int:
    """Bytes autograd keeps for backward over the whole model, without checkpointing."""
    per_layer = layer_activation_bytes(a, batch_size, seq_len, precision) + layer_weight_copy_bytes(a, precision)
    return a.num_layers * per_layer + head_activation_bytes(a, batch_size, seq_len, precision)


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


def checkpointed_activation_bytes(a: Architecture, batch_size: int, seq_len: int, precision: str,
                                  group: int) -> CheckpointedActivations:
    L = a.num_layers
    groups, N = -(-L // group), min(group, L)
    group_input = 4 * batch_size * seq_len * a.d_model
    kept = groups * group_input + head_activation_bytes(a, batch_size, seq_len, precision)
    # The group's first norm saves its input, the group input already counted as kept.
    re_made = (N * (layer_activation_bytes(a, batch_size, seq_len, precision) + layer_weight_copy_bytes(a, precision))
               - group_input)
    return CheckpointedActivations(kept, re_made, L * layer_weight_copy_bytes(a, precision))


def activation_bytes(a: Architecture, batch_size: int, seq_len: int, precision: str, checkpoint_group: int = 0) -> int:
    """What a step holds for backward at its peak: everything, or with checkpointing in groups of N blocks the
    kept inputs plus one group re-made (CheckpointedActivations.peak)."""
    if checkpoint_group:
        return checkpointed_activation_bytes(a, batch_size, seq_len, precision, checkpoint_group).peak
    return saved_activation_bytes(a, batch_size, seq_len, precision)


def forward_logits_bytes(a: Architecture, batch_size: int, seq_len: int, precision: str) -> int:
    """What the loss holds at once in a forward-only step: the logits, their fp32 upcast (a copy under autocast,
    the same tensor in fp32) and the fp32 log-probabilities, B*T*vocab each: 10 bytes a logit under autocast, 8 in
    fp32. Counting 6 under autocast (no upcast) put 8B-leaderboard's forward at 2 x 16384 on an H200 at 77.4 GB
    against a measured 97.6 GB peak; 10 gives 97.3 GB. At 2 x 32768 it gives 147 GB, 2% under the card's 150 GB:
    that run went OOM asking for the log-probabilities' 39.8 GB with 112 GB in use."""
    per_logit = 4 + 4 if precision == "fp32" else 2 + 4 + 4
    return batch_size * seq_len * a.vocab_size * per_logit


def estimate_memory(a: Architecture, parameters: int, batch_size: int, seq_len: int, mode: str, precision: str,
                    checkpoint_group: int = 0, activations: int | None = None) -> MemoryEstimate:
    """Parameters, gradients and AdamW state in fp32 (autocast keeps fp32 weights), plus activations.

    `parameters` is the model's exact count (the interface counts it on the meta device). `activations` replaces
    the analytic figure where the interface counted it instead (an architecture the formulas do not know).
    Forward-only runs under no_grad and keep nothing for backward: the activation figure is then the largest
    transient, the loss's (forward_logits_bytes) or one layer's score and probability matrices, plus, under
    autocast, the cached low-precision weight copies (6.8 GB for 2.7B: measured 20.6 GB peak in bf16 against
    13.9 GB in fp32 on an H100).
    The sum is an upper bound for train steps: backward frees activations while gradients appear, and the
    measured peak of 2.7B at context 128 was 55.4 GB against 59.2 GB estimated.
    """
    params = parameters * PARAM_BYTES
    if mode == "forward":
        B, T = batch_size, seq_len
        logits = forward_logits_bytes(a, B, T, precision)
        attention = 2 * B * a.num_heads * T * T * 4 if a.attention == "naive" else 0
        copies = autocast_weight_copy_bytes(a) if precision != "fp32" else 0
        return MemoryEstimate(params, 0, 0, max(logits, attention) + copies)
    if activations is None:
        activations = activation_bytes(a, batch_size, seq_len, precision, checkpoint_group)
    optimizer = 2 * params if mode == "train" else 0
    return MemoryEstimate(params, params, optimizer, activations)
