"""SDPA's kernels alone at a model's attention shape: causal forward + backward time of flash, cuDNN and
memory-efficient attention, and each one's gradient error against fp32 math, to see what the 2.7B step's
attention (head dim 80, which flash pads to 96) would gain from another kernel.

    python3 scripts/sdpa_backends.py [--shape B H T D ...]     (default: 4 32 1024 80 and 4 32 1024 128)
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, ".")
from src.harness.timing import bench_ms  # noqa: E402

BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=4, action="append", metavar=("B", "H", "T", "D"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("sdpa_backends.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    shapes = args.shape or [[4, 32, 1024, 80], [4, 32, 1024, 128]]
    print("| B H T D | kernel | fwd+bwd ms | TFLOP/s | grad rel. error vs fp32 math |")
    print("|---|---|---:|---:|---:|")
    for b, h, t, d in shapes:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(b, h, t, d, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        dout = torch.randn(b, h, t, d, device="cuda", generator=g, dtype=torch.bfloat16)
        q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
        with sdpa_kernel([SDPBackend.MATH]):
            F.scaled_dot_product_attention(q32, k32, v32, is_causal=True).backward(dout.float())
        flops = 3.5 * 4 * b * h * t * t * d / 2  # causal: half of QK^T and PV, forward 2 matmuls + backward 5
        for name in BACKENDS:
            def step():
                with sdpa_kernel([getattr(SDPBackend, name)]):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)
            try:
                q.grad = k.grad = v.grad = None
                step()
                error = max(relative_error(x.grad, x32.grad) for x, x32 in ((q, q32), (k, k32), (v, v32)))
                ms, _, _ = bench_ms(step, "cuda", warmup_ms=100, rep_ms=400)
            except RuntimeError as e:  # a kernel that does not take this shape
                print(f"| {b} {h} {t} {d} | {name} | - | - | {str(e).splitlines()[0][:60]} |")
                continue
            print(f"| {b} {h} {t} {d} | {name} | {ms:.3f} | {flops / ms / 1e9:.0f} | {error:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
