"""The Triton FlashAttention-2's two backward strategies, split and fused, against SDPA on one CUDA GPU.

    python scripts/flash_backward_variants.py > docs/results/flash_backward_variants_<gpu>_<date>.md

q, k, v (16, 1, T, d) bf16 causal, T 4096 and 16384, d 64 and 128, run eagerly and timed by src.profiling.attention's
measure(): triton.testing.do_bench medians with 20th-80th percentiles, in ms, autotuning and warm-up outside every
timing. Then the standard case as `python -m src.profiling.attention --standard_case` times it: 3-D q, k, v
(16, 16384, 64) bf16 causal under torch.compile, o.sum().backward(), gradients accumulating; here also with backward
alone, and SDPA. TFLOP/s count causal as half, backward as 2.5x the forward's products (attention.py's convention).
Before timing a shape, the split and fused gradients must agree: max|fused - split| / max|split| <= 1e-2 for each
of dQ, dK, dV, else the script stops with status 1. Without CUDA it exits with status 2. The last output is one
markdown table.
"""

import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.profiling.attention import forward_flops, run_one  # noqa: E402
from src.profiling.environment import collect_environment  # noqa: E402

BATCH = 16
CASES = [(t, d) for t in (4096, 16384) for d in (64, 128)]  # (T, d), one head
STANDARD = dict(batch_size=BATCH, num_heads=1, seq_len=16384, head_dim=64, causal=True)
VARIANTS = ("sdpa", "split", "fused")
WARMUP_MS, REP_MS = 100, 500  # per timing: 3 variants x (4 + 1) shapes x 2-3 timings stays under a minute
AGREEMENT_TOL = 1e-2  # bf16: a few units of its 2^-8 rounding step, relative to the largest gradient entry


def disagreement(flash_triton, shape) -> float:
    """max over dQ, dK, dV of max|fused - split| / max|split| on random bf16 inputs of `shape`, causal. Also leaves
    both strategies' backward kernels autotuned for this shape."""
    g = torch.Generator(device="cuda").manual_seed(sum(shape))
    q, k, v, dout = (torch.randn(shape, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    out, lse = flash_triton.flash_forward(q, k, v, True)
    grads = {}
    for backward in ("split", "fused"):
        flash_triton.BACKWARD = backward
        grads[backward] = flash_triton.flash_backward(q, k, v, out, lse, dout, True)
    return max(((f.float() - s.float()).abs().max() / s.float().abs().max()).item()
               for f, s in zip(grads["fused"], grads["split"]))


def standard_case(flash_triton, variant: str) -> dict:
    """Backward alone and forward+backward of the standard case, compiled, in ms with 20th-80th percentiles."""
    import triton.testing

    torch._dynamo.reset()  # BACKWARD is read while the backward is traced: no graph of the other strategy reused
    if variant == "sdpa":
        fn = torch.compile(lambda q, k, v, is_causal: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal))
    else:
        flash_triton.BACKWARD = variant
        fn = torch.compile(flash_triton.FlashAttentionTriton.apply)
    shape = (STANDARD["batch_size"], STANDARD["seq_len"], STANDARD["head_dim"])
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))

    def forward_backward():
        fn(q, k, v, True).sum().backward()

    forward_backward()  # compile and autotune outside the timings
    loss = fn(q, k, v, True).sum()
    result = {}
    for name, run in (("backward", lambda: loss.backward(retain_graph=True)), ("forward_backward", forward_backward)):
        median, p20, p80 = triton.testing.do_bench(run, warmup=WARMUP_MS, rep=REP_MS, quantiles=[0.5, 0.2, 0.8])
        result.update({f"{name}_ms": median, f"{name}_ms_p20": p20, f"{name}_ms_p80": p80})
    flops = forward_flops(STANDARD)
    result["backward_tflops"] = 2.5 * flops / result["backward_ms"] / 1e9
    result["forward_backward_tflops"] = 3.5 * flops / result["forward_backward_ms"] / 1e9
    result["tiles"] = "compiled: inductor autotunes its own copy" if variant != "sdpa" else ""
    return result


def _ms(r: dict, name: str) -> str:
    return f"{r[f'{name}_ms']:.3f} ({r[f'{name}_ms_p20']:.3f}-{r[f'{name}_ms_p80']:.3f})"


def format_table(rows: list[tuple[str, str, dict]]) -> str:
    """rows: (case, variant, result); fwd+bwd throughput is also given as a multiple of SDPA's in the same case."""
    sdpa = {case: r for case, variant, r in rows if variant == "sdpa" and r.get("status") == "ok"}
    lines = ["| case | backward | bwd ms (p20-p80) | fwd+bwd ms (p20-p80) | bwd TFLOP/s | fwd+bwd TFLOP/s | "
             "fwd+bwd speed vs SDPA | grads vs split | tiles |", "|---|---|---|---|---|---|---|---|---|"]
    for case, variant, r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {case} | {variant} | {r.get('status')}: {r.get('error', '')} | | | | | | |")
            continue
        speedup = (f"{sdpa[case]['forward_backward_ms'] / r['forward_backward_ms']:.2f}x" if case in sdpa else "")
        agreement = f"{r['disagreement']:.1e}" if "disagreement" in r else ""
        lines.append(f"| {case} | {variant} | {_ms(r, 'backward')} | {_ms(r, 'forward_backward')} | "
                     f"{r['backward_tflops']:.1f} | {r['forward_backward_tflops']:.1f} | {speedup} | {agreement} | "
                     f"{r.get('tiles', '')} |")
    return "\n".join(lines)


def main() -> int:
    if not torch.cuda.is_available():
        print("flash_backward_variants.py times CUDA kernels: no CUDA device is visible", file=sys.stderr)
        return 2
    from src.kernels import flash_triton

    start = time.perf_counter()
    env = collect_environment("cuda")
    rows = []
    cases = [(f"(16, 1, {t}, {d})", (BATCH, 1, t, d)) for t, d in CASES]
    cases.append(("standard (16, 16384, 64) compiled", (BATCH, STANDARD["seq_len"], STANDARD["head_dim"])))
    for case, shape in cases:
        standard = len(shape) == 3
        worst = disagreement(flash_triton, shape)
        print(f"{case}: fused vs split gradients {worst:.2e}", file=sys.stderr, flush=True)
        if not worst <= AGREEMENT_TOL:  # `not <=` also catches NaN
            print(f"{case}: the fused and split gradients differ by {worst:.2e} (> {AGREEMENT_TOL}); not timing",
                  file=sys.stderr)
            return 1
        for variant in VARIANTS:
            if standard:
                try:
                    result = dict(standard_case(flash_triton, variant), status="ok")
                except Exception as error:  # noqa: BLE001 - one failed compile must not lose the other rows
                    result = {"status": "error", "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
            else:
                if variant != "sdpa":
                    flash_triton.BACKWARD = variant
                c = dict(implementation="sdpa" if variant == "sdpa" else "flash", batch_size=BATCH, num_heads=1,
                         seq_len=shape[2], head_dim=shape[3], dtype="bf16", causal=True, warmup_ms=WARMUP_MS,
                         rep_ms=REP_MS)
                result = run_one(c, "cuda")  # measure(), errors and OOM kept as a row's status
            if variant == "fused":
                result["disagreement"] = worst
            rows.append((case, variant, result))
            summary = (f"bwd {_ms(result, 'backward')}, fwd+bwd {_ms(result, 'forward_backward')} ms; "
                       f"{result.get('tiles', '')}" if result["status"] == "ok" else result.get("error", ""))
            print(f"{case} {variant}: {summary}", file=sys.stderr, flush=True)
    print(f"# {env['gpu_name']}, driver {env['driver_version']}, CUDA {env['cuda_version']}, torch "
          f"{env['torch_version']}, triton {env['triton_version']}, commit {env['git_commit']}, {env['timestamp']}; "
          f"this script ran {time.perf_counter() - start:.0f} s\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
