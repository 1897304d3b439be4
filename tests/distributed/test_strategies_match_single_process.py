"""Every strategy of src.distributed, on 2 (and 4) gloo ranks, ends where single-process training on the whole batch
ends: our CS336 model, a toy with a tied weight and a frozen parameter, and a Hugging Face Llama with GQA and a tied
head (the hf family), several SGD-with-momentum steps."""

import pytest
import torch

from tests.distributed.multiprocess import run_on_ranks
from tests.distributed.single_process import STRATEGIES, batches, build, full_params, rank_slice, reference_params, train


def _every_strategy(rank: int, world_size: int, model_name: str, device: str = "cpu") -> None:
    """On `device` "cuda" every rank's tensors live on the one GPU and gloo moves them (tests/distributed/test_on_cuda.py)."""
    expected = reference_params(model_name, device=device)
    local_batches = [rank_slice(tokens, rank, world_size) for tokens in batches(device=device)]
    for strategy, (wrap, make_optimizer) in STRATEGIES.items():
        # each rank starts from a different initialisation: construction must broadcast rank 0's
        wrapped = wrap(build(model_name, seed=rank, device=device))
        train(wrapped, make_optimizer(wrapped), local_batches, wrapped.finish_gradient_synchronization)
        got = full_params(wrapped)
        assert list(got) == list(expected), f"{strategy}: parameter names {list(got)}"
        for name, value in expected.items():
            assert got[name].shape == value.shape, f"{strategy}: {name} shape {got[name].shape}"
            max_diff = (got[name] - value).abs().max().item()
            assert torch.allclose(got[name], value), f"{strategy} rank {rank} {name}: max |diff| {max_diff:.3g}"


@pytest.mark.parametrize("model_name", ["cs336", "toy", "hf-llama-gqa-tied"])
def test_every_strategy_matches_single_process_on_2_ranks(model_name):
    run_on_ranks(_every_strategy, 2, model_name)


def test_every_strategy_matches_single_process_on_4_ranks():
    run_on_ranks(_every_strategy, 4, "toy")


def _pytorch_engines(rank: int, world_size: int, config_path: str) -> None:
    """torch_ddp, torch_zero1 and fsdp2 as the benchmark wraps the model (src/train/parallel.py, through the model
    interface's blocks), on the Hugging Face Llama with GQA and a tied head, against single-process training.
    torch_zero1's ZeroRedundancyOptimizer wraps SGD with momentum here, as the reference's optimizer (the
    benchmark's wraps AdamW)."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from src.spec import RunSpec
    from src.train.parallel import parallelize
    from tests.distributed.single_process import sgd

    name = "hf-llama-gqa-tied"
    expected = reference_params(name)
    local_batches = [rank_slice(tokens, rank, world_size) for tokens in batches()]
    for strategy in ("torch_ddp", "torch_zero1", "fsdp2"):
        spec = RunSpec(size=name, d_model=32, d_ff=64, num_heads=4, num_layers=2, vocab_size=64, context_length=16,
                       model=config_path, attention="sdpa", mode="train", parallel=strategy,
                       nproc_per_node=world_size)
        # Same seed on every rank: fully_shard shards what each rank holds (DDP would broadcast rank 0's anyway)
        wrapped = parallelize(spec, build(name, seed=0)).model
        optimizer = (ZeroRedundancyOptimizer(wrapped.parameters(), optimizer_class=torch.optim.SGD, lr=0.1,
                                             momentum=0.9) if strategy == "torch_zero1" else sgd(wrapped.parameters()))
        train(wrapped, optimizer, local_batches)
        module = getattr(wrapped, "module", wrapped)
        got = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for n, p in module.named_parameters()}
        assert list(got) == list(expected), f"{strategy}: parameter names {list(got)}"
        for key, value in expected.items():
            max_diff = (got[key] - value).abs().max().item()
            assert torch.allclose(got[key], value), f"{strategy} rank {rank} {key}: max |diff| {max_diff:.3g}"


def test_pytorchs_engines_match_single_process_on_a_hugging_face_model(tmp_path):
    import json

    from tests.distributed.single_process import HF_LLAMA_GQA_TIED

    path = tmp_path / "config.json"
    path.write_text(json.dumps(HF_LLAMA_GQA_TIED))
    run_on_ranks(_pytorch_engines, 2, str(path))
