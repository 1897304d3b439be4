"""Are SDPA's gradients right under torch.compile, kernel by kernel? The isolated form of the fast recipe's numerics bug.

    python3 scripts/cudnn_sdpa_compile_check.py

One attention layer of the small preset (q/k/v projections, causal SDPA, output projection; B 4, T 1024, 12 heads
of 64, bf16 autocast), eager and compiled, with SDPA held to one kernel at a time. Each gradient is compared with
the same layer in float64 (math kernel): ||g - ref|| / ||ref||. bf16 arithmetic lands near 1e-2. Needs CUDA.
Compile caches are off: the kernel choice is made while tracing, and a graph cached by an earlier row (the same
code, another kernel) would otherwise be reused, as it was in the first run of this script.
"""

import contextlib
import re
import sys
import warnings

import torch
import torch._functorch.config
import torch._inductor.config
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

B, T, NH, HS = 4, 1024, 12, 64
ATTENTION_KERNEL = re.compile(r"sdpa|flash|fmha|attention|cudnn", re.IGNORECASE)
D = NH * HS


def attention_layer(x, wq, wk, wv, wo):  # x (B, T, D) -> (B, T, D)
    q, k, v = ((x @ w.t()).view(B, T, NH, HS).transpose(1, 2) for w in (wq, wk, wv))  # (B, NH, T, HS)
    q, k = q.float().contiguous().to(v.dtype), k.float().contiguous().to(v.dtype)  # as the model's RoPE leaves them
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, NH, T, HS)
    return y.transpose(1, 2).reshape(B, T, D) @ wo.t()


def gradients(fn, inputs, grad_out, dtype):
    leaves = [t.detach().to(dtype).requires_grad_() for t in inputs]
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype != torch.float64):
        out = fn(*leaves)
    out.backward(grad_out.to(out.dtype))
    return [t.grad.double() for t in leaves]


def name(backend) -> str:
    return backend.name if backend else "default (torch's choice)"


def main() -> int:
    if not torch.cuda.is_available():
        print("cudnn_sdpa_compile_check.py: needs a CUDA device", file=sys.stderr)
        return 2
    torch._functorch.config.enable_autograd_cache = False
    torch._inductor.config.fx_graph_cache = False
    torch.manual_seed(0)
    x = torch.randn(B, T, D, device="cuda")
    weights = [torch.randn(D, D, device="cuda") / D**0.5 for _ in range(4)]
    grad_out = torch.randn(B, T, D, device="cuda")
    with sdpa_kernel(SDPBackend.MATH):
        reference = gradients(attention_layer, [x, *weights], grad_out, torch.float64)
    names = ["x", "wq", "wk", "wv", "wo"]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}\n")
    print(f"| SDPA kernel | mode | {' | '.join('d' + n for n in names)} | attention kernels that ran | warnings |")
    print(f"|---|---|{'---:|' * len(names)}---|---|")
    backends = [None, SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    for backend in backends:
        for mode in ("eager", "compiled"):
            torch._dynamo.reset()
            fn = torch.compile(attention_layer) if mode == "compiled" else attention_layer
            chosen = sdpa_kernel(backend) if backend else contextlib.nullcontext()
            with chosen, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    gradients(fn, [x, *weights], grad_out, torch.float32)  # compile outside the profiler
                    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                        grads = gradients(fn, [x, *weights], grad_out, torch.float32)
                except RuntimeError as error:
                    print(f"| {name(backend)} | {mode} | {str(error).splitlines()[0][:80]} |")
                    continue
            errors = [float((g - r).norm() / r.norm()) for g, r in zip(grads, reference)]
            said = "; ".join(sorted({str(w.message).splitlines()[0][:90] for w in caught})) or ""
            kernels = sorted({e.name[:40] for e in prof.events() if ATTENTION_KERNEL.search(e.name)})
            print(f"| {name(backend)} | {mode} | {' | '.join(f'{e:.1e}' for e in errors)} | {', '.join(kernels)} "
                  f"| {said} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
