"""What torchao's float8 linears put into one compiled block's graphs, on the CPU: per recipe, the amax reductions,
the fp8 casts and transposes of the forward and the backward graph, and what the forward saves for the backward
(dtype and shape), as AOTAutograd partitions them with inductor's partitioner (min-cut rematerialisation).

    uv run scripts/fp8_graph_census.py [tensorwise|rowwise|rowwise_with_gw_hp ...]

The block is ours (one TransformerBlock, d 256, d_ff 1024, 4 heads, 2 x 64 tokens) with torchao's emulated float8
linears (fp8-rounded operands, fp32 matmuls: the casts are the GPU's, the matmuls are not), in fp32: it counts the
graphs' structure, not their speed. The GPU's graphs run under bf16 autocast and may be partitioned differently.
"""

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from src.model.config import ModelConfig  # noqa: E402
from src.model.transformer import TransformerBlock  # noqa: E402
from src.train.fp8 import FP8_RECIPES, convert_to_fp8  # noqa: E402

FP8_DTYPES = {torch.float8_e4m3fn, torch.float8_e5m2}
CONFIG = ModelConfig(d_model=256, d_ff=1024, num_layers=1, num_heads=4, vocab_size=512, context_length=64,
                     attention="sdpa")


def _dtype(node) -> str:
    return str(getattr(node.meta.get("val"), "dtype", "?")).replace("torch.", "")


def count(gm: torch.fx.GraphModule, forward: bool) -> collections.Counter:
    """The graph's amax reductions (abs then max), fp8 casts and fp8 transposes; a forward's saved tensors."""
    c = collections.Counter()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if target.startswith("aten.abs"):
            c["abs (the amax's first half)"] += 1
        if target.startswith(("aten.amax", "aten.max")):
            c["max reductions"] += 1
        if getattr(node.meta.get("val"), "dtype", None) in FP8_DTYPES:
            kind = "cast" if ("convert_element_type" in target or "_to_copy" in target) else target.split(".")[1]
            c[f"fp8 {kind} to {_dtype(node)}"] += 1
        if target.startswith(("aten.mm", "aten._scaled_mm")):
            c["matmuls"] += 1
    if forward:  # the block's output first, then what the backward needs
        output = next(n for n in gm.graph.nodes if n.op == "output")
        for saved in output.args[0][1:]:
            value = saved.meta.get("val")
            shape = "scalar" if value is not None and value.dim() == 0 else tuple(getattr(value, "shape", ()))
            c[f"saved {_dtype(saved)} {shape}"] += 1
    return c


def census(recipe: str) -> dict[str, collections.Counter]:
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from functorch.compile import make_boxed_func

    torch.manual_seed(0)
    model = torch.nn.Sequential(TransformerBlock(CONFIG))
    convert_to_fp8(model, recipe, emulate=True)
    graphs = {}

    def compiler(name):
        def compile_graph(gm, _inputs):
            graphs[name] = count(gm, name == "forward")
            return make_boxed_func(gm.forward)
        return compile_graph

    def backend(gm, inputs):
        return aot_module_simplified(gm, inputs, fw_compiler=compiler("forward"), bw_compiler=compiler("backward"),
                                     partition_fn=min_cut_rematerialization_partition)

    torch._dynamo.reset()
    x = torch.randn(2, CONFIG.context_length, CONFIG.d_model, requires_grad=True)
    torch.compile(model, backend=backend)(x).sum().backward()
    return graphs


def main(recipes: list[str]) -> int:
    unknown = [r for r in recipes if r not in FP8_RECIPES]
    if unknown:
        print(f"fp8_graph_census.py: unknown recipe {unknown[0]} (one of {', '.join(FP8_RECIPES)})", file=sys.stderr)
        return 2
    for recipe in recipes or ["tensorwise"]:
        print(f"## {recipe}: one block, 7 float8 linears\n")
        graphs = census(recipe)
        keys = sorted(set(graphs["forward"]) | set(graphs["backward"]))
        print("| | forward | backward |\n|---|---:|---:|")
        for key in keys:
            print(f"| {key} | {graphs['forward'].get(key, '')} | {graphs['backward'].get(key, '')} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
