"""cuDNN's attention as an opaque op (src/kernels/cudnn_attention.py): its layouts on CPU (meta tensors: the fake
implementation), its values and gradients on a Hopper GPU, eagerly and inside a compiled block, against the float64
reference and eager SDPA's own cuDNN kernel."""

import pytest
import torch
import torch.nn.functional as F

from src.kernels import get_attention
from src.kernels.cudnn_attention import _forward, _layout_like, _output_shape, cudnn_attention, why_not_cudnn
from tests.specs import tiny_spec
from src.kernels.reference import attention_reference

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)
hopper_only = pytest.mark.skipif(not HOPPER, reason="needs a CUDA device of compute capability 9.0 or later")
# bf16 against the float64 reference: the bound test_flash.py uses for 16-bit flash kernels (2e-2); the op and
# eager SDPA's cuDNN kernel are one kernel, so they must agree far closer (1e-3: a different reduction order only).
REFERENCE_TOL, SAME_KERNEL_TOL = 2e-2, 1e-3
# Compiled against eager: inductor computes the fused elementwise producers in fp32 and rounds once where eager
# rounds every op to bf16 (2^-8 relative each); the failure this guards against was 0.67 (src/kernels/__init__.py).
COMPILED_TOL = 1e-2


def _projected(B, H, T, D, device, dtype=torch.bfloat16, seed=0):
    """q, k, v as our attention layer makes them: (B, T, H*D) projections viewed (B, H, T, D), not contiguous."""
    g = torch.Generator(device=device).manual_seed(seed)
    qkv = [torch.randn(B, T, H * D, generator=g, device=device, dtype=dtype) for _ in range(3)]
    return [t.view(B, T, H, D).transpose(1, 2) for t in qkv]


def test_layout_rule_keeps_the_dimension_order_of_its_reference():
    q = _projected(2, 3, 5, 8, "cpu", torch.float32)[0]  # strides of (B, T, H, D) memory
    out = _layout_like((2, 3, 5, 4), q)
    assert out.shape == (2, 3, 5, 4) and out.stride() == (60, 4, 12, 1)  # (B, T, H, 4) memory, dense
    assert _layout_like((2, 3, 5, 4), q.contiguous()).is_contiguous()


def test_fake_implementation_gives_the_rule_s_layouts_and_gradients_shaped_like_inputs():
    q, k, v = (t.to("meta").requires_grad_() for t in _projected(2, 4, 16, 64, "cpu"))
    out = _forward(q, k, v, True)[0]  # the op itself: cudnn_attention refuses a non-CUDA device first
    assert out.shape == q.shape and out.stride() == _layout_like(q.shape, q).stride() == (16 * 4 * 64, 64, 4 * 64, 1)
    out.backward(torch.empty_like(out))
    for t in (q, k, v):
        assert t.grad.shape == t.shape and t.grad.stride() == _layout_like(t.shape, t).stride()


def test_where_it_does_not_apply_it_says_why():
    q, k, v = _projected(1, 2, 8, 16, "cpu")
    assert why_not_cudnn(q, k, v) == "needs a CUDA GPU"
    with pytest.raises(ValueError, match="attention: cudnn needs a CUDA GPU"):
        cudnn_attention(q, k, v)
    if HOPPER:
        q, k, v = _projected(1, 2, 8, 16, "cuda")
        assert why_not_cudnn(q, k, v) == ""
        assert "bf16 or fp16" in why_not_cudnn(*(t.float() for t in (q, k, v)))
        assert "as many heads" in why_not_cudnn(q, k[:, :1], v[:, :1])
        assert "multiple of 8, not 12" in why_not_cudnn(*_projected(1, 2, 8, 12, "cuda"))


@pytest.mark.parametrize("fields, message", [
    ({"device": "cpu", "attention": "cudnn", "precision": "bf16", "timer": "sync"}, "needs a CUDA GPU; use sdpa"),
    ({"device": "cuda", "attention": "cudnn", "precision": "fp32"}, "use precision bf16, fp16 or fp8"),
])
def test_spec_refuses_cudnn_where_it_cannot_run(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_spec(**fields)


def _grads(fn, q, k, v, dout):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(dout)
    return out.detach(), q.grad, k.grad, v.grad


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _eager_cudnn(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _ours(q, k, v):
    return cudnn_attention(q, k, v, is_causal=True)


def _exact(q, k, v):
    return attention_reference(q, k, v, True)[0]


@hopper_only
@pytest.mark.parametrize("shape", [(4, 32, 1024, 80), (1, 8, 256, 64), (2, 4, 512, 128)], ids=str)
@pytest.mark.parametrize("dout_layout", ["like_out", "contiguous"])
def test_cuda_values_and_gradients_match_the_reference(shape, dout_layout):
    """(B, T, H, D) views of q, k, v; the output's gradient either in the output's layout or contiguous
    (B, H, T, D), which our op must first bring into the output's layout."""
    q, k, v = _projected(*shape, "cuda")
    dout = torch.randn_like(q.contiguous())
    if dout_layout == "like_out":
        dout = _layout_like(_output_shape(q, v), q).copy_(dout)  # the output's layout
    ours = _grads(_ours, q, k, v, dout)
    exact = _grads(_exact, q, k, v, dout.double())
    for name, a, ref in zip(("out", "dq", "dk", "dv"), ours, exact):
        assert _rel(a, ref) < REFERENCE_TOL, (name, _rel(a, ref))
    if dout_layout == "like_out":  # where eager SDPA's cuDNN path is right (next test), it is the same kernel
        eager = _grads(_eager_cudnn, q, k, v, dout)
        for name, a, b in zip(("out", "dq", "dk", "dv"), ours, eager):
            assert _rel(a, b) < SAME_KERNEL_TOL, (name, _rel(a, b))


@hopper_only
def test_cuda_eager_sdpa_cudnn_still_gets_dq_wrong_for_a_contiguous_dout_of_a_strided_output():
    """Why the op brings dO into O's layout. torch 2.11's eager SDPA, cuDNN kernel, (B, T, H, D)-strided q/k/v and
    a contiguous dO: dq came out 1.41 away from the float64 reference on an H200 (sqrt 2: values in the wrong
    places), 3 shapes of 3 (2026-12-03); our op is within REFERENCE_TOL there (previous test). When a release fixes
    it this fails: then say so in src/kernels/cudnn_attention.py."""
    q, k, v = _projected(2, 4, 512, 128, "cuda")
    dout = torch.randn_like(q.contiguous())
    eager = _grads(_eager_cudnn, q, k, v, dout)
    exact = _grads(_exact, q, k, v, dout.double())
    assert _rel(eager[1], exact[1]) > 0.5


@hopper_only
def test_cuda_compiled_attention_uses_the_op_and_matches_eager_gradients():
    """The case that went wrong with inductor's own cuDNN lowering: a compiled function of projections, RoPE-like
    elementwise work and attention; its gradients must match the eager function's."""
    attend = get_attention("cudnn")
    B, H, T, D = 2, 8, 512, 80
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(B, T, H * D, generator=g, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(3, H * D, H * D, generator=g, device="cuda", dtype=torch.bfloat16) / (H * D) ** 0.5

    def layer(x):
        q, k, v = ((x @ w[i]).view(B, T, H, D).transpose(1, 2) for i in range(3))
        q, k = q * 1.5, torch.sin(k)  # elementwise producers inductor fuses into the op's inputs
        return attend(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, H * D)

    dout = torch.randn(B, T, H * D, generator=g, device="cuda", dtype=torch.bfloat16)
    torch._dynamo.reset()
    compiled = torch.compile(layer)
    y = compiled(x)
    y.backward(dout)
    got, x_grad = y.detach(), x.grad.clone()
    x.grad = None
    want = layer(x)  # eager: the same op
    want.backward(dout)
    assert _rel(got, want) < COMPILED_TOL and _rel(x_grad, x.grad) < COMPILED_TOL, (_rel(got, want), _rel(x_grad, x.grad))
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    _, codes = run_and_get_code(torch.compile(layer), x)
    assert any("lmbench.cudnn_attention" in code for code in codes)
