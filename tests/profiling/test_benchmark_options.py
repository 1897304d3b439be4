"""The benchmark's options of issue 14: presets carrying their own defaults, --activation_checkpointing, --optimizer."""

import pytest

from src.harness.results import read_records
from src.profiling.benchmark import build_parser, main, resolve


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


def test_checkpointing_and_optimizer_are_sweep_axes_recorded_in_each_spec():
    specs = specs_of(["--sizes", "tiny", "--mode", "train", "--activation_checkpointing", "none", "blocks:1",
                      "blocks:2", "--optimizer", "default", "fused"])
    assert [(s.optimizer, s.activation_checkpointing) for s in specs] == [
        (o, c) for o in ("default", "fused") for c in ("none", "blocks:1", "blocks:2")]
    assert [s.checkpoint_group for s in specs[:3]] == [0, 1, 2]


def test_without_optimizer_the_row_records_what_the_step_uses():
    plain, = specs_of(["--sizes", "tiny", "--mode", "train"])
    fast, = specs_of(["--sizes", "tiny", "--mode", "train", "--recipe", "fast"])
    assert plain.optimizer == "default" and fast.optimizer == "default"  # on CPU the recipe has no fused AdamW


@pytest.mark.parametrize("args,message", [
    (["--activation_checkpointing", "blocks:0"], "blocks:N with N >= 1"),
    (["--activation_checkpointing", "layers:2"], "blocks:N with N >= 1"),
    (["--optimizer", "ours"], "needs CUDA"),
    (["--optimizer", "sgd"], "invalid choice"),
])
def test_bad_checkpointing_or_optimizer_is_one_line_and_exit_2(args, message, capsys):
    assert main(["--device", "cpu", "--sizes", "tiny", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err


def test_checkpointed_train_rows_run_eager_and_compiled_and_record_both_fields(tmp_path, capsys):
    output = tmp_path / "r.jsonl"
    base = ["--device", "cpu", "--sizes", "tiny", "--mode", "train", "--warmup_steps", "1", "--benchmark_steps", "2",
            "--context_length", "32", "--output", str(output)]
    assert main(base + ["--activation_checkpointing", "none", "blocks:1", "--optimizer", "fused"]) == 0
    assert main(base + ["--activation_checkpointing", "blocks:2", "--compile"]) == 0
    records, _ = read_records(str(output))
    assert [r["status"] for r in records] == ["ok"] * 3
    assert [(r["config"]["activation_checkpointing"], r["config"]["optimizer"]) for r in records] == [
        ("none", "fused"), ("blocks:1", "fused"), ("blocks:2", "default")]
    assert records[2]["recompilations"] == 0
    plain, checkpointed = records[0]["estimated_memory"], records[1]["estimated_memory"]
    assert checkpointed["activations"] < plain["activations"]
    assert "| ok" in capsys.readouterr().out
