"""Does torch.compile change bf16 training on the CPU? The local half of the fast-recipe numerics question.

    python scripts/cpu_compile_numerics.py > docs/results/numerics_small_h100_2026-11-24/cpu_compile_check.txt

A 4-layer d_model-256 model, 50 steps of the numerics check's Markov stream (batch 4 x 256), AdamW lr 1e-3 with
10 warm-up steps: eager, compiled, and compiled with inductor's emulate_precision_casts.
"""

import datetime
import platform
import sys

import torch

sys.path.insert(0, ".")
from src.train.numerics import VARIANTS, build_variant, markov_tokens, train_losses, variant_context  # noqa: E402

tokens = markov_tokens(10000, 50, 4, 256, seed=1234)
base = dict(size="custom", d_model=256, d_ff=1024, num_heads=4, num_layers=4, context_length=256, batch_size=4,
            mode="train", precision="bf16", attention="sdpa")
losses = {}
for label, name in [("eager", "plain"), ("compiled", "compiled"),
                    ("compiled, emulate_precision_casts", "compiled_emulate_casts")]:
    with variant_context(VARIANTS[name]):
        losses[label] = train_losses(build_variant(base, VARIANTS[name], lr=1e-3), tokens, warmup=10)
print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
      f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
for name, values in losses.items():
    worst = max(abs(v - e) / e for v, e in zip(values, losses["eager"]))
    print(f"{name}: loss {values[0]:.3f} -> {values[-1]:.3f}; largest relative difference from eager {worst:.4%}")
