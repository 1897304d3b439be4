"""Float8 training of any model's linear layers through torchao 0.17 (`convert_to_float8_training`), head kept in bf16.

    names = convert_to_fp8(model, "tensorwise")            # on CUDA with fp8 tensor cores (has_fp8)
    names = convert_to_fp8(model, "rowwise", emulate=True)  # anywhere: fp8 rounding, fp32 matmuls (CPU tests)

Each converted linear runs its forward matmul and, in backward, grad_input and grad_weight as fp8 matmuls with
dynamic scales (one per tensor, or per row for the rowwise recipes; "rowwise_with_gw_hp" keeps grad_weight in
high precision); weights, gradients and optimizer state keep the model's dtype. torchao swaps `nn.Linear` only:
our model's `src.model.transformer.Linear` is a plain nn.Module (its own weight and F.linear, so the reference
model's parameter names hold), so each one chosen is first replaced by an `nn.Linear` holding the very same
Parameter (no copy; the name `...weight` is unchanged), then torchao swaps that for its `Float8Linear` (an
nn.Linear subclass, sharing the Parameter again). Anything that asks for "the model's linear type" after
conversion must accept nn.Linear too.

Kept in high precision by default (`keep_in_bf16`): the output head (its logits feed the loss directly, and every
recipe in torchao's and torchtitan's examples leaves it out) and any linear with a dimension not divisible by 16
(torch._scaled_mm needs both of the weight's dims % 16 == 0).
"""

import dataclasses
from typing import Callable

import torch.nn as nn

from src.model import transformer
from src.spec import PARALLEL_REFUSALS

FP8_RECIPES = ("tensorwise", "rowwise", "rowwise_with_gw_hp")  # torchao's Float8LinearRecipeName values
FP8_DIM_MULTIPLE = 16  # torch._scaled_mm: in_features and out_features must be multiples of 16
HEAD_NAMES = ("lm_head", "output", "embed_out")  # the head's attribute in ours/HF's, torchtitan's, GPT-NeoX's

# Which --parallel strategies can train the converted model, and why not where they cannot. None = it can.
# torchao's Float8Linear keeps its weight a plain Parameter of the model's dtype and its gradient a plain tensor,
# and it is an nn.Linear, so our FSDP shards it like any Linear. OverlapDDP, ZeRO-1 and FSDP are tested on 2
# gloo ranks (tests/train/test_fp8_strategies.py: equal to one process within 3e-8 with rowwise_with_gw_hp,
# whose scales never span the batch; with tensorwise each rank's amax sees only its slice: 1.9e-3 apart after
# 3 steps).
FP8_STRATEGIES: dict[str, str | None] = {
    "none": None,
    "ddp_naive": None, "ddp_flat": None, "ddp_overlap": None, "ddp_bucketed": None,  # gradients only
    "zero1": None,  # optimizer state only: tested
    "fsdp": None,  # gathers Float8Linear's weight, regathers it in backward: tested
    "torch_ddp": None, "torch_zero1": None,  # gradients / optimizer state only, as ours; not tested here
    "fsdp2": None,  # torchao's supported path (torchtitan's); float8 all-gather with tensorwise only
    # tp, fsdp_tp: refused, for the reason the spec gives (src/spec.py PARALLEL_REFUSALS)
    **{name: reason for strategies, option, reason in PARALLEL_REFUSALS if option == "fp8" for name in strategies},
}
# FSDP2's float8 all-gather (weights cast to fp8 before the all-gather, half of bf16's bytes): torchao 0.17 asserts
# the weight's scaling is tensorwise. After each optimizer step, torchao.float8.precompute_float8_dynamic_scale_
# for_fsdp(model) computes every weight's scale in one all-reduce instead of one per weight (optional, faster).
FP8_ALL_GATHER = {"strategies": ("fsdp2",), "recipes": ("tensorwise",)}


def fp8_refusal(strategy: str, recipe: str, fsdp_float8_all_gather: bool = False) -> str | None:
    """One line saying why this strategy/recipe/all-gather combination cannot train in fp8, or None if it can."""
    if recipe not in FP8_RECIPES:
        return f"fp8_recipe must be one of {', '.join(FP8_RECIPES)}, got {recipe!r}"
    if strategy not in FP8_STRATEGIES:
        return f"fp8 with --parallel {strategy} is not known here"
    if FP8_STRATEGIES[strategy]:
        return f"fp8 with --parallel {strategy}: {FP8_STRATEGIES[strategy]}"
    if fsdp_float8_all_gather and strategy not in FP8_ALL_GATHER["strategies"]:
        return f"fp8 all-gather is FSDP2's (torchao's fully_shard hooks); --parallel {strategy} has no all-gather"
    if fsdp_float8_all_gather and recipe not in FP8_ALL_GATHER["recipes"]:
        return f"fp8 all-gather needs tensorwise weight scales (torchao 0.17), not the {recipe} recipe"
    return None


def fp8_config(recipe: str, emulate: bool = False, fsdp_float8_all_gather: bool = False):
    """torchao's Float8LinearConfig for the recipe, with emulation (fp32 matmuls of fp8-rounded operands) and
    FSDP2's float8 all-gather switched as asked."""
    from torchao.float8 import Float8LinearConfig  # torchao is imported only when fp8 is used

    if recipe not in FP8_RECIPES:
        raise ValueError(f"fp8_recipe must be one of {', '.join(FP8_RECIPES)}, got {recipe!r}")
    if fsdp_float8_all_gather and recipe not in FP8_ALL_GATHER["recipes"]:
        raise ValueError(f"fsdp_float8_all_gather needs the tensorwise recipe, got {recipe!r}")
    config = Float8LinearConfig.from_recipe_name(recipe)
    # A frozen dataclass: replace() re-runs its __post_init__, which checks the all-gather against the scaling.
    return dataclasses.replace(config, emulate=emulate, enable_fsdp_float8_all_gather=fsdp_float8_all_gather)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, transformer.Linear))


def _tied_to_an_embedding(model: nn.Module) -> set[int]:
    """ids of the Parameters that are also an embedding table (a tied head is the head whatever its name)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, transformer.Embedding))}


def default_keep_in_bf16(name: str, module: nn.Module) -> bool:
    """Keep the output head and any linear with a dimension not a multiple of 16 in high precision."""
    d_out, d_in = module.weight.shape
    return name.rsplit(".", 1)[-1] in HEAD_NAMES or d_in % FP8_DIM_MULTIPLE != 0 or d_out % FP8_DIM_MULTIPLE != 0


def _as_nn_linear(module: transformer.Linear) -> nn.Linear:
    """An nn.Linear (no bias) holding `module`'s own weight Parameter: torchao's converter takes nn.Linear only."""
    d_out, d_in = module.weight.shape
    linear = nn.Linear(d_in, d_out, bias=False, device="meta")  # meta: no memory for the weight replaced below
    linear.weight = module.weight
    return linear


def convert_to_fp8(model: nn.Module, recipe: str,
                   keep_in_bf16: Callable[[str, nn.Module], bool] = default_keep_in_bf16,
                   emulate: bool = False, fsdp_float8_all_gather: bool = False) -> list[str]:
    """Swap, in place, every linear of `model` (nn.Linear or ours) that `keep_in_bf16(name, module)` does not keep
    for torchao's Float8Linear; return the converted ones' fully-qualified names in module order. A linear whose
    weight is an embedding table (a tied head) is always kept. Convert before wrapping for a strategy or compiling."""
    config = fp8_config(recipe, emulate, fsdp_float8_all_gather)
    from torchao.float8 import convert_to_float8_training

    tied = _tied_to_an_embedding(model)
    chosen = [name for name, m in model.named_modules()
              if name and _is_linear(m) and id(m.weight) not in tied and not keep_in_bf16(name, m)]
    if not chosen:
        return []
    for name in chosen:
        module = model.get_submodule(name)
        if isinstance(module, transformer.Linear):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, _as_nn_linear(module))
    selected = set(chosen)
    convert_to_float8_training(model, module_filter_fn=lambda _module, fqn: fqn in selected, config=config)
    return chosen


def fp8_matmul_flops(model: nn.Module, tokens: int, mode: str) -> int:
    """FLOPs of the matmuls that run in fp8 over `tokens` tokens: 2 x tokens x d_in x d_out per fp8 matmul of each
    converted linear (forward; in train also grad_input, and grad_weight unless the recipe keeps it in high
    precision). Divide by the step's FLOPs for the fraction src.harness.mfu takes."""
    from torchao.float8 import ScalingType
    from torchao.float8.float8_linear import Float8Linear

    if mode not in ("forward", "train"):
        raise ValueError(f"mode must be forward or train, got {mode!r}")
    total = 0
    for m in model.modules():
        if not isinstance(m, Float8Linear):
            continue
        c = m.config
        gemms = [(c.cast_config_input, c.cast_config_weight)]  # output = input @ weight.T
        if mode == "train":
            gemms += [(c.cast_config_grad_output, c.cast_config_weight_for_grad_input),  # grad_input
                      (c.cast_config_input_for_grad_weight, c.cast_config_grad_output_for_grad_weight)]  # grad_w
        in_fp8 = sum(all(cc.scaling_type is not ScalingType.DISABLED for cc in pair) for pair in gemms)
        total += in_fp8 * 2 * tokens * m.in_features * m.out_features
    return total
