"""cuDNN's fused attention as one opaque custom op (`--attention cudnn`), so compiled code can run the kernel eager
SDPA picks on Hopper.

    y = cudnn_attention(q, k, v, is_causal=True)   # (B, nh, T, hs) bf16/fp16 CUDA tensors -> (B, nh, T, hs)

Why: at the 2.7B shape (B 4, 32 heads of 80, T 1024, causal) on an H200, forward + backward of cuDNN's kernel took
0.388 ms against 0.664 ms for SDPA's flash kernel (`scripts/sdpa_backends.py`, 2026-12-02), ~9 ms of the fast
recipe's step over 32 layers. Eager SDPA already picks cuDNN's kernel there; compiled SDPA does not, because letting
inductor lower SDPA to cuDNN gave 67%-wrong q/k gradients on an H100 (src/kernels/__init__.py). The suspected cause
is layout: inductor plans the strides of the kernel's outputs and of the gradient it feeds back from the meta
functions, and cuDNN's backward needs the output's gradient in the output's own layout. Here the layouts are ours:
the outputs' strides follow one rule (`_strides_like`), applied by the fake and the real implementation alike,
the real one copying when cuDNN returned another layout, and the backward gives cuDNN the output gradient in the
output's layout. Inductor sees two calls it cannot look into (forward, backward) and fuses around them.

Measured (H200, 2.7B fast recipe, blocks compiled, 2026-12-03): attention kernels 21.2 -> 11.9 ms a step, the step
only 180.5 -> 178.8 ms; the traced step's idle grew 21 ms and it launched 288 more kernels (64 copies). Eager
cuDNN SDPA alone costs the host 467 us per forward + backward at that shape, more than its 390 us on the GPU. So
this is an option (`--attention cudnn`), not the fast recipe's default. The dO rule matters in eager PyTorch too:
eager SDPA's cuDNN backward gave dq 1.41 off for a contiguous dO of a (B, T, H, D)-strided output
(tests/kernels/test_cudnn_attention.py).
"""

import torch

_LIB = "lmbench"


def _strides_like(shape, ref: torch.Tensor) -> tuple[int, ...]:
    """The strides of a dense tensor of `shape` whose dimensions lie in memory in ref's order (largest stride
    outermost; ties keep the dimension order): the one rule for every output layout here, fake and real."""
    order = sorted(range(ref.dim()), key=lambda i: (-ref.stride(i), i))  # outermost first
    strides, step = [0] * len(shape), 1
    for i in reversed(order):
        strides[i], step = step, step * shape[i]
    return tuple(strides)


def _layout_like(shape, ref: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An empty tensor of `shape` with the rule's strides."""
    return torch.empty_strided(tuple(shape), _strides_like(shape, ref), dtype=dtype or ref.dtype, device=ref.device)


def _in_layout(t: torch.Tensor, ref_shape, ref: torch.Tensor) -> torch.Tensor:
    """t itself where it already has the rule's layout, else a copy that has it (allocated only then)."""
    if t.stride() == _strides_like(ref_shape, ref):
        return t
    return _layout_like(ref_shape, ref, t.dtype).copy_(t)


def _output_shape(q: torch.Tensor, v: torch.Tensor) -> tuple[int, ...]:
    """The output's shape; its layout is q's (the rule of _strides_like). cuDNN's backward reads O and dO with Q's
    strides: an output in (B, T, H, D) memory beside a contiguous (B, H, T, D) q, which would have spared the
    model's transposing copies, gave dq and dk 0.55 away from fp32 arithmetic on an H200
    (scripts/sdpa_backends.py, 2026-12-03), and took 0.99 ms instead of 0.39."""
    B, H, T, _ = q.shape
    return (B, H, T, v.shape[-1])


@torch.library.custom_op(f"{_LIB}::cudnn_attention", mutates_args=())
def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q, k, v, None, True, 0.0, is_causal, False)[:2]  # attn_bias, compute_log_sumexp, dropout_p, causal, debug
    B, H, T, _ = q.shape
    return _in_layout(out, _output_shape(q, v), q), lse.reshape(B, H, T, 1).contiguous()


@_forward.register_fake
def _(q, k, v, is_causal):
    B, H, T, _ = q.shape
    return _layout_like(_output_shape(q, v), q), q.new_empty((B, H, T, 1), dtype=torch.float32)


@torch.library.custom_op(f"{_LIB}::cudnn_attention_backward", mutates_args=())
def _backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
              lse: torch.Tensor, is_causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_out = _in_layout(grad_out, out.shape, out)  # cuDNN reads dO with O's strides
    zero = torch.zeros(1, dtype=torch.long, device=q.device)  # dropout's philox seed and offset, unused at p = 0
    dq, dk, dv = torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
        grad_out, q, k, v, out, lse, zero, zero, None, None, None, q.shape[2], k.shape[2], 0.0, is_causal)
    return _in_layout(dq, q.shape, q), _in_layout(dk, k.shape, k), _in_layout(dv, v.shape, v)


@_backward.register_fake
def _(grad_out, q, k, v, out, lse, is_causal):
    return _layout_like(q.shape, q), _layout_like(k.shape, k), _layout_like(v.shape, v)


def _setup_context(ctx, inputs, output):
    q, k, v, is_causal = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.is_causal = is_causal


def _autograd_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = _backward(grad_out, q, k, v, out, lse, ctx.is_causal)
    return dq, dk, dv, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def cudnn_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
    """Softmax(q k^T / sqrt(hs)) v by cuDNN's kernel on (B, nh, T, hs) tensors (`--attention cudnn`); raises
    ValueError naming the reason where it does not apply (why_not_cudnn)."""
    reason = why_not_cudnn(q, k, v)
    if reason:
        raise ValueError(f"attention: cudnn {reason}")
    return _forward(q, k, v, is_causal)[0]


def why_not_cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """"" where the op runs, else why not: a Hopper or later GPU (where it was measured and checked), cuDNN >= 9,
    bf16/fp16, as many k/v heads as q heads, one head dim <= 128 and a multiple of 8 (cuDNN's limits here)."""
    if not q.is_cuda:
        return "needs a CUDA GPU"
    if not (q.dtype in (torch.bfloat16, torch.float16) and k.dtype == v.dtype == q.dtype):
        return f"runs in bf16 or fp16 (autocast), not {q.dtype}"
    hs = q.shape[-1]
    if q.dim() != 4 or k.shape[1] != q.shape[1] or v.shape[-1] != hs or k.shape[-1] != hs:
        return "needs (B, nh, T, hs) q, k, v with as many heads and one head dim"
    if hs > 128 or hs % 8:
        return f"needs a head dim <= 128 and a multiple of 8, not {hs}"
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        return "needs the head dim contiguous"
    version = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if not (version and version >= 90000):
        return f"needs cuDNN 9 or later (found {version})"
    if torch.cuda.get_device_capability(q.device) < (9, 0):
        return "is checked on Hopper (compute capability 9.0) or later only"
    return ""
