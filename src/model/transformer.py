"""The decoder-only Transformer LM of CS336 (BasicsTransformerLM): pre-norm blocks, RoPE, SwiGLU, RMSNorm, untied head.

Parameter names and shapes follow the reference exactly (linear weights are (d_out, d_in)), so a checkpoint of
that model loads here as it is. Attention is pluggable (config.attention); everything else is plain PyTorch.
Two options beyond the reference, off by default so its parameter names and logits stay exact: grouped-query
attention (config.num_kv_heads < num_heads: k_proj and v_proj shrink to nkv heads, repeated to every query head
before the kernel) and a tied head (config.tie_embeddings: lm_head.weight is token_embeddings.weight).
"""

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from src import nvtx
from src.kernels import get_attention
from src.model.config import ModelConfig


def _truncated_normal(weight: torch.Tensor, std: float) -> None:
    """Draw `weight` from a normal of this std cut at 3 std. A meta tensor (count_parameters, the cost model) has
    no values to draw, so it is left alone: torch's meta kernels for trunc_normal_'s ops run in Python and took 85%
    of the time to build 2.7B on the meta device (0.49 of 0.58 s on a 2-core CPU)."""
    if not weight.is_meta:
        nn.init.trunc_normal_(weight, std=std, a=-3 * std, b=3 * std)


class Linear(nn.Module):
    """y = x W^T, no bias; W (d_out, d_in) ~ truncated normal, std sqrt(2 / (d_in + d_out)), cut at 3 std."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        _truncated_normal(self.weight, std=math.sqrt(2.0 / (d_in + d_out)))

    def forward(self, x):
        return F.linear(x, self.weight)


class Embedding(nn.Module):
    def __init__(self, num_embeddings: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, d_model))
        _truncated_normal(self.weight, std=1.0)

    def forward(self, token_ids):
        return self.weight[token_ids]


class RMSNorm(nn.Module):
    """x / rms(x) * g, computed in fp32 whatever the input dtype (a bf16 mean of squares loses too much), cast back.

    F.rms_norm is one fused kernel each way on CUDA; written out (pow, mean, rsqrt, two muls) the same arithmetic
    took 0.596 ms forward + backward at the 2.7B shape against 0.172 (H200, scripts/eager_parts.py): 28 of the
    eager step's ms over its 65 norms, part of why it trailed torchtitan's (whose nn.RMSNorm calls F.rms_norm).
    """

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        return F.rms_norm(x.to(at_least_fp32(x.dtype)), (x.shape[-1],), self.weight, self.eps).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE rotating interleaved pairs (x0, x1), (x2, x3), ... by angle position * theta^(-2k/d).

    Eagerly, each pair is a complex number multiplied by e^(i angle): one kernel each way. Rotating even and odd
    halves taken by strided slices and stacked back took 0.787 ms forward + backward for q at the 2.7B shape, the
    complex multiply 0.413 (H200, scripts/eager_parts.py): 24 ms of the eager step over q and k of 32 layers.
    Compiled, the halves stay: inductor fuses them into one kernel, and it has no code generation for complex
    numbers (it warns, and runs them as eager kernels between its own).
    """

    def __init__(self, head_dim: int, context_length: int, theta: float):
        super().__init__()
        if torch.get_default_device().type == "meta":  # count_parameters, the cost model: shapes only
            # torch's meta arange runs in Python and its first call imports torch._dynamo: 2.8 s of a benchmark
            # worker's start on a 2-core CPU (0.7 s with cached bytecode) where nothing else needs it
            cos = sin = torch.empty(context_length, head_dim // 2)
        else:
            inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hs/2,)
            angles = torch.outer(torch.arange(context_length, dtype=torch.float32), inv_freq)  # (T_max, hs/2)
            cos, sin = angles.cos(), angles.sin()
        # Not persistent: derived from the config, and absent from the reference state dict.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x):  # x: (B, nh, T, hs)
        T = x.shape[-2]
        if T > self.cos.shape[0]:
            raise ValueError(f"sequence length {T} exceeds the model's context_length {self.cos.shape[0]}")
        cos, sin = self.cos[:T], self.sin[:T]  # (T, hs/2), fp32
        # Rotate in fp32 and round once: with bf16 cos/sin and bf16 products (three roundings) the eager bf16 model
        # trained measurably differently from the compiled one, which keeps the intermediates in fp32.
        rotate = rotate_halves if torch.compiler.is_compiling() else rotate_complex
        return rotate(x, cos, sin)


def at_least_fp32(*dtypes) -> torch.dtype:
    """fp32, or fp64 where an input is (a model cast .double() keeps its fp64 arithmetic: the TP tests' exactness)."""
    return functools.reduce(torch.promote_types, dtypes, torch.float32)


def rotate_complex(x, cos, sin):  # x: (B, nh, T, hs); cos, sin: (T, hs/2) -> (B, nh, T, hs), x's dtype
    real = at_least_fp32(x.dtype, cos.dtype)  # a model cast .to(bf16) casts the cos/sin buffers too
    pairs = torch.view_as_complex(x.to(real).unflatten(-1, (-1, 2)))  # (B, nh, T, hs/2) complex64 (128 in fp64)
    return torch.view_as_real(pairs * torch.complex(cos.to(real), sin.to(real))).flatten(-2).to(x.dtype)


def rotate_halves(x, cos, sin):  # the same rotation in real arithmetic, for inductor
    x_even, x_odd = x[..., 0::2].float(), x[..., 1::2].float()  # (B, nh, T, hs/2) each
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)  # (B, nh, T, hs), pairs back in place


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d, kv = config.d_model, config.num_kv_heads * config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj, self.k_proj, self.v_proj = Linear(d, d), Linear(d, kv), Linear(d, kv)
        self.output_proj = Linear(d, d)
        self.rope = RotaryEmbedding(config.head_dim, config.context_length, config.rope_theta)
        self.attend = get_attention(config.attention)

    def forward(self, x):  # x: (B, T, d)
        B, T, _ = x.shape
        # -1 heads: under tensor parallelism (src/distributed/tensor_parallel.py) a rank's q/k/v hold nh/tp heads
        nh, nkv, hs = self.num_heads, self.num_kv_heads, self.head_dim
        with nvtx.model_range("qkv projection"):
            q = self.q_proj(x).view(B, T, -1, hs).transpose(1, 2)  # (B, nh, T, hs)
            k = self.k_proj(x).view(B, T, -1, hs).transpose(1, 2)  # (B, nkv, T, hs)
            v = self.v_proj(x).view(B, T, -1, hs).transpose(1, 2)
        with nvtx.model_range("rope"):
            q, k = self.rope(q), self.rope(k)
        if nkv != nh:  # every kernel takes as many k/v heads as q heads: query head i reads kv head i // (nh/nkv)
            k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)  # (B, nh, T, hs)
        y = self.attend(q, k, v, is_causal=True)  # (B, nh, T, hs); naive marks scores/softmax/weighted sum itself
        with nvtx.model_range("output projection"):
            return self.output_proj(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, nh * hs)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w1, self.w2, self.w3 = Linear(d_model, d_ff), Linear(d_ff, d_model), Linear(d_model, d_ff)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = RMSNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln2 = RMSNorm(config.d_model)
        self.ffn = SwiGLU(config.d_model, config.d_ff)

    def forward(self, x):
        with nvtx.model_range("attention"):
            x = x + self.attn(self.ln1(x))
        with nvtx.model_range("feed-forward"):
            return x + self.ffn(self.ln2(x))


class TransformerLM(nn.Module):
    """checkpoint_group = N > 0 recomputes the blocks in groups of N during backward (activation checkpointing):
    only each group's input (B, T, d) is kept from the forward. 0 (default) keeps everything, as the reference."""

    def __init__(self, config: ModelConfig, checkpoint_group: int = 0):
        super().__init__()
        if not isinstance(checkpoint_group, int) or checkpoint_group < 0:
            raise ValueError(f"checkpoint_group must be a non-negative integer, got {checkpoint_group!r}")
        self.config = config
        self.checkpoint_group = checkpoint_group
        self.token_embeddings = Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.ln_final = RMSNorm(config.d_model)
        self.lm_head = Linear(config.d_model, config.vocab_size)
        if config.tie_embeddings:  # both (vocab, d_model); the embedding's draw (std 1) is the one kept
            self.lm_head.weight = self.token_embeddings.weight

    def forward(self, token_ids):  # (B, T) int64 -> logits (B, T, vocab)
        x = self.token_embeddings(token_ids)  # (B, T, d)
        N = self.checkpoint_group if torch.is_grad_enabled() else 0  # nothing to recompute without a backward
        if N:
            for first in range(0, len(self.layers), N):
                # Non-reentrant: works with autocast, torch.compile and inputs that need no grad. No RNG state to
                # keep: the model draws no random numbers (no dropout).
                x = checkpoint(self._blocks, x, first, first + N, use_reentrant=False, preserve_rng_state=False)
        else:
            x = self._blocks(x, 0, len(self.layers))
        with nvtx.model_range("lm head"):
            return self.lm_head(self.ln_final(x))

    def _blocks(self, x, first: int, last: int):  # x: (B, T, d), through layers first..last-1
        for i, layer in enumerate(self.layers[first:last], start=first):
            with nvtx.model_range(f"layer {i}"):
                x = layer(x)
        return x


def count_parameters(config: ModelConfig) -> int:
    """Parameters of the model, counted on the meta device: no memory is allocated, so 2.7B costs nothing (a tied
    weight once: parameters() yields a shared tensor once)."""
    with torch.device("meta"):
        model = TransformerLM(config)
    return sum(p.numel() for p in model.parameters())
