"""Does a faster recipe still train the same? Train the same model from the same weights on the same tokens with
the plain bf16 autocast step and with the fast recipe, and compare the loss at every step.

    python -m src.profiling.numerics --size small --steps 100 --out docs/results/numerics

The tokens, the variants and how each is trained live in src/train/numerics.py; this module is the command:
options, the loss table and plot, and the verdict (exit 1 when a variant leaves the tolerance).
"""

import argparse
import csv
import io
import math
import os
import sys
import time

import torch

from src.harness.cli import (EXIT_USAGE, OneLineParser, UsageError, first_paragraph, non_negative_int,
                             parse_and_resolve, positive_float, positive_int, resolve_device)
from src.harness.results import check_writable, replace_whole
from src.model.config import PRESETS
from src.spec import RunSpec
from src.train.numerics import (LEARNING_RATE, SUCCESSORS, VARIANTS, WARMUP_STEPS, attention_kernels, build_variant,
                                first_gradients, gradient_errors, markov_tokens, train_losses, variant_context)

TOLERANCE = 0.02  # fast-recipe loss within 2% of the plain bf16 step's, at every step


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m src.profiling.numerics", description=first_paragraph(__doc__))
    parser.add_argument("--size", choices=list(PRESETS), default="small")
    parser.add_argument("--num_layers", type=positive_int, default=None,
                        help="fewer layers than the preset's (a CPU-sized check of the same widths)")
    parser.add_argument("--steps", type=positive_int, default=100)
    parser.add_argument("--batch_size", type=positive_int, default=4)
    parser.add_argument("--context_length", type=positive_int, default=1024)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["plain", "plain_repeat", "fast"],
                        help="the first is the reference the others are compared with")
    parser.add_argument("--lr", type=positive_float, default=LEARNING_RATE)
    parser.add_argument("--warmup", type=non_negative_int, default=WARMUP_STEPS,
                        help="steps of linear learning-rate warm-up")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--out", default="numerics", help="directory for losses.csv and losses.png")
    parser.add_argument("--gradients", action="store_true",
                        help="first compare each variant's first gradient with an fp32 eager one (gradients.csv)")
    return parser


def resolve(args: argparse.Namespace) -> str:
    """The device, once every option is known good (UsageError otherwise). Starts no work, creates nothing."""
    device = resolve_device(args.device)
    try:
        check_writable(args.out, directory=True)
    except ValueError as error:
        raise UsageError(f"--out: {error}") from None
    for name in args.variants:  # every variant's configuration, before the first one trains (fp8 needs a GPU)
        try:
            RunSpec(**{**base_spec(args, device), **VARIANTS[name].spec})
        except ValueError as error:
            raise UsageError(f"--variants {name}: {error}") from None
    return device


def base_spec(args: argparse.Namespace, device: str) -> dict:
    """The plain step's RunSpec fields, which each variant changes."""
    preset = PRESETS[args.size]
    return dict(size=args.size, d_model=preset.d_model, d_ff=preset.d_ff, num_heads=preset.num_heads,
                num_layers=args.num_layers or preset.num_layers, vocab_size=preset.vocab_size,
                context_length=args.context_length,
                batch_size=args.batch_size, mode="train", precision="bf16", attention="sdpa", device=device)


def main(argv=None) -> int:
    parsed = parse_and_resolve(build_parser, resolve, argv, "numerics")
    if parsed is None:
        return EXIT_USAGE
    args, device = parsed
    args.device = device
    os.makedirs(args.out, exist_ok=True)
    preset = PRESETS[args.size]
    base = base_spec(args, device)
    tokens = markov_tokens(preset.vocab_size, args.steps, args.batch_size, args.context_length, seed=1234)
    if args.gradients:
        _compare_first_gradients(base, args.variants, tokens[0], os.path.join(args.out, "gradients.csv"))
    losses = {}
    for name in args.variants:
        start = time.perf_counter()
        with variant_context(VARIANTS[name]):
            losses[name] = train_losses(build_variant(base, VARIANTS[name], args.lr), tokens, args.warmup)
        # After every variant, not once at the end: a GPU run of six variants cut by its call's time limit
        # (2026-12-04, 280 s) left nothing of the four it had finished.
        _write_losses(os.path.join(args.out, "losses.csv"), losses, args.steps)
        print(f"numerics: {name}: {args.steps} steps in {time.perf_counter() - start:.1f} s", file=sys.stderr,
              flush=True)
    reference, others = args.variants[0], args.variants[1:]
    deviation = {n: [abs(x - r) / r for r, x in zip(losses[reference], losses[n])] for n in others}
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


def _write_losses(path: str, losses: dict[str, list[float]], steps: int) -> None:
    """losses.csv, a column per variant trained so far; replaced whole (a kill mid-write keeps the previous one)."""
    buf = io.StringIO()
    writer = csv.writer(buf)  # csv's own "\r\n" line ends, as before
    writer.writerow(["step", *losses])
    writer.writerows([i, *(f"{column[i]:.6f}" for column in losses.values())] for i in range(steps))
    replace_whole(path, buf.getvalue())


def _compare_first_gradients(base: dict, names: list[str], batch: torch.Tensor, path: str) -> None:
    """Print and write how far each variant's first gradient is from fp32 eager arithmetic (TF32 off)."""
    with variant_context(VARIANTS["plain_fp32"]):
        _, reference = first_gradients(build_variant(base, VARIANTS["plain_fp32"], LEARNING_RATE), batch)
    rows = []
    for name in names:
        with variant_context(VARIANTS[name]):
            step = build_variant(base, VARIANTS[name], LEARNING_RATE)
            loss, grads = first_gradients(step, batch)
            kernels = attention_kernels(step, batch)
        rows.append({"variant": name, "loss": loss, **gradient_errors(grads, reference), "attention_kernels": kernels})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("| variant | first loss | gradient error vs fp32 | worst parameter | its error | signs flipped | "
          "attention kernels |")
    print("|---|---:|---:|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['loss']:.6f} | {r['relative_error']:.2e} | {r['worst_parameter']} | "
              f"{r['worst_relative_error']:.2e} | {r['sign_flips']:.3%} | {r['attention_kernels']} |")
    print()


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
