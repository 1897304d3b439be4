"""Attention implementations: the naive reference, PyTorch's SDPA, and our FlashAttention-2 (tiled PyTorch and Triton)."""

import contextlib

import torch
import torch.nn.functional as F

from src.kernels.reference import attention_reference, naive_attention

# What compiled CUDA code's SDPA runs. CUDNN_OP (the default): cuDNN's kernel as an opaque op
# (src/kernels/cudnn_attention.py) where it applies, else the kernels of COMPILED_SDPA_BACKENDS. Not inductor's own
# lowering to cuDNN: with it, our models' q/k projection gradients came out 67% away from fp32 arithmetic (eager
# bf16, cuDNN too: 0.7%) and the small preset trained up to 23% away from the eager step (torch 2.11, cuDNN 9.19,
# H100; `python -m src.profiling.numerics --gradients --variants plain compiled_cudnn_sdpa compiled`). The choice
# is made inside the compiled region so that it is part of the traced graph: a context around a compiled call is
# read only while tracing, and a graph cached from a run without it was reused (AOTAutogradCache ignores it).
CUDNN_OP = "cudnn_op"
COMPILED_SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
_compiled_sdpa = {"backends": CUDNN_OP}  # what compiled_sdpa_backends() set, read while tracing


@contextlib.contextmanager
def compiled_sdpa_backends(backends: str | tuple[str, ...] | None):
    """Within the block, compiled code traced from here runs SDPA on these kernels: CUDNN_OP, a tuple of
    SDPBackend names, or None for torch's own choice (inductor's lowering, cuDNN's included). The numerics check
    uses it to compare them; a graph compiled earlier keeps the choice it was traced with (torch._dynamo.reset()
    to trace afresh)."""
    previous = _compiled_sdpa["backends"]
    _compiled_sdpa["backends"] = backends
    try:
        yield
    finally:
        _compiled_sdpa["backends"] = previous


def _sdpa(q, k, v, is_causal=False):
    backends = _compiled_sdpa["backends"]
    if backends and q.is_cuda and torch.compiler.is_compiling():
        if backends == CUDNN_OP:
            from src.kernels.cudnn_attention import cudnn_attention, cudnn_attention_applies

            if cudnn_attention_applies(q, k, v):
                return cudnn_attention(q, k, v, is_causal)
            backends = COMPILED_SDPA_BACKENDS
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([getattr(SDPBackend, name) for name in backends]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def get_attention(name: str):
    """The attention function named by the harness's --attention: f(q, k, v, is_causal) on (B, nh, T, hs) tensors."""
    if name == "naive":
        return naive_attention
    if name == "sdpa":
        return _sdpa
    if name == "flash":
        from src.kernels.flash_triton import FlashAttentionTriton

        return lambda q, k, v, is_causal=False: FlashAttentionTriton.apply(q, k, v, is_causal)
    if name == "flash_pytorch":
        from src.kernels.flash_pytorch import FlashAttentionPytorch

        return lambda q, k, v, is_causal=False: FlashAttentionPytorch.apply(q, k, v, is_causal)
    raise ValueError(f"unknown attention implementation {name!r}")


def flash_attention(q, k, v, is_causal=False):
    """FlashAttention-2 on (B, [nh,] T, d) tensors: the Triton kernels on CUDA, the tiled PyTorch version elsewhere."""
    if q.is_cuda:
        from src.kernels.flash_triton import FlashAttentionTriton

        return FlashAttentionTriton.apply(q, k, v, is_causal)
    from src.kernels.flash_pytorch import FlashAttentionPytorch

    return FlashAttentionPytorch.apply(q, k, v, is_causal)


_LAZY = {"FlashAttentionPytorch": "src.kernels.flash_pytorch", "FlashAttentionTriton": "src.kernels.flash_triton"}


def __getattr__(name):
    """The FlashAttention classes, imported on first use: Triton is loaded only by whoever needs it."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["attention_reference", "naive_attention", "get_attention", "flash_attention", "compiled_sdpa_backends",
           "CUDNN_OP", "COMPILED_SDPA_BACKENDS",
           "FlashAttentionPytorch", "FlashAttentionTriton"]
