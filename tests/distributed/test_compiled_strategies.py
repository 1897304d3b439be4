"""A compiled strategy trains exactly as its eager self: fsdp2 with each block compiled before fully_shard, torch_ddp
compiled whole (DDPOptimizer), and our hook-driven DDPs compiled whole, on 2 gloo ranks, built as the benchmark
builds them (src/train/parallel.py through TrainStep), a few AdamW steps in fp32.

The compile backend is aot_eager, not inductor: the same Dynamo capture, graph breaks, DDPOptimizer splits and
AOTAutograd forward/backward graphs, with fully_shard's and our gradient hooks around them, only without
inductor's C++ code generation. On this 2-core CPU one strategy's first compiled step took 5 s with aot_eager and
33-38 s with inductor (torch 2.11, cold cache), and inductor's kernels are what the single-process compile tests
already check; a real benchmark run (`--compile`) uses inductor. Tolerance: torch.allclose's defaults; aot_eager
runs the same ATen ops in the same order (the measured max |diff| was 0.0), and inductor, which may reorder
reductions, stayed within them as well (1.3e-6 after 3 AdamW steps at lr 1e-3).
"""

import functools

import pytest
import torch

from src.spec import RunSpec
from src.train.step import chosen_optimizer, uses_bf16_weights, uses_cuda_graphs
from tests.distributed.multiprocess import run_on_ranks
from tests.distributed.single_process import BATCH, SEQ, STEPS, batches, rank_slice

# fsdp2: per-block compile + fully_shard; torch_ddp: DDPOptimizer; ddp_overlap: our post-accumulate gradient hooks,
# fired by autograd outside the compiled backward. The rest add no path of their own under compile (ddp_bucketed's
# hooks are the same kind, ddp_naive/ddp_flat/zero1 sync after backward) and each would add ~5-10 s here.
COMPILED = ("fsdp2", "torch_ddp", "ddp_overlap")
SHAPE = dict(size="custom", d_model=32, d_ff=64, num_heads=4, num_layers=2, vocab_size=64, context_length=SEQ,
             batch_size=BATCH, mode="train")


def _trained(spec: RunSpec, local_batches) -> tuple[dict[str, torch.Tensor], object]:
    """Full parameters after training through the benchmark's TrainStep, and the step."""
    from src.train.step import TrainStep, build_model

    torch.manual_seed(0)  # every rank builds the same model (fully_shard shards what each rank holds)
    step = TrainStep(spec, build_model(spec), lr=1e-3)
    for tokens in local_batches:
        step(tokens[:, :-1], tokens[:, 1:], None)
    module = getattr(step.model, "module", step.model)  # DDP and ours wrap; fully_shard shards in place
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for n, p in module.named_parameters()}, step


def _compiled_equals_eager(rank: int, world_size: int) -> None:
    compile_ = torch.compile
    torch.compile = functools.partial(compile_, backend="aot_eager")  # see the docstring; the pool's next test
    try:  # gets torch.compile back
        _compare(rank, world_size)
    finally:
        torch.compile = compile_


def _compare(rank: int, world_size: int) -> None:
    from src.harness.runner import COMPILED_GRAPHS, _graph_count

    local_batches = [rank_slice(tokens, rank, world_size) for tokens in batches(STEPS)]
    for strategy in COMPILED:
        spec = RunSpec(**SHAPE, parallel=strategy, nproc_per_node=world_size)
        eager, _ = _trained(spec, local_batches)
        before = _graph_count(COMPILED_GRAPHS)
        compiled, step = _trained(RunSpec(**SHAPE, parallel=strategy, nproc_per_node=world_size, compile=True),
                                  local_batches)
        assert _graph_count(COMPILED_GRAPHS) > before, f"{strategy}: nothing was compiled"
        if strategy == "fsdp2":  # each block compiled in place, the root and the loss left eager
            blocks = spec.model_spec().blocks(step.model)
            assert blocks and all(b._compiled_call_impl is not None for b in blocks), strategy
            assert not isinstance(step.loss, torch._dynamo.eval_frame.OptimizedModule), strategy
        else:  # the wrapped model compiled whole, with the loss
            assert isinstance(step.loss, torch._dynamo.eval_frame.OptimizedModule), strategy
        assert list(compiled) == list(eager), f"{strategy}: parameter names {list(compiled)}"
        for name, value in eager.items():
            max_diff = (compiled[name] - value).abs().max().item()
            assert torch.allclose(compiled[name], value), f"{strategy} rank {rank} {name}: max |diff| {max_diff:.3g}"


def test_compiled_strategies_train_as_their_eager_selves_on_2_ranks():
    """One spawn for all three: each compile is seconds on CPU, the pool's start is paid once."""
    run_on_ranks(_compiled_equals_eager, 2)


def test_a_compiled_step_records_its_graph_count(monkeypatch):
    """The record's compiled_graphs: the whole model with its loss compiles to one graph, unbroken."""
    from src.harness.runner import run_spec

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()  # a graph an earlier test compiled for the same code would be reused, not compiled
    record = run_spec(RunSpec(**SHAPE, compile=True, warmup_steps=0, benchmark_steps=1))
    assert record["status"] == "ok" and record["compiled_graphs"] == 1, record.get("status")


@pytest.mark.parametrize("strategy,optimizer", [
    ("fsdp2", "fused"), ("torch_ddp", "fused"), ("ddp_overlap", "fused"),
    ("zero1", "default"), ("torch_zero1", "default"),  # the sharded optimizers wrap torch's default AdamW
])
def test_the_fast_recipe_under_a_strategy_is_autocast_compile_and_fused_adamw(strategy, optimizer):
    """Under a strategy the recipe keeps bf16 autocast, compile and (on CUDA) fused AdamW, and drops CUDA graphs and
    bf16 weights with fp32 masters, which the same recipe on one process uses (1 parameter: a launch-bound model)."""
    spec = RunSpec(**SHAPE, parallel=strategy, nproc_per_node=2, recipe="fast", precision="bf16", attention="sdpa",
                   device="cuda")
    assert spec.compiled and spec.precision == "bf16"
    assert not uses_cuda_graphs(spec, parameters=1) and not uses_bf16_weights(spec)
    assert chosen_optimizer(spec, parameters=1) == optimizer
    single = RunSpec(**SHAPE, recipe="fast", precision="bf16", attention="sdpa", device="cuda")
    assert uses_cuda_graphs(single, parameters=1) and uses_bf16_weights(single)  # what the strategy turned off


@pytest.mark.parametrize("changes,message", [
    (dict(parallel="fsdp", compile=True), "fsdp does not run with compile: our FSDP"),
    (dict(parallel="fsdp", recipe="fast", precision="bf16", attention="sdpa"), "fsdp does not run with compile"),
    (dict(parallel="torch_ddp", compile=True, bucket_mb=0.5), "compile with bucket_mb below 1: DDPOptimizer"),
    (dict(parallel="torch_zero1", recipe="fast", precision="bf16", attention="sdpa", bucket_mb=0.5), "DDPOptimizer"),
])
def test_what_cannot_compile_is_refused_with_the_engines_limit(changes, message):
    with pytest.raises(ValueError, match=message):
        RunSpec(**SHAPE, nproc_per_node=2, **changes)
    RunSpec(**SHAPE, nproc_per_node=2, **{**changes, "compile": False, "recipe": "", "precision": "fp32"})  # eager runs
