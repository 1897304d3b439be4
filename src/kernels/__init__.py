"""Attention implementations: the naive reference, PyTorch's SDPA, cuDNN's fused kernel as an opaque op, and our
FlashAttention-2 (tiled PyTorch and Triton)."""

import contextlib

import torch
import torch.nn.functional as F

from src.kernels.reference import attention_reference, naive_attention

# The SDPA kernels compiled CUDA code may use: not cuDNN's (None: torch's own choice; `--attention cudnn` runs
# cuDNN's kernel as an opaque op instead, src/kernels/cudnn_attention.py). Compiled with cuDNN's
# attention, our models' q/k projection gradients came out 67% away from fp32 arithmetic (eager bf16, cuDNN
# too: 0.7%) and the small preset trained up to 23% away from the eager step (torch 2.11, cuDNN 9.19, H100;
# `python -m src.profiling.numerics --gradients --variants plain compiled_cudnn_sdpa compiled`). The choice is
# made inside the compiled region so that it is part of the traced graph: a context around a compiled call is
# read only while tracing, and a graph cached from a run without it was reused (AOTAutogradCache ignores it).
COMPILED_SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
_compiled_sdpa = {"backends": COMPILED_SDPA_BACKENDS}  # what compiled_sdpa_backends() set, read while tracing


@contextlib.contextmanager
def compiled_sdpa_backends(backends: tuple[str, ...] | None):
    """Within the block, compiled code traced from here may use these SDPA kernels (None: torch's own choice,
    cuDNN's included). The numerics check uses it to show what cuDNN's attention does to a compiled step; a graph
    compiled earlier keeps the choice it was traced with (torch._dynamo.reset() to trace afresh)."""
    previous = _compiled_sdpa["backends"]
    _compiled_sdpa["backends"] = backends
    try:
        yield
    finally:
        _compiled_sdpa["backends"] = previous


def _sdpa(q, k, v, is_causal=False):
    backends = _compiled_sdpa["backends"]
    if backends and q.is_cuda and torch.compiler.is_compiling():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([getattr(SDPBackend, name) for name in backends]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def _held_to(backend: str | None):
    """A context holding SDPA to one of its kernels (a SDPBackend name), or none for None."""
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, backend)])


def sdpa_backend(q, k, v, is_causal=False, only: str | None = None) -> str:
    """The SDPA kernel torch picks for these tensors here and now (held to `only`, a SDPBackend name, if given):
    one of FLASH_ATTENTION (FlashAttention-2), EFFICIENT_ATTENTION, CUDNN_ATTENTION, MATH, OVERRIDEABLE, or ERROR
    when none can run. The same dispatch SDPA itself asks, so a row can say which kernel "sdpa" was."""
    from torch.nn.attention import SDPBackend

    with _held_to(only):
        return SDPBackend(torch._fused_sdp_choice(q, k, v, None, 0.0, is_causal)).name


def sdpa_only(backend: str):
    """SDPA restricted to one of its kernels (a SDPBackend name, e.g. FLASH_ATTENTION): f(q, k, v, is_causal)."""
    def attend(q, k, v, is_causal=False):
        with _held_to(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)

    return attend


def get_attention(name: str):
    """The attention function named by the harness's --attention: f(q, k, v, is_causal) on (B, nh, T, hs) tensors."""
    if name == "naive":
        return naive_attention
    if name == "sdpa":
        return _sdpa
    if name == "cudnn":
        from src.kernels.cudnn_attention import cudnn_attention

        return cudnn_attention
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


__all__ = ["attention_reference", "naive_attention", "get_attention", "sdpa_backend", "sdpa_only", "flash_attention",
           "compiled_sdpa_backends", "FlashAttentionPytorch", "FlashAttentionTriton"]
