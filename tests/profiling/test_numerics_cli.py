"""The numerics command: its help and its refusals, before any work."""

import pytest


def test_help_describes_in_whole_sentences(capsys):
    from src.profiling.numerics import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert description.rstrip().endswith(("fast recipe, and compare the loss at every step.", "every step."))


def test_an_out_that_cannot_be_a_directory_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    from src.profiling.numerics import main

    (tmp_path / "file").write_text("x")
    for out, message in (("/proc/n", "kernel interface"), (str(tmp_path / "file"), "not a directory")):
        assert main(["--size", "tiny", "--device", "cpu", "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("numerics: error: --out") and err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("variant,message", [
    ("fast_fp8_rowwise", "precision: fp8 needs a GPU"),
    ("compiled_reduce_overhead", "compile_mode: reduce-overhead replays CUDA graphs and needs a CUDA device"),
])
def test_a_variant_the_device_cannot_run_is_refused_before_the_first_trains(tmp_path, capsys, variant, message):
    from src.profiling.numerics import main

    out = tmp_path / "numerics"
    assert main(["--size", "tiny", "--device", "cpu", "--out", str(out), "--variants", "plain", variant]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"numerics: error: --variants {variant}: {message}")
    assert err.count("\n") == 1 and not out.exists()  # nothing trained, nothing written


def test_num_layers_cuts_the_preset_and_keeps_its_width():
    from src.profiling.numerics import base_spec, build_parser

    spec = base_spec(build_parser().parse_args(["--size", "small", "--num_layers", "2"]), "cpu")
    assert (spec["num_layers"], spec["d_model"], spec["d_ff"]) == (2, 768, 3072)
    assert base_spec(build_parser().parse_args(["--size", "small"]), "cpu")["num_layers"] == 12


def test_a_run_cut_short_keeps_the_losses_of_every_variant_it_finished(tmp_path, monkeypatch, capsys):
    import src.profiling.numerics as numerics

    trained = []

    def train_then_stop(step, tokens, warmup):
        if trained:  # the second variant: as if the call's time limit killed it
            raise KeyboardInterrupt
        trained.append(step)
        return [5.0 - i for i in range(tokens.shape[0])]

    monkeypatch.setattr(numerics, "train_losses", train_then_stop)
    out = tmp_path / "numerics"
    with pytest.raises(KeyboardInterrupt):
        numerics.main(["--size", "tiny", "--device", "cpu", "--steps", "3", "--context_length", "16",
                       "--out", str(out), "--variants", "plain", "fast"])
    assert (out / "losses.csv").read_text().splitlines() == ["step,plain", "0,5.000000", "1,4.000000", "2,3.000000"]
    assert sorted(p.name for p in out.iterdir()) == ["losses.csv"]  # no temporary file left
    assert "numerics: plain: 3 steps in" in capsys.readouterr().err
