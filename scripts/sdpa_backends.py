"""SDPA's kernels and our cuDNN op alone at a model's attention shape: causal forward + backward time (GPU) and the
host's time to issue one call, each one's gradient error against fp32 math, and the layouts they return, to see
what the 2.7B step's attention (head dim 80, which flash pads to 96) gains from another kernel.

    python3 scripts/sdpa_backends.py [--shape B H T D ...] [--layout model|contiguous]

--layout model (the default) gives the kernels what our attention layer does: q and k contiguous (B, H, T, D) from
RoPE, v a (B, T, H, D) projection viewed (B, H, T, D), and the output's gradient arriving the same way from the
output projection's backward; contiguous gives every tensor contiguous (B, H, T, D).
"""

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, ".")
from src.harness.timing import bench_ms  # noqa: E402
from src.kernels.cudnn_attention import cudnn_attention  # noqa: E402

KERNELS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "cudnn_op")
HOST_CALLS = 50  # calls issued back to back without a sync: the host's time per call


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm())


def inputs(b, h, t, d, layout: str, g):
    def bhtd_view():  # (B, T, H*D) memory seen as (B, H, T, D), as a projection's output is
        x = torch.randn(b, t, h * d, device="cuda", generator=g, dtype=torch.bfloat16)
        return x.view(b, t, h, d).transpose(1, 2)

    def contiguous():
        return torch.randn(b, h, t, d, device="cuda", generator=g, dtype=torch.bfloat16)

    q, k = contiguous(), contiguous()
    v, dout = (bhtd_view(), bhtd_view()) if layout == "model" else (contiguous(), contiguous())
    return [x.requires_grad_() for x in (q, k, v)], dout


def attend(name):
    if name == "cudnn_op":
        return lambda q, k, v: cudnn_attention(q, k, v, is_causal=True)

    def sdpa(q, k, v):
        with sdpa_kernel([getattr(SDPBackend, name)]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return sdpa


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=4, action="append", metavar=("B", "H", "T", "D"))
    p.add_argument("--layout", choices=("model", "contiguous"), default="model")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("sdpa_backends.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    shapes = args.shape or [[4, 32, 1024, 80], [4, 32, 1024, 128]]
    print(f"layout: {args.layout}\n")
    print("| B H T D | kernel | fwd+bwd ms | TFLOP/s | host us per call | grad rel. error vs fp32 math (q, k, v) "
          "| strides of out, dq, dv |")
    print("|---|---|---:|---:|---:|---|---|")
    for b, h, t, d in shapes:
        (q, k, v), dout = inputs(b, h, t, d, args.layout, torch.Generator(device="cuda").manual_seed(0))
        q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
        with sdpa_kernel([SDPBackend.MATH]):
            F.scaled_dot_product_attention(q32, k32, v32, is_causal=True).backward(dout.float())
        flops = 3.5 * 4 * b * h * t * t * d / 2  # causal: half of QK^T and PV, forward 2 matmuls + backward 5
        for name in KERNELS:
            fn = attend(name)

            def step():
                fn(q, k, v).backward(dout)
            try:
                q.grad = k.grad = v.grad = None
                out = fn(q, k, v)
                out.backward(dout)
                pairs = ((q, q32), (k, k32), (v, v32))
                errors = ", ".join(f"{relative_error(x.grad, x32.grad):.1e}" for x, x32 in pairs)
                strides = "; ".join(str(tuple(x.stride())) for x in (out, q.grad, v.grad))
                ms, _, _ = bench_ms(step, "cuda", warmup_ms=100, rep_ms=400)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(HOST_CALLS):
                    step()
                host_us = (time.perf_counter() - start) / HOST_CALLS * 1e6  # the GPU is behind: host time alone
                torch.cuda.synchronize()
            except (RuntimeError, ValueError) as e:  # a kernel that does not take this shape
                print(f"| {b} {h} {t} {d} | {name} | - | - | - | {str(e).splitlines()[0][:60]} | |")
                continue
            print(f"| {b} {h} {t} {d} | {name} | {ms:.3f} | {flops / ms / 1e9:.0f} | {host_us:.0f} | {errors} "
                  f"| {strides} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
