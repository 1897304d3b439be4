"""The benchmark's options of issue 14: presets carrying their own defaults, --activation_checkpointing, --optimizer."""

from src.profiling.benchmark import build_parser, resolve


def specs_of(argv):
    return resolve(build_parser().parse_args(["--device", "cpu", *argv]))[0]


def test_a_preset_brings_its_own_vocab_context_and_batch_unless_the_option_is_given():
    leaderboard, small = specs_of(["--sizes", "8B-leaderboard", "small"])
    assert (leaderboard.vocab_size, leaderboard.context_length, leaderboard.batch_size) == (151_936, 32_768, 2)
    assert (small.vocab_size, small.context_length, small.batch_size) == (10_000, 128, 4)
    given = specs_of(["--sizes", "8B-leaderboard", "small", "--vocab_size", "500", "--context_length", "64",
                      "--batch_size", "3"])
    assert [(s.vocab_size, s.context_length, s.batch_size) for s in given] == [(500, 64, 3)] * 2
    ten_b, = specs_of(["--sizes", "10B"])
    assert (ten_b.d_model, ten_b.d_ff, ten_b.num_layers, ten_b.num_heads, ten_b.vocab_size) == (4608, 12288, 50, 36,
                                                                                                   10_000)
