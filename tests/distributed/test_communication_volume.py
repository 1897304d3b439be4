"""What each strategy actually sends per step (counted at the c10d ops on 2 gloo ranks) against what it should send."""

import math

import torch
import torch.nn as nn

from tests.distributed.multiprocess import run_on_ranks
from src.model.families.cs336 import Cs336Model
from src.predict.cost import collectives_per_step
from tests.distributed.single_process import (
    BUCKET_MB,
    CS336_TINY,
    STRATEGIES,
    TINY_BUCKET_MB,
    batches,
    build,
    rank_slice,
    train,
)
from src.distributed import FSDP
from src.model import transformer
from tests.distributed.wire import WireCounter


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _padded(p: nn.Parameter, world_size: int) -> int:
    return math.ceil(p.numel() / world_size) * world_size


def _counted(wrapped, optimizer, rank, world_size) -> WireCounter:
    """The second step's traffic (FSDP prefetches from the second forward on, in the order the first one recorded)."""
    first, second = [rank_slice(t, rank, world_size) for t in batches(2)]
    train(wrapped, optimizer, [first], wrapped.finish_gradient_synchronization)
    with WireCounter() as counter:
        train(wrapped, optimizer, [second], wrapped.finish_gradient_synchronization)
    assert not counter.unknown, f"collectives not accounted for: {dict(counter.unknown)}"
    return counter


def _expected_volumes(rank: int, world_size: int) -> None:
    for model_name in ("cs336", "toy"):
        _check_ddp_family(rank, world_size, model_name)


def _check_ddp_family(rank: int, world_size: int, model_name: str) -> None:
    model = build(model_name, seed=0)
    trainable = [p for p in model.parameters() if p.requires_grad]  # a tied weight once, frozen ones not
    gradients = _bytes(trainable)
    calls = {}
    for strategy, (wrap, make_optimizer) in STRATEGIES.items():
        if strategy == "fsdp":
            continue
        wrapped = wrap(build(model_name, seed=0))
        counter = _counted(wrapped, make_optimizer(wrapped), rank, world_size)
        expected = {"all_reduce": gradients} | ({"broadcast": gradients} if strategy == "zero1" else {})
        assert dict(counter.bytes) == expected, f"{model_name} {strategy}: sent {dict(counter.bytes)}, expected {expected}"
        calls[strategy] = counter.calls["all_reduce"]
    # one all_reduce per parameter for naive and overlap, and for buckets smaller than every parameter; one in all
    # for flat; in between for buckets of a few parameters
    assert calls["ddp_naive"] == calls["ddp_overlap"] == calls["ddp_bucketed_tiny"] == len(trainable), calls
    assert calls["ddp_flat"] == 1, calls
    assert 1 < calls["ddp_bucketed"] < len(trainable), calls


def test_ddp_family_and_zero1_send_each_gradient_once():
    run_on_ranks(_expected_volumes, 2)


def _fsdp_volumes(rank: int, world_size: int) -> None:
    for compute_dtype in (torch.float32, torch.bfloat16):
        _check_fsdp(rank, world_size, compute_dtype)


def _check_fsdp(rank: int, world_size: int, compute_dtype: torch.dtype) -> None:
    model = build("cs336", seed=0)
    linears = [m.weight for m in model.modules() if isinstance(m, transformer.Linear)]
    embedding = model.token_embeddings.weight
    replicated = [m.weight for m in model.modules() if isinstance(m, transformer.RMSNorm)]
    assert len(linears) + 1 + len(replicated) == len(list(model.parameters()))
    c = torch.tensor([], dtype=compute_dtype).element_size()
    linear_padded = sum(_padded(w, world_size) for w in linears)
    expected = {
        # forward: every sharded weight; backward: again for each Linear (its backward multiplies by the weight),
        # not for the embedding (a lookup's backward needs only the indices)
        "all_gather": c * (2 * linear_padded + _padded(embedding, world_size)),
        "reduce_scatter": c * (linear_padded + _padded(embedding, world_size)),
        "all_reduce": _bytes(replicated),  # the RMSNorm weights, fp32
    }
    wrapped = FSDP(build("cs336", seed=0), compute_dtype=compute_dtype)
    counter = _counted(wrapped, torch.optim.SGD(wrapped.parameters(), lr=0.1), rank, world_size)
    assert dict(counter.bytes) == expected, f"fsdp {compute_dtype}: sent {dict(counter.bytes)}, expected {expected}"


def test_fsdp_gathers_twice_and_reduce_scatters_once_in_the_compute_dtype():
    run_on_ranks(_fsdp_volumes, 2)


def _against_cost_model(rank: int, world_size: int) -> None:
    """The analytic model (src/predict/cost.py) predicts the bytes and the number of calls of each collective."""
    cases = [(name, name, 4, {}) for name in ("ddp_naive", "ddp_flat", "ddp_overlap", "zero1")]
    cases += [("ddp_bucketed", "ddp_bucketed", 4, {"bucket_mb": BUCKET_MB}),
              ("ddp_bucketed_tiny", "ddp_bucketed", 4, {"bucket_mb": TINY_BUCKET_MB}),
              ("fsdp", "fsdp", 4, {}), ("fsdp bf16", "fsdp", 2, {})]
    for label, strategy, compute_dtype_bytes, options in cases:
        wrap, make_optimizer = STRATEGIES[label.split()[0]]
        if compute_dtype_bytes == 2:
            wrap = lambda m: FSDP(m, compute_dtype=torch.bfloat16)  # noqa: E731
        wrapped = wrap(build("cs336", seed=0))
        counter = _counted(wrapped, make_optimizer(wrapped), rank, world_size)
        predicted = collectives_per_step(Cs336Model("tiny", CS336_TINY), strategy, world_size, compute_dtype_bytes, **options)
        predicted_bytes, predicted_calls = {}, {}
        for c in predicted:
            predicted_bytes[c.op] = predicted_bytes.get(c.op, 0) + c.size_bytes
            predicted_calls[c.op] = predicted_calls.get(c.op, 0) + c.calls
        assert dict(counter.bytes) == predicted_bytes, f"{label}: sent {dict(counter.bytes)}, model {predicted_bytes}"
        assert dict(counter.calls) == predicted_calls, f"{label}: calls {dict(counter.calls)}, model {predicted_calls}"


def test_bytes_and_calls_on_the_wire_equal_the_cost_model():
    run_on_ranks(_against_cost_model, 2)
