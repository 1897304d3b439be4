"""Where the cuDNN attention op's layouts cost copies inside one compiled block (CUDA, Hopper): the layouts that
reach the op's `_in_layout` (a copy, or the tensor itself), then the kernels of a forward + backward, against SDPA.

    python3 scripts/probe_cudnn_layout.py      # from the repo root, on the GPU machine

One TransformerBlock of the 2.7B shape (d 2560, d_ff 10240, 32 heads of 80), bf16 weights, block.compile(),
x (4, 1024, 2560); the layouts of the third step, the kernels averaged over 5 more (torch.profiler). Its output of
2026-12-04: docs/results/cudnn_layout_probe_h200_2026-12-04b.txt.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from src.kernels import cudnn_attention as op  # noqa: E402
from src.model.config import ModelConfig  # noqa: E402
from src.model.transformer import TransformerBlock  # noqa: E402

LOG: list[str] = []
_in_layout = op._in_layout


def _logged(t, shape, ref):  # the op's own _in_layout, and whether it copied
    out = _in_layout(t, shape, ref)
    LOG.append(f"in_layout t{tuple(t.shape)} stride {t.stride()} ref stride {ref.stride()} -> "
               f"{'COPY' if out is not t else 'same'}")
    return out


def main() -> None:
    op._in_layout = _logged  # the op's functions look it up at each call
    for attention in ("cudnn", "sdpa"):
        torch.manual_seed(0)
        config = ModelConfig(d_model=2560, d_ff=10240, num_layers=1, num_heads=32, vocab_size=512,
                             context_length=1024, attention=attention)
        block = TransformerBlock(config).cuda().to(torch.bfloat16)
        block.compile()
        x = torch.randn(4, 1024, 2560, device="cuda", dtype=torch.bfloat16, requires_grad=True)  # (B, T, d)
        for _ in range(3):  # compile, then two steps
            LOG.clear()
            block(x).float().square().mean().backward()
        torch.cuda.synchronize()
        print(attention, "calls of the last step:", *LOG, sep="\n  ")
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                block(x).float().square().mean().backward()
            torch.cuda.synchronize()
        rows = sorted(((e.key, e.count / 5, e.device_time_total / 5 / 1000) for e in prof.key_averages()
                       if e.device_time_total > 0), key=lambda r: -r[2])
        total = sum(ms for name, _, ms in rows if "Memcpy" not in name)
        print(f"{attention}: kernel ms per fwd+bwd (sum of listed kernels) {total:.3f}")
        for name, calls, ms in rows[:16]:
            print(f"  {ms:7.3f} ms {calls:4.0f}x {name[:120]}")


if __name__ == "__main__":
    main()
