"""Stand-alone reproduction: torch.compile + cuDNN SDPA gives wrong gradients in a small pre-norm Transformer LM.

    python3 scripts/cudnn_compiled_grad_repro.py [--layers 12 2 1] [--batch 4] [--seq 1024]

Needs only torch and a CUDA GPU with cuDNN attention (Hopper was where it was seen). Nothing else is imported, so
the file can be attached to an upstream report as it is.

What was seen (torch 2.11.0+cu130, cuDNN 9.19.0, H100, 2026-11-24): a 12-layer model (d_model 768, 12 heads of 64,
SwiGLU d_ff 3072, RMSNorm, RoPE, untied head, vocab 10000; bf16 autocast; batch 4 x 1024 tokens), compiled with its
cross-entropy, its SDPA held to cuDNN: the first gradient was 0.70 (relative L2) away from an fp32 reference, worst
in the last layer's k projection (1.36), against 0.007 for eager cuDNN and for compiled flash. A single compiled
attention layer fed a random upstream gradient did NOT show it (0.0065, as eager), so the whole model is built here.

Each model depth in --layers runs four ways from the same weights and tokens, largest first (12, the case seen),
then smaller ones while they still show it: fp32 eager with SDPA's math kernel (the reference), then under bf16
autocast eager cuDNN, compiled cuDNN, compiled flash. Printed: versions, each variant's relative L2 error over all
gradients and its worst parameter, a REPRODUCED line per depth that shows it, and a last verdict line (REPRODUCED
with the smallest depth, or NOT REPRODUCED). Exit status 0 either way; 2 without CUDA.
"""

import argparse
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# compiled cuDNN error above this many times eager cuDNN's (and above BAD_ERROR) while compiled flash stays near
# eager: a gradient bug, not bf16 rounding (seen: 0.70 against 0.007, a factor of 100)
BAD_FACTOR, BAD_ERROR = 10.0, 0.05
BACKEND = SDPBackend.MATH  # the SDPA kernel; chosen inside the attention call so that it is part of any traced graph


class Block(nn.Module):
    def __init__(self, d, nh, d_ff, max_len):
        super().__init__()
        self.nh = nh
        self.ln1, self.ln2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.qkv_o = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(4))
        self.w1, self.w3 = nn.Linear(d, d_ff, bias=False), nn.Linear(d, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d, bias=False)
        hs = d // nh
        angles = torch.outer(torch.arange(max_len).float(), 10_000.0 ** (-torch.arange(0, hs, 2).float() / hs))
        self.register_buffer("cos", angles.cos(), persistent=False)  # (T, hs/2)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rope(self, x):  # (B, nh, T, hs): rotate interleaved pairs, in fp32, round once
        T = x.shape[-2]
        cos, sin = self.cos[:T], self.sin[:T]
        even, odd = x[..., 0::2].float(), x[..., 1::2].float()
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(x.dtype)

    def norm(self, ln, x):  # RMSNorm in fp32, cast back (as the CS336 model)
        return ln(x.float()).to(x.dtype)

    def forward(self, x):  # (B, T, d)
        B, T, d = x.shape
        h = self.norm(self.ln1, x)
        q, k, v = (p(h).view(B, T, self.nh, d // self.nh).transpose(1, 2) for p in self.qkv_o[:3])  # (B, nh, T, hs)
        q, k = self.rope(q), self.rope(k)
        with sdpa_kernel(BACKEND):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        x = x + self.qkv_o[3](y.transpose(1, 2).reshape(B, T, d))
        h = self.norm(self.ln2, x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class LM(nn.Module):
    def __init__(self, layers, vocab=10_000, d=768, nh=12, d_ff=3072, max_len=1024):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, nh, d_ff, max_len) for _ in range(layers))
        self.ln = nn.RMSNorm(d, eps=1e-5)
        self.head = nn.Linear(d, vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # truncated normal, std sqrt(2 / (fan_in + fan_out)); embeddings std 1
                std = 1.0 if name == "emb.weight" else math.sqrt(2.0 / sum(p.shape))
                nn.init.trunc_normal_(p, std=std, a=-3 * std, b=3 * std)

    def forward(self, inputs, targets):  # (B, T), (B, T) -> scalar loss
        x = self.emb(inputs)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x.float()).to(x.dtype))
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def gradients(model, tokens, backend, compiled, autocast):
    global BACKEND
    BACKEND = backend
    torch._dynamo.reset()
    model.zero_grad(set_to_none=True)
    fn = torch.compile(model) if compiled else model
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        loss = fn(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    return {n: p.grad.double() for n, p in model.named_parameters()}


def errors(grads, reference):
    """Relative L2 error over all gradients, and the worst parameter's."""
    total = math.sqrt(sum(float((grads[n] - r).norm()) ** 2 for n, r in reference.items()))
    total /= math.sqrt(sum(float(r.norm()) ** 2 for r in reference.values()))
    worst = max(reference, key=lambda n: float((grads[n] - reference[n]).norm() / reference[n].norm()))
    return total, worst, float((grads[worst] - reference[worst]).norm() / reference[worst].norm())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[12, 2, 1])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("cudnn_compiled_grad_repro.py: needs a CUDA GPU (cuDNN attention); none found", file=sys.stderr)
        return 2
    from torch._functorch import config as functorch_config  # past the check: the compiler's import takes 2.7 s
    from torch._inductor import config as inductor_config

    functorch_config.enable_autograd_cache = False  # each variant compiles afresh: a cached graph
    inductor_config.fx_graph_cache = False  # would carry another variant's kernel choice
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}, batch {args.batch} x {args.seq}")
    smallest = None
    for layers in sorted(args.layers, reverse=True):  # the known case first: a verdict even if cut short later
        torch.manual_seed(0)
        model = LM(layers, max_len=args.seq).cuda()
        tokens = torch.randint(0, 10_000, (args.batch, args.seq + 1), device="cuda")
        reference = gradients(model, tokens, SDPBackend.MATH, compiled=False, autocast=False)
        print(f"\n{layers} layer(s): relative L2 error of the gradients against fp32 eager (math SDPA)", flush=True)
        result = {}
        for name, backend, compiled in (("eager cuDNN", SDPBackend.CUDNN_ATTENTION, False),
                                        ("compiled cuDNN", SDPBackend.CUDNN_ATTENTION, True),
                                        ("compiled flash", SDPBackend.FLASH_ATTENTION, True)):
            try:
                result[name] = errors(gradients(model, tokens, backend, compiled, autocast=True), reference)
            except RuntimeError as error:  # e.g. no cuDNN attention on this GPU or build
                print(f"  {name:15s} failed: {str(error).splitlines()[0][:120]}")
                continue
            total, worst, worst_error = result[name]
            print(f"  {name:15s} {total:.2e}  worst {worst} {worst_error:.2e}", flush=True)
        eager, bad, flash = (result.get(n, (math.nan,))[0] for n in ("eager cuDNN", "compiled cuDNN", "compiled flash"))
        if not bad > max(BAD_FACTOR * eager, BAD_ERROR) or not flash < BAD_FACTOR * eager:  # NaN: not shown
            break  # a smaller model is not expected to show what this one does not
        smallest = layers
        print(f"REPRODUCED with {layers} layer(s): compiled cuDNN {bad:.2e} against eager cuDNN {eager:.2e} and "
              f"compiled flash {flash:.2e}", flush=True)
    if smallest is None:
        print(f"\nNOT REPRODUCED with {max(args.layers)} layer(s) (threshold: compiled cuDNN above {BAD_FACTOR:g}x "
              f"eager cuDNN and above {BAD_ERROR}, compiled flash below {BAD_FACTOR:g}x eager cuDNN)")
    else:
        print(f"\nREPRODUCED; the smallest model tried that shows it has {smallest} layer(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
