"""What a train step of one preset must cost on this GPU, part by part, and whether the optimizer can hide.

    python3 scripts/step_floor.py [--size 2.7B] [--batch_size 4] [--context_length 1024]

Times, alone and with the shapes the model really has (bf16, batch x context tokens):
  1. every matrix product of forward and backward (x W^T, dY W, dY^T x per linear layer), summed over the model, and
     the same with q/k/v as one (d, 3d) product and w1/w3 as one (d, 2 d_ff) product;
  2. SDPA forward+backward of one layer;
  3. fused AdamW over all parameters (fp32 weights, gradients and states);
  4. the backward's matrix products of every layer with each layer's AdamW step launched on a second stream as
     soon as "its" backward is done: if the optimizer's memory traffic hides under the matrix products, this takes
     about as long as the products alone, and overlapping the optimizer with backward would pay.
One buffer per shape is reused across layers, so the products may run a little faster than in the model (L2 holds
part of a 21 MB activation). Needs CUDA.
"""

import argparse
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, ".")
from src.model.config import PRESETS  # noqa: E402
from src.model.transformer import TransformerLM  # noqa: E402


def bench(fn) -> float:
    """Median ms of fn (events, L2 flushed between runs)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=200, return_mode="median")


def linear_shapes(c, fused: bool):
    """(name, d_in, d_out, count per layer) of the model's linear layers, q/k/v and w1/w3 joined if fused."""
    attention = [("qkv", c.d_model, 3 * c.d_model, 1)] if fused else [("q/k/v", c.d_model, c.d_model, 3)]
    ffn_in = [("w1w3", c.d_model, 2 * c.d_ff, 1)] if fused else [("w1/w3", c.d_model, c.d_ff, 2)]
    return attention + [("output", c.d_model, c.d_model, 1)] + ffn_in + [("w2", c.d_ff, c.d_model, 1)]


def matmul_times(tokens: int, d_in: int, d_out: int) -> dict:
    x = torch.randn(tokens, d_in, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(d_out, d_in, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn(tokens, d_out, device="cuda", dtype=torch.bfloat16)
    return {"forward": bench(lambda: x @ w.t()), "dX": bench(lambda: dy @ w), "dW": bench(lambda: dy.t() @ x)}


def matmul_table(c, tokens: int, fused: bool) -> float:
    flop_per_product = lambda d_in, d_out: 2 * tokens * d_in * d_out  # noqa: E731
    total = 0.0
    rows = [(name, d_in, d_out, count * c.num_layers) for name, d_in, d_out, count in linear_shapes(c, fused)]
    rows.append(("lm head", c.d_model, c.vocab_size, 1))
    for name, d_in, d_out, count in rows:
        t = matmul_times(tokens, d_in, d_out)
        ms = sum(t.values()) * count
        total += ms
        rates = " / ".join(f"{flop_per_product(d_in, d_out) / (v * 1e9):.0f}" for v in t.values())
        print(f"| {name} | ({tokens}, {d_in}) x ({d_in}, {d_out}) | {count} | "
              f"{t['forward']:.3f} / {t['dX']:.3f} / {t['dW']:.3f} | {rates} | {ms:.1f} |")
    print(f"| **all products{', fused' if fused else ''}** | | | | | **{total:.1f}** |")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(PRESETS), default="2.7B")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--context_length", type=int, default=1024)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("step_floor.py: needs a CUDA device", file=sys.stderr)
        return 2
    c = PRESETS[args.size]
    tokens = args.batch_size * args.context_length
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.size}, {tokens} tokens, bf16\n")
    print("| product | shape | per step | ms forward / dX / dW | TFLOP/s | ms per step |\n|---|---|---:|---|---|---:|")
    plain = matmul_table(c, tokens, fused=False)
    fused = matmul_table(c, tokens, fused=True)

    q = torch.randn(args.batch_size, c.num_heads, args.context_length, c.d_model // c.num_heads, device="cuda",
                    dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn_like(q).requires_grad_() for _ in range(2))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    grad = torch.randn_like(out)

    def attention_step():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.backward(grad)

    attention = bench(attention_step) * c.num_layers
    del q, k, v, out, grad

    # Parameters of the real model (on the meta device, then materialised without running its initialisers).
    with torch.device("meta"):
        model = TransformerLM(c)
    layers = [[torch.empty_like(p, device="cuda").normal_() for p in layer.parameters()] for layer in model.layers]
    rest = [torch.empty_like(p, device="cuda").normal_()
            for n, p in model.named_parameters() if not n.startswith("layers.")]
    groups = []
    for params in layers + [rest]:
        params = [torch.nn.Parameter(p) for p in params]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        groups.append(torch.optim.AdamW(params, lr=1e-4, fused=True))
    n_params = sum(p.numel() for g in groups for p in g.param_groups[0]["params"])

    def optimizer_step():
        for g in groups:
            g.step()

    optimizer = bench(optimizer_step)
    gb = 28 * n_params / 1e9  # read p, g, m, v and write p, m, v: 7 fp32 words per parameter

    # Backward products of each layer on the main stream; that layer's AdamW on a side stream once they are done.
    names = linear_shapes(c, fused=False)
    bufs = {(d_in, d_out): (torch.randn(tokens, d_in, device="cuda", dtype=torch.bfloat16),
                            torch.randn(d_out, d_in, device="cuda", dtype=torch.bfloat16),
                            torch.randn(tokens, d_out, device="cuda", dtype=torch.bfloat16))
            for _, d_in, d_out, _ in names}

    def layer_backward_products():
        for _, d_in, d_out, count in names:
            x, w, dy = bufs[(d_in, d_out)]
            for _ in range(count):
                dy @ w
                dy.t() @ x

    side = torch.cuda.Stream(priority=0)
    events = [torch.cuda.Event() for _ in layers]

    def backward_products_only():
        for _ in layers:
            layer_backward_products()

    def backward_with_overlapped_optimizer():
        main = torch.cuda.current_stream()
        for i in range(len(layers)):
            layer_backward_products()
            events[i].record(main)
            side.wait_event(events[i])
            with torch.cuda.stream(side):
                groups[i].step()
        main.wait_stream(side)
        groups[-1].step()

    def backward_then_optimizer():
        backward_products_only()
        optimizer_step()

    products = bench(backward_products_only)
    serial = bench(backward_then_optimizer)
    overlapped = bench(backward_with_overlapped_optimizer)

    print(f"\n| part | ms |\n|---|---:|")
    print(f"| all matrix products, forward + backward | {plain:.1f} |")
    print(f"| the same, q/k/v and w1/w3 joined | {fused:.1f} |")
    print(f"| SDPA forward + backward, {c.num_layers} layers | {attention:.1f} |")
    print(f"| fused AdamW, {n_params / 1e9:.2f}B parameters ({gb:.0f} GB: {gb / optimizer:.2f} TB/s) | {optimizer:.1f} |")
    print(f"| backward's products (dX, dW) alone | {products:.1f} |")
    print(f"| ... then AdamW | {serial:.1f} |")
    print(f"| ... with each layer's AdamW on a second stream | {overlapped:.1f} |")
    print(f"| optimizer time hidden by overlapping | {serial - overlapped:.1f} of {serial - products:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
