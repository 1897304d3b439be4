"""The numerics check's training side: a learnable token stream, the variants between the plain bf16 step and the
fast recipe, and how their losses and first gradients are taken (the command is src/profiling/numerics.py).

The tokens come from a fixed random Markov chain over ACTIVE_TOKENS of the vocabulary in which every token has
SUCCESSORS equally likely next tokens: a model can learn it within 100 steps (uniform random tokens would keep the
loss at ln(vocab)), and its entropy floor ln(SUCCESSORS) keeps the loss away from zero, where relative differences
between two runs would mean nothing.
"""

import contextlib
import math
import re
from dataclasses import dataclass, field

import torch

from src.kernels import compiled_sdpa_backends
from src.spec import FP8_RECIPES, RunSpec
from src.train.step import TrainStep, build_model

SUCCESSORS = 4
ACTIVE_TOKENS = 1024
LEARNING_RATE = 3e-4
WARMUP_STEPS = 10  # linear learning-rate warm-up: Adam's first, sign-like steps otherwise make the loss chaotic


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


@dataclass(frozen=True)
class Variant:
    """One way of training the same model: what it changes from the plain bf16 eager step, and why it is here."""

    why: str
    spec: dict = field(default_factory=dict)  # RunSpec fields
    step: dict = field(default_factory=dict)  # TrainStep options
    inductor: dict = field(default_factory=dict)  # torch._inductor.config values while it compiles
    sdpa_backend: str = ""  # force SDPA onto one of torch.nn.attention.SDPBackend's kernels
    compiled_cudnn_attention: bool = False  # let compiled code use cuDNN's SDPA (src.kernels keeps it off)
    round_initial_weights: bool = False  # start from weights rounded through bf16
    fp8_emulated: str = ""  # torchao float8 recipe, emulated (fp8-rounded operands, fp32 matmuls): any device


# Each variant changes one thing on the way from the plain step to the fast recipe, so a difference can be traced;
# the controls perturb the plain step by no more than bf16 itself does, to show what size of difference the
# check's dynamics make of such a perturbation.
VARIANTS = {
    "plain": Variant("eager, SDPA, foreach AdamW"),
    "plain_repeat": Variant("the same again: run-to-run nondeterminism (atomics in the embedding backward)"),
    "plain_math_sdpa": Variant("control: SDPA's math kernel instead of its fused one", sdpa_backend="MATH"),
    "plain_rounded_init": Variant("control: initial weights rounded to bf16 (a relative change <= 2^-9)",
                                  round_initial_weights=True),
    "plain_cudnn_sdpa": Variant("control: SDPA's cuDNN kernel, eager", sdpa_backend="CUDNN_ATTENTION"),
    "plain_fp32": Variant("no autocast: fp32 end to end", spec={"precision": "fp32"}),
    "plain_fp32_rounded_init": Variant("control for fp32 runs: initial weights rounded to bf16 (<= 2^-9)",
                                       spec={"precision": "fp32"}, round_initial_weights=True),
    "fused_adamw": Variant("fused AdamW", step={"fused_adamw": True}),
    "compiled": Variant("torch.compile of model and loss", spec={"compile": True}),
    "compiled_emulate_casts": Variant("torch.compile, rounding intermediates to bf16 where eager does",
                                      spec={"compile": True}, inductor={"emulate_precision_casts": True}),
    "compiled_cudnn_sdpa": Variant("torch.compile with inductor's lowering of SDPA's cuDNN kernel (compiled steps "
                                   "exclude it)", spec={"compile": True}, compiled_cudnn_attention=True,
                                   sdpa_backend="CUDNN_ATTENTION"),
    "compiled_default_sdpa": Variant("torch.compile with every SDPA kernel allowed, torch's choice",
                                     spec={"compile": True}, compiled_cudnn_attention=True),
    "compiled_cudnn_op": Variant("torch.compile with cuDNN's kernel as our opaque op (--attention cudnn)",
                                 spec={"compile": True, "attention": "cudnn"}),
    "compiled_fp32": Variant("torch.compile, no autocast", spec={"compile": True, "precision": "fp32"}),
    "compiled_cuda_graphs": Variant("torch.compile and CUDA graphs", spec={"compile": True},
                                    step={"cuda_graphs": True}),
    "compiled_reduce_overhead": Variant("torch.compile in reduce-overhead mode: inductor replays each graph as a "
                                        "CUDA graph (the fast recipe's fp8 mode)",
                                        spec={"compile": True, "compile_mode": "reduce-overhead"}),
    "fast": Variant("the fast recipe", spec={"recipe": "fast"}),
    "fast_cudnn": Variant("the fast recipe with cuDNN's attention as our opaque op (--attention cudnn)",
                          spec={"recipe": "fast", "attention": "cudnn"}),
    "fast_bf16_weights": Variant("the fast recipe as it runs large models: bf16 weights with fp32 masters, no graphs",
                                 spec={"recipe": "fast"}, step={"cuda_graphs": False, "bf16_weights": True}),
    # fp8 emulated, on any device (CPU included): the fp32 step with torchao's float8 linears in emulation, which
    # rounds every linear's operands to fp8 with the recipe's scales as the GPU does and multiplies in fp32 (the
    # tensor cores accumulate fp8 products in higher precision too). fp32, not bf16 autocast: torchao 0.17's
    # emulated backward multiplies a bf16 gradient by an fp32 input under CPU autocast and fails (its autocast
    # handling reads CUDA's only). Compare with plain_fp32 as the reference, beside plain (bf16 autocast): what fp8's
    # rounding does to training against what bf16's does.
    **{f"plain_fp8_emulated_{recipe}": Variant(f"fp32 eager, torchao's float8 linears emulated, {recipe} scaling",
                                               spec={"precision": "fp32"}, fp8_emulated=recipe)
       for recipe in FP8_RECIPES},
    # fp8 (GPUs with fp8 tensor cores): compare with "fast" as the reference, the bf16 step they replace
    **{f"fast_fp8_{recipe}": Variant(f"the fast recipe with torchao's float8 linears, {recipe} scaling",
                                     spec={"recipe": "fast", "precision": "fp8", "fp8_recipe": recipe})
       for recipe in FP8_RECIPES},
}


@contextlib.contextmanager
def variant_context(variant: Variant):
    """Inductor settings and the SDPA kernel a variant asks for, for as long as it trains (compilation included)."""
    with contextlib.ExitStack() as stack:
        if variant.inductor:
            import torch._inductor.config as inductor_config

            stack.enter_context(inductor_config.patch(variant.inductor))
        if variant.sdpa_backend:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(getattr(SDPBackend, variant.sdpa_backend)))
        if variant.compiled_cudnn_attention:
            stack.enter_context(compiled_sdpa_backends(None))
        torch._dynamo.reset()  # compile afresh: a cached graph would ignore changed inductor settings
        yield


def build_variant(base: dict, variant: Variant, lr: float, **step_options) -> TrainStep:
    spec = RunSpec(**{**base, **variant.spec})
    torch.manual_seed(spec.seed)  # the same initial weights for every variant
    model = build_model(spec)
    if variant.round_initial_weights:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.bfloat16())
    if variant.fp8_emulated:
        from src.train.fp8 import convert_to_fp8  # torchao, imported only when asked for

        convert_to_fp8(model, variant.fp8_emulated, emulate=True)
    return TrainStep(spec, model, lr=lr, **{**variant.step, **step_options})


def train_losses(step: TrainStep, tokens: torch.Tensor, warmup: int = WARMUP_STEPS) -> list[float]:
    """Train on tokens (steps, B, T + 1), one batch per step; the loss of every step."""
    schedule = torch.optim.lr_scheduler.LambdaLR(step.optimizer, lambda i: min(1.0, (i + 1) / max(warmup, 1)))
    tokens = tokens.to(step.spec.device)
    losses = []
    for i in range(tokens.shape[0]):
        losses.append(step(tokens[i, :, :-1], tokens[i, :, 1:], None))
        schedule.step()
    return [float(loss) for loss in losses]


def first_gradients(step: TrainStep, batch: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and every parameter's gradient (fp32, flattened) at the initial weights, batch (B, T + 1)."""
    batch = batch.to(step.spec.device)
    loss = step.loss_and_gradients(batch[:, :-1], batch[:, 1:])
    grads = {name: p.grad.detach().float().flatten().clone() for name, p in step.model.named_parameters()}
    step.model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


ATTENTION_KERNEL = re.compile(r"sdpa|flash|fmha|attention|attn|cudnn", re.IGNORECASE)


def attention_kernels(step: TrainStep, batch: torch.Tensor) -> str:
    """The attention kernels one more forward and backward run (CUDA only): which SDPA kernel a variant really used."""
    if step.spec.device != "cuda":
        return ""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        first_gradients(step, batch)
    names = {e.name.split("<")[0].removeprefix("void ")[:48] for e in prof.events() if ATTENTION_KERNEL.search(e.name)}
    return ", ".join(sorted(names))


def gradient_errors(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict:
    """How far one variant's first gradient is from the reference's: ||g - ref|| / ||ref|| over all parameters,
    the parameter where that ratio is largest, and the share of elements whose sign differs (Adam's first steps
    move every element by about lr in the direction of its sign, whatever its size)."""
    diff2 = sum(float((grads[n] - r).double().pow(2).sum()) for n, r in reference.items())
    ref2 = sum(float(r.double().pow(2).sum()) for r in reference.values())
    per_parameter = {n: float((grads[n] - r).norm() / r.norm().clamp_min(1e-30)) for n, r in reference.items()}
    worst = max(per_parameter, key=per_parameter.get)
    nonzero = sum(int((r != 0).sum()) for r in reference.values())
    flipped = sum(int(((grads[n] * r) < 0).sum()) for n, r in reference.items())
    return {"relative_error": math.sqrt(diff2 / ref2), "worst_parameter": worst,
            "worst_relative_error": per_parameter[worst], "sign_flips": flipped / max(nonzero, 1)}
