"""Issue 19 item 4: the eager step's parts that differ between our model and torchtitan's, each timed alone.

    python3 scripts/eager_parts.py [--batch 4 --seq 1024 --d_model 2560 --heads 32]

At the 2.7B shape under bf16 autocast, forward + backward of: RMSNorm as ours writes it (fp32 pow/mean/rsqrt/mul)
against F.rms_norm (what nn.RMSNorm, torchtitan's norm, calls); RoPE as ours rotates (strided even/odd halves,
stack) against torchtitan's complex multiply on (B, T, nh, hs); SDPA with torch's own kernel choice against each
kernel held alone. Timed by the harness's bench_ms (triton's do_bench: CUDA events, L2 flushed, 25 ms warm-up,
100 ms of repetitions), the median. Printed: one markdown table. Needs CUDA.
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.harness.timing import bench_ms  # noqa: E402


def timed(fn) -> float:
    """The median ms of fn, by the harness's one kernel timer (do_bench: CUDA events, L2 flushed between runs)."""
    return bench_ms(fn, "cuda", warmup_ms=25.0, rep_ms=100.0)[0]


def forward_backward(make_inputs, body):
    inputs = make_inputs()

    def run():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = body(*inputs)
        out.backward(torch.ones_like(out))
        for t in inputs:
            t.grad = None
    return run


def ours_rms(x, w, eps=1e-5):
    x = x.float()
    return (w * (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps))).to(x.dtype)


def fused_rms(x, w, eps=1e-5):
    return F.rms_norm(x.float(), (x.shape[-1],), w, eps)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--d_model", type=int, default=2560)
    p.add_argument("--heads", type=int, default=32)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("eager_parts: needs a CUDA GPU", file=sys.stderr)
        return 2
    B, T, d, nh = a.batch, a.seq, a.d_model, a.heads
    hs = d // nh
    dev = "cuda"
    rows = []

    def residual():  # the fp32 residual stream a norm reads
        return (torch.randn(B, T, d, device=dev, requires_grad=True), torch.ones(d, device=dev, requires_grad=True))
    rows += [("RMSNorm, ours (fp32 pow/mean/rsqrt/mul)", timed(forward_backward(residual, ours_rms))),
             ("RMSNorm, F.rms_norm", timed(forward_backward(residual, fused_rms)))]

    angles = torch.outer(torch.arange(T, device=dev, dtype=torch.float32),
                         10000.0 ** (-torch.arange(0, hs, 2, device=dev, dtype=torch.float32) / hs))
    cos, sin = angles.cos(), angles.sin()
    freqs = torch.polar(torch.ones_like(angles), angles)  # (T, hs/2) complex64

    def projected():  # q as the projection leaves it under autocast: bf16 (B, T, nh, hs)
        return (torch.randn(B, T, nh, hs, device=dev, dtype=torch.bfloat16, requires_grad=True),)

    def ours_rope(q):  # ours: on the (B, nh, T, hs) view
        x = q.transpose(1, 2)
        even, odd = x[..., 0::2].float(), x[..., 1::2].float()
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(x.dtype)

    def complex_rope(q):  # torchtitan's: on (B, T, nh, hs), then the transpose
        x = torch.view_as_complex(q.float().reshape(B, T, nh, hs // 2, 2))
        return torch.view_as_real(x * freqs.view(1, T, 1, hs // 2)).flatten(3).type_as(q).transpose(1, 2)
    rows += [("RoPE of q, ours (strided halves, stack)", timed(forward_backward(projected, ours_rope))),
             ("RoPE of q, complex multiply", timed(forward_backward(projected, complex_rope)))]

    def qkv():
        return tuple(torch.randn(B, nh, T, hs, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    attend = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    rows.append(("SDPA, torch's choice", timed(forward_backward(qkv, attend))))
    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        def held(q, k, v, backend=backend):
            with sdpa_kernel([getattr(SDPBackend, backend)]):
                return attend(q, k, v)
        try:
            rows.append((f"SDPA, {backend} only", timed(forward_backward(qkv, held))))
        except RuntimeError as error:
            rows.append((f"SDPA, {backend} only", f"unavailable: {str(error).splitlines()[0][:60]}"))
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; "
          f"B {B}, T {T}, d {d}, {nh} heads of {hs}; forward + backward, bf16 autocast, median (do_bench)\n")
    print("| part | ms (one layer's worth) |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms if isinstance(ms, str) else f'{ms:.3f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
