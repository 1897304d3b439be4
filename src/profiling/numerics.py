"""Does a faster recipe still train the same? Train the same model from the same weights on the same tokens with
the plain bf16 autocast step and with the fast recipe, and compare the loss at every step.

    python -m src.profiling.numerics --size small --steps 100 --out docs/results/numerics

The tokens come from a fixed random Markov chain over ACTIVE_TOKENS of the vocabulary in which every token has
SUCCESSORS equally likely next tokens: a model can learn it within 100 steps (uniform random tokens would keep the
loss at ln(vocab)), and its entropy floor ln(SUCCESSORS) keeps the loss away from zero, where relative differences
between two runs would mean nothing.
"""

import argparse
import csv
import math
import os
import sys

import torch

from src.model.config import PRESETS
from src.profiling.spec import RunSpec
from src.profiling.training import TrainStep, build_model

SUCCESSORS = 4
ACTIVE_TOKENS = 1024
LEARNING_RATE = 3e-4
WARMUP_STEPS = 10  # linear learning-rate warm-up: Adam's first, sign-like steps otherwise make the loss chaotic
TOLERANCE = 0.02  # fast-recipe loss within 2% of the plain bf16 step's, at every step


def markov_tokens(vocab: int, steps: int, batch: int, seq: int, seed: int) -> torch.Tensor:
    """(steps, batch, seq + 1) int64 tokens from a fixed chain: token t is followed by one of SUCCESSORS tokens."""
    g = torch.Generator().manual_seed(seed)
    active = torch.randperm(vocab, generator=g)[:ACTIVE_TOKENS]  # which token ids the chain uses
    successors = active[torch.randint(0, len(active), (vocab, SUCCESSORS), generator=g)]  # (vocab, SUCCESSORS)
    tokens = torch.empty(steps * batch, seq + 1, dtype=torch.long)
    tokens[:, 0] = active[torch.randint(0, len(active), (steps * batch,), generator=g)]
    choices = torch.randint(0, SUCCESSORS, (steps * batch, seq), generator=g)
    for t in range(seq):
        tokens[:, t + 1] = successors[tokens[:, t], choices[:, t]]
    return tokens.view(steps, batch, seq + 1)


# Each variant changes one thing on the way from the plain step to the fast recipe, so a difference can be traced.
VARIANTS = {
    "plain": ({}, {}),  # eager, SDPA, foreach AdamW
    "plain_repeat": ({}, {}),  # the same again: run-to-run nondeterminism (atomics in embedding/attention backward)
    "fused_adamw": ({}, {"fused_adamw": True}),
    "compiled": ({"compile": True}, {}),
    "compiled_cuda_graphs": ({"compile": True}, {"cuda_graphs": True}),
    "fast": ({"recipe": "fast"}, {}),
}


def train_losses(spec: RunSpec, tokens: torch.Tensor, lr: float = LEARNING_RATE, warmup: int = WARMUP_STEPS,
                 **step_options) -> list[float]:
    torch.manual_seed(spec.seed)  # the same initial weights for every recipe
    model = build_model(spec)
    step = TrainStep(spec, model, lr=lr, **step_options)
    schedule = torch.optim.lr_scheduler.LambdaLR(step.optimizer, lambda i: min(1.0, (i + 1) / max(warmup, 1)))
    tokens = tokens.to(spec.device)
    losses = []
    for i in range(tokens.shape[0]):
        losses.append(step(tokens[i, :, :-1], tokens[i, :, 1:], None))
        schedule.step()
    return [float(loss) for loss in losses]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.profiling.numerics", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(PRESETS), default="small")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--context_length", type=int, default=1024)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["plain", "plain_repeat", "fast"],
                        help="the first is the reference the others are compared with")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE)
    parser.add_argument("--warmup", type=int, default=WARMUP_STEPS, help="steps of linear learning-rate warm-up")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="numerics", help="directory for losses.csv and losses.png")
    args = parser.parse_args(argv)
    if min(args.steps, args.batch_size, args.context_length) < 1:
        parser.error("--steps, --batch_size and --context_length must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    os.makedirs(args.out, exist_ok=True)
    preset = PRESETS[args.size]
    base = dict(size=args.size, d_model=preset.d_model, d_ff=preset.d_ff, num_heads=preset.num_heads,
                num_layers=preset.num_layers, context_length=args.context_length, batch_size=args.batch_size,
                mode="train", precision="bf16", attention="sdpa", device=args.device)
    tokens = markov_tokens(preset.vocab_size, args.steps, args.batch_size, args.context_length, seed=1234)
    losses = {}
    for name in args.variants:
        spec_changes, step_options = VARIANTS[name]
        losses[name] = train_losses(RunSpec(**base, **spec_changes), tokens, args.lr, args.warmup, **step_options)
    reference, others = args.variants[0], args.variants[1:]
    deviation = {n: [abs(x - r) / r for r, x in zip(losses[reference], losses[n])] for n in others}
    with open(os.path.join(args.out, "losses.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *args.variants])
        writer.writerows([i, *(f"{losses[n][i]:.6f}" for n in args.variants)] for i in range(args.steps))
    _plot(losses, deviation, reference, args, os.path.join(args.out, "losses.png"))
    print(f"| step | {' | '.join(args.variants)} |\n|---:|{'---:|' * len(args.variants)}")
    for i in sorted({*range(0, args.steps, 10), args.steps - 1}):
        cells = [f"{losses[reference][i]:.4f}"] + [f"{losses[n][i]:.4f} ({deviation[n][i]:+.2%})" for n in others]
        print(f"| {i} | {' | '.join(cells)} |")
    first, last = losses[reference][0], losses[reference][-1]
    fell = last <= first / 2
    print(f"\n{reference}: loss fell from {first:.3f} to {last:.3f} (floor ln {SUCCESSORS} = {math.log(SUCCESSORS):.3f}): "
          f"{'at least' if fell else 'NOT'} by half")
    ok = fell
    for n in others:
        worst = max(range(args.steps), key=deviation[n].__getitem__)
        within = deviation[n][worst] <= TOLERANCE
        ok &= within
        print(f"{n}: largest relative difference from {reference} {deviation[n][worst]:.2%} at step {worst} "
              f"({'within' if within else 'OUTSIDE'} {TOLERANCE:.0%}); at the last step {deviation[n][-1]:.2%}")
    return 0 if ok else 1


def _plot(losses, deviation, reference, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=[2, 1])
    for name, values in losses.items():
        top.plot(values, "-" if name == reference else "--", label=name)
    top.axhline(math.log(SUCCESSORS), color="gray", lw=0.8, ls=":", label=f"entropy floor ln {SUCCESSORS}")
    top.set_ylabel("training loss (nats)")
    top.set_title(f"{args.size}, bf16 autocast, batch {args.batch_size} x {args.context_length}, AdamW lr {args.lr:g} "
                  f"(warm-up {args.warmup}), {device}", fontsize=10)
    top.legend()
    for name, values in deviation.items():
        bottom.plot([100 * v for v in values], label=f"{name} vs {reference}")
    bottom.axhline(100 * TOLERANCE, color="red", lw=0.8, ls="--", label="2% tolerance")
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("relative difference (%)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
