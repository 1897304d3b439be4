import torch

from src.profiling.numerics import ACTIVE_TOKENS, SUCCESSORS, markov_tokens


def test_markov_stream_is_fixed_and_learnable():
    a, b = markov_tokens(500, 3, 2, 64, seed=7), markov_tokens(500, 3, 2, 64, seed=7)
    assert a.shape == (3, 2, 65) and torch.equal(a, b)
    pairs = a.flatten(0, 1).unfold(1, 2, 1).reshape(-1, 2)  # every (token, next token) in the stream
    successors: dict[int, set[int]] = {}
    for x, y in pairs.tolist():
        successors.setdefault(x, set()).add(y)
    assert max(len(s) for s in successors.values()) <= SUCCESSORS  # each token has at most SUCCESSORS next tokens
    assert len(torch.unique(a)) <= min(ACTIVE_TOKENS, 500)


def test_help_describes_in_whole_sentences(capsys):
    import pytest

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
