"""The analytic cost model against hand calculations: collective sizes and times, memory per rank, limits."""

import math

import pytest

from src.predict.alpha_beta import (
    BASE_LATENCY_US, HOP_LATENCY_US, LINKS, Link, Network, bus_bytes, collective_time, link_busbw,
)
from src.predict.cost import (
    STRATEGIES, buckets_within_cap, collectives_per_step, communication_per_step, greedy_buckets,
    memory_per_rank, owner_loads, parameters_of,
)
from src.model.config import PRESETS, ModelConfig
from src.model.families.cs336 import Cs336Model
from src.spec import PARALLEL

TINY_CONFIG = PRESETS["tiny"]  # d 64, d_ff 256, 2 layers, 4 heads, vocab 10000
TINY = Cs336Model("tiny", TINY_CONFIG)  # the model interface: what the cost model asks
SHARDED_STRATEGIES = ("zero1", "torch_zero1", "fsdp", "fsdp2")
NVLINK = Network(LINKS["nvlink4"], LINKS["ib_ndr"], gpus_per_node=8)
GB = 1e9


def by_hand(model) -> dict[str, int]:
    """Parameter counts of the CS336 model written out: embedding and head V x d, per block q/k/v/o d x d, SwiGLU
    three d x d_ff, two RMSNorm d; the final norm d."""
    config = model.config
    d, f, L, V = config.d_model, config.d_ff, config.num_layers, config.vocab_size
    block_matrices = 4 * d * d + 3 * d * f
    return {"sharded": 2 * V * d + L * block_matrices, "replicated": (2 * L + 1) * d, "block": block_matrices + 2 * d,
            "root": 2 * V * d + d, "largest": V * d}


def test_parameter_list_matches_the_model_and_the_hand_count():
    hand = by_hand(TINY)
    params = parameters_of(TINY)
    assert sum(p.numel for p in params) == TINY.parameter_count().total == hand["sharded"] + hand["replicated"]
    assert sum(p.numel for p in params if p.sharded) == hand["sharded"]
    assert sum(p.numel for p in params if p.unit == "root") == hand["root"]


@pytest.mark.parametrize("n", [2, 3, 4, 8, 1000])
def test_ring_all_reduce_moves_2_n_minus_1_over_n_of_the_buffer(n):
    S = 1_000_000
    assert bus_bytes("all_reduce", S, n) == pytest.approx(2 * (n - 1) / n * S)
    assert bus_bytes("all_gather", S, n) == pytest.approx((n - 1) / n * S)
    assert bus_bytes("reduce_scatter", S, n) == pytest.approx((n - 1) / n * S)
    assert bus_bytes("broadcast", S, n) == S


def test_large_all_reduce_in_one_node_is_the_ring_by_hand():
    """1 GB on 4 GPUs of NVLink 4 (450 GB/s): 2(n-1) = 6 hops of 3.4 us plus NCCL's 8.4 us base (Simple protocol),
    and 2 x 3/4 x 1 GB at 450 GB/s = 3.333 ms."""
    t = collective_time("all_reduce", 1e9, 4, NVLINK)
    assert t.algorithm == "ring/Simple"
    assert t.seconds == pytest.approx((8.4 + 6 * 3.4) * 1e-6 + 1.5e9 / 450e9, rel=1e-12)


def test_all_gather_by_hand_and_tree_only_for_all_reduce():
    t = collective_time("all_gather", 8e8, 8, NVLINK)  # 7 hops; 7/8 of 0.8 GB at 450 GB/s
    assert t.seconds == pytest.approx((8.4 + 7 * 3.4) * 1e-6 + 0.7e9 / 450e9, rel=1e-12)
    small_across_nodes = collective_time("all_gather", 1024, 1024, NVLINK)
    assert small_across_nodes.algorithm.startswith("ring")


def test_small_all_reduce_across_many_nodes_takes_the_tree():
    """1 KB on 128 nodes of 8: the ring's 2 x 1023 hops cost milliseconds, the tree's 2 x (7 + log2 128) hops microseconds."""
    t = collective_time("all_reduce", 1024, 1024, NVLINK)
    assert t.algorithm == "tree/LL"
    hops = 2 * (7 * HOP_LATENCY_US["nvlink"][("tree", "LL")] + 7 * HOP_LATENCY_US["net"][("tree", "LL")])
    rate = 50e9 * 8 * 0.9 / 3.8  # 8 NICs of 50 GB/s per node, tree LL efficiency
    assert t.seconds == pytest.approx((BASE_LATENCY_US[("tree", "LL")] + hops) * 1e-6 + 2 * 1024 / rate)


def test_network_share_across_nodes():
    # A packed group of 16 on 2 nodes: the node's 8 NICs x 50 GB/s = 400 GB/s, below NVLink's 450.
    assert link_busbw(NVLINK, 8, 2) == 400
    # One rank per node (the data-parallel group of a 2-D layout): one NIC's 50 GB/s.
    assert link_busbw(NVLINK, 1, 16) == 50
    assert link_busbw(NVLINK, 8, 1) == 450


def test_spanning_nodes_without_a_network_is_an_error():
    with pytest.raises(ValueError, match="between nodes"):
        collective_time("all_reduce", 1e6, 16, Network(LINKS["nvlink4"]))


def test_measured_bus_bandwidth_replaces_the_model():
    net = Network(LINKS["nvlink4"], measured={("all_reduce", 2): [(1_000, 1.0), (1_000_000, 100.0)]})
    t = collective_time("all_reduce", 1_000_000, 2, net)
    assert t.algorithm == "measured"
    assert t.seconds == pytest.approx(1_000_000 / 100e9)  # 2(n-1)/n = 1 for n = 2
    between = collective_time("all_reduce", math.sqrt(1_000 * 1_000_000), 2, net)  # halfway in log(size)
    assert between.busbw_gb_s == pytest.approx(50.5)


@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "reduce_scatter", "broadcast"])
@pytest.mark.parametrize("size", [1e3, 1e6, 1e9])
def test_collective_time_never_decreases_with_more_ranks(op, size):
    times = [collective_time(op, size, n, NVLINK).seconds for n in range(1, 1025)]
    assert times[0] == 0
    assert all(b >= a for a, b in zip(times, times[1:]))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_world_size_one_has_no_communication(strategy):
    volume = communication_per_step(TINY, strategy, 1, 2, batch_size=2, context_length=16, tp_size=1)
    assert volume == {"all_reduce": 0, "all_gather": 0, "reduce_scatter": 0, "broadcast": 0}


@pytest.mark.parametrize("n", [2, 4])
def test_communication_by_hand(n):
    hand, P = by_hand(TINY), TINY.parameter_count().total
    for strategy in ("ddp_naive", "ddp_flat", "ddp_overlap", "ddp_bucketed", "torch_ddp"):
        assert communication_per_step(TINY, strategy, n) == {"all_reduce": 4 * P, "all_gather": 0, "reduce_scatter": 0, "broadcast": 0}
    for strategy in ("zero1", "torch_zero1"):
        assert communication_per_step(TINY, strategy, n) == {"all_reduce": 4 * P, "all_gather": 0, "reduce_scatter": 0, "broadcast": 4 * P}
    # Our FSDP gathers every sharded weight in forward and all but the embedding in backward (an embedding's
    # backward needs no weight), in bf16 here.
    assert communication_per_step(TINY, "fsdp", n, 2) == {
        "all_reduce": 4 * hand["replicated"], "all_gather": 2 * (2 * hand["sharded"] - hand["largest"]),
        "reduce_scatter": 2 * hand["sharded"], "broadcast": 0}
    blocks = TINY_CONFIG.num_layers * hand["block"]
    assert communication_per_step(TINY, "fsdp2", n, 2) == {
        "all_reduce": 0, "all_gather": 2 * (P + blocks), "reduce_scatter": 4 * P, "broadcast": 0}
    assert communication_per_step(TINY, "fsdp2", n, 2, root_reshard_after_forward=True, reduce_dtype_bytes=2)[
        "all_gather"] == 2 * 2 * P
    B, T, d = 3, 16, TINY_CONFIG.d_model
    # pure TP on n ranks, per block: one forward all-reduce of (B, T, d) after each row-parallel layer (bf16), one
    # backward all-reduce of the input attention and MLP share (fp32, the residual stream)
    assert communication_per_step(TINY, "tp", n, 2, batch_size=B, context_length=T)["all_reduce"] == \
        2 * TINY_CONFIG.num_layers * B * T * d * (2 + 4)


def test_sharded_sizes_include_the_padding_on_the_wire():
    """vocab 1001 x d 70: the embedding and head (70070 elements) pad to 70072 on 4 ranks for our flat shards, and
    FSDP2 pads dim 0 (1001 rows) to 1002 on 2 ranks; the other shapes divide evenly."""
    odd = Cs336Model("odd", ModelConfig(d_model=70, d_ff=250, num_layers=1, num_heads=5, vocab_size=1001))
    hand = by_hand(odd)
    assert communication_per_step(odd, "fsdp", 4, 4)["reduce_scatter"] == 4 * (hand["sharded"] + 2 + 2)
    assert communication_per_step(odd, "fsdp2", 2, 4)["reduce_scatter"] == 4 * (odd.parameter_count().total + 70 + 70)


def test_call_counts_follow_each_implementation():
    n_tensors = len(parameters_of(TINY))
    calls = {s: collectives_per_step(TINY, s, 2)[0].calls for s in ("ddp_naive", "ddp_flat", "ddp_overlap")}
    assert calls == {"ddp_naive": n_tensors, "ddp_flat": 1, "ddp_overlap": n_tensors}
    # A bucket smaller than every parameter: one bucket per parameter.
    assert collectives_per_step(TINY, "ddp_bucketed", 2, bucket_mb=1e-6)[0].calls == n_tensors
    assert collectives_per_step(TINY, "ddp_bucketed", 2, bucket_mb=1e6)[0].calls == 1


def test_greedy_buckets():
    assert greedy_buckets([3, 3, 3], 5) == [6, 3]
    assert greedy_buckets([3, 3, 3], 5, first_cap_bytes=2) == [3, 6]
    assert greedy_buckets([10], 1) == [10]
    assert buckets_within_cap([3, 3, 3], 5) == [3, 3, 3]
    assert buckets_within_cap([3, 2, 3, 10], 5) == [5, 3, 10]


def test_optimizer_owners():
    assert owner_loads([5, 1, 1, 4], 2, largest_first=False) == [5, 6]  # 5 -> r0, 1 -> r1, 1 -> r1, 4 -> r1
    assert owner_loads([5, 1, 1, 4], 2, largest_first=True) == [6, 5]  # 5 -> r0, 4 -> r1, 1 -> r1, then a tie: r0


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="unknown strategy"):
        communication_per_step(TINY, "ddp_magic", 2)
    with pytest.raises(ValueError, match="world_size"):
        memory_per_rank(TINY, "ddp_flat", 0, 2, 16, "fp32")
    with pytest.raises(ValueError, match="batch_size and context_length"):
        communication_per_step(TINY, "tp", 2)
    with pytest.raises(ValueError, match="must divide num_heads"):
        memory_per_rank(TINY, "tp", 8, 2, 16, "bf16")
    with pytest.raises(ValueError, match="blocks:N"):
        memory_per_rank(TINY, "fsdp2", 2, 2, 16, "fp32", checkpointing="blocks:0")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("checkpointing", ["none", "blocks:1"])
def test_world_size_one_equals_the_single_gpu_estimate(strategy, precision, checkpointing):
    estimate = TINY.memory_estimate(4, 32, "train", precision, 1 if checkpointing != "none" else 0)
    memory = memory_per_rank(TINY, strategy, 1, 4, 32, precision, checkpointing=checkpointing, tp_size=1)
    assert (memory.parameters, memory.gradients, memory.optimizer_state, memory.activations) == (
        estimate.parameters, estimate.gradients, estimate.optimizer_state, estimate.activations)
    assert memory.total == estimate.total


@pytest.mark.parametrize("n", [2, 4])
def test_memory_per_rank_by_hand(n):
    B, T = 4, 32
    hand, P = by_hand(TINY), TINY.parameter_count().total
    fp32 = TINY.memory_estimate(B, T, "train", "fp32")
    bf16 = TINY.memory_estimate(B, T, "train", "bf16")
    # DDP: everything replicated; flat/bucketed/torch_ddp hold one more copy of the gradients.
    assert memory_per_rank(TINY, "ddp_overlap", n, B, T, "fp32").total == fp32.total
    assert memory_per_rank(TINY, "torch_ddp", n, B, T, "fp32").total == fp32.total + 4 * P
    # ZeRO-1: AdamW's two fp32 moments live on their owner; the embedding (V x d = 640000 elements) alone is more
    # than half of the 0.8M parameters, so its owner holds the most.
    z = memory_per_rank(TINY, "zero1", n, B, T, "fp32")
    assert (z.parameters, z.gradients) == (4 * P, 4 * P)
    assert z.optimizer_state == 8 * max(owner_loads([p.numel for p in parameters_of(TINY)], n, largest_first=False))
    assert z.optimizer_state >= 8 * hand["largest"]
    # Our FSDP under bf16: 16 bytes per element of the local shard plus the replicated norms; two gathered
    # weights and one gathered gradient of the largest (V x d) in bf16; no autocast weight copies.
    f = memory_per_rank(TINY, "fsdp", n, B, T, "bf16")
    local = hand["sharded"] / n + hand["replicated"]
    assert (f.parameters, f.gradients, f.optimizer_state) == (math.ceil(4 * local), math.ceil(4 * local), math.ceil(8 * local))
    assert f.gathered == 3 * hand["largest"] * 2
    copies = 2 * (TINY_CONFIG.num_layers * (4 * 64 * 64 + 3 * 64 * 256) + 64 * TINY_CONFIG.vocab_size)
    assert f.activations == bf16.activations - copies
    # FSDP2: everything sharded; root (embedding, final norm, head) unsharded all step with its fp32 gradients,
    # two blocks in bf16 and one block's fp32 gradients.
    g = memory_per_rank(TINY, "fsdp2", n, B, T, "bf16")
    assert g.parameters == math.ceil(4 * P / n) and g.optimizer_state == math.ceil(8 * P / n)
    assert g.gathered == (hand["root"] + 2 * hand["block"]) * 2 + (hand["root"] + hand["block"]) * 4


def test_tensor_parallel_memory_splits_weights_and_keeps_norms():
    B, T, tp = 4, 32, 4
    hand = by_hand(TINY)
    m = memory_per_rank(TINY, "tp", tp, B, T, "fp32")
    embedding_and_head = hand["root"] - TINY_CONFIG.d_model  # whole on every rank, as the final norm
    blocks = hand["sharded"] - embedding_and_head
    assert m.parameters == math.ceil(4 * (blocks / tp + embedding_and_head + hand["replicated"]))
    assert m.activations < TINY.memory_estimate(B, T, "train", "fp32").activations


@pytest.mark.parametrize("strategy", SHARDED_STRATEGIES + ("fsdp_tp",))
def test_more_ranks_never_more_memory_for_sharded_strategies(strategy):
    """Up to 512 ranks, where every dimension of 2.7B (2560 = 512 x 5, 10240, 10000 rows) still shards without
    FSDP2 padding a dimension by more than a few rows."""
    config = Cs336Model("2.7B", PRESETS["2.7B"])
    totals = [memory_per_rank(config, strategy, n, 4, 1024, "bf16", tp_size=min(n, 8)).total for n in (2**k for k in range(10))]
    assert all(b <= a for a, b in zip(totals, totals[1:]))


def test_fsdp2_padding_costs_memory_past_the_dimensions():
    """At 1024 ranks FSDP2 pads 2560 rows to 3 x 1024 = 3072: q/k/v/o and w2 shards grow by 20%, and the gathered
    blocks with them, so 1024 ranks hold more than 512 do. Our flat shards pad by < n elements per weight."""
    config = Cs336Model("2.7B", PRESETS["2.7B"])
    at = {n: memory_per_rank(config, "fsdp2", n, 4, 1024, "bf16") for n in (512, 1024)}
    assert at[1024].total > at[512].total
    assert at[1024].gathered > at[512].gathered
    ours = {n: memory_per_rank(config, "fsdp", n, 4, 1024, "bf16").total for n in (512, 1024)}
    assert ours[1024] < ours[512]


def test_checkpointing_keeps_block_inputs_and_one_block():
    B, T = 4, 64

    def activations(layers, group=0):
        return Cs336Model("t", TINY_CONFIG.with_(num_layers=layers, context_length=T)).activation_bytes(B, T, "fp32",
                                                                                                        group)
    config = Cs336Model("t", TINY_CONFIG.with_(num_layers=8, context_length=T))
    full, each, every_four = activations(8), activations(8, 1), activations(8, 4)
    one_block = activations(2) - activations(1)
    outside = activations(1) - one_block
    residual = B * T * TINY_CONFIG.d_model * 4
    # Each group's input kept, one group re-made (its first block's input is the kept group input), the head.
    assert each == 8 * residual + (one_block - residual) + outside
    assert every_four == 2 * residual + (4 * one_block - residual) + outside
    assert each < every_four < full
    assert memory_per_rank(config, "fsdp2", 4, B, T, "fp32", checkpointing="blocks:1").activations == each


def test_strategies_list_is_the_benchmark_contract():
    assert STRATEGIES == PARALLEL == ("none", "ddp_naive", "ddp_flat", "ddp_overlap", "ddp_bucketed", "zero1",
                                      "fsdp", "torch_ddp", "torch_zero1", "fsdp2", "tp", "fsdp_tp")
    assert isinstance(LINKS["nvlink4"], Link)
