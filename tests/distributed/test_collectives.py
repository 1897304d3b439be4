"""The collectives benchmark's arithmetic: nccl-tests' bandwidth conventions by hand, sizes, and the result check."""

import pytest
import torch

from src.distributed.collectives import (OPS, PATTERN_PERIOD, bandwidths, bus_factor, element_count,
                                         max_relative_error, pattern, size_ladder, tolerance)

GB = 1024**3


@pytest.mark.parametrize("op, n, seconds, algbw, busbw", [
    # 1 GiB = 1.073741824e9 bytes in 10 ms -> 107.3741824 GB/s; busbw by hand from nccl-tests' PERFORMANCE.md
    ("all_reduce", 4, 0.01, 107.3741824, 107.3741824 * 2 * 3 / 4),   # 161.0612736
    ("all_reduce", 2, 0.01, 107.3741824, 107.3741824),               # 2(n-1)/n = 1 at n = 2
    ("all_reduce", 1, 0.01, 107.3741824, 0.0),                       # nothing crosses a link
    ("all_gather", 8, 0.02, 53.6870912, 53.6870912 * 7 / 8),        # 46.9762048
    ("reduce_scatter", 8, 0.02, 53.6870912, 46.9762048),
    ("broadcast", 8, 0.005, 214.7483648, 214.7483648),
])
def test_bandwidths_match_hand_calculation(op, n, seconds, algbw, busbw):
    got_algbw, got_busbw = bandwidths(op, GB, seconds, n)
    assert got_algbw == pytest.approx(algbw, rel=1e-12)
    assert got_busbw == pytest.approx(busbw, rel=1e-12)


def test_bus_factor_rejects_unknown_op():
    with pytest.raises(ValueError, match="all_to_all"):
        bus_factor("all_to_all", 2)


def test_default_ladder_is_1kb_to_1gb_by_four():
    sizes = size_ladder()
    assert sizes[0] == 1024 and sizes[-1] == GB and len(sizes) == 11
    assert all(b == 4 * a for a, b in zip(sizes, sizes[1:]))
    assert size_ladder(1000, 9000, 3) == [1000, 3000, 9000]
    with pytest.raises(ValueError):
        size_ladder(64, 32)


def test_element_count_rounds_down_to_a_multiple_of_the_world_size():
    assert element_count(1024, torch.float32, 2) == 256
    assert element_count(1024, torch.float32, 3) == 255  # 256 -> 85 per rank
    assert element_count(1024, torch.bfloat16, 8) == 512
    assert element_count(4, torch.float64, 2) == 0


def _correct_output(op: str, rank: int, n: int, count: int) -> torch.Tensor:
    """What each operation must leave on `rank`, built the slow obvious way from every rank's inputs."""
    chunk = count // n
    inputs = [pattern(r, 0, count if op in ("all_reduce", "reduce_scatter", "broadcast") else chunk, "cpu")
              for r in range(n)]
    if op == "all_reduce":
        return sum(inputs)
    if op == "broadcast":
        return inputs[0]
    if op == "all_gather":
        return torch.cat(inputs)
    return sum(inputs)[rank * chunk:(rank + 1) * chunk]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n, count", [(2, 64), (3, 99), (4, 1000)])
def test_check_accepts_the_right_answer_and_catches_one_wrong_element(op, n, count):
    for rank in range(n):
        output = _correct_output(op, rank, n, count).to(torch.float32)
        assert max_relative_error(op, output, rank, n, count) == 0.0
        output[len(output) // 2] += 1  # one element off by one: at least 1/(8n) relative
        assert max_relative_error(op, output, rank, n, count) >= 1 / (PATTERN_PERIOD * n)


def test_check_of_a_chunk_misplaced_by_all_gather():
    n, count = 4, 64
    output = _correct_output("all_gather", 0, n, count).to(torch.int32)
    swapped = torch.cat([output[16:32], output[:16], output[32:]])  # ranks 0 and 1 exchanged
    assert max_relative_error("all_gather", swapped, 0, n, count) > 0


def test_tolerances_are_exact_for_integers_and_n_eps_for_floats():
    assert tolerance(torch.int32, 8) == 0.0
    assert tolerance(torch.bfloat16, 8) == 8 * 2**-7
    assert tolerance(torch.float32, 2) == 2 * 2**-23
