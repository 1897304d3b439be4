"""python -m src.profiling.table: every results file committed under docs/results/ still prints its table (old
files keep loading as the record schema grows), --help works, and bad input is one line with exit 2."""

import glob
import os

import pytest

from src.profiling.table import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMITTED = sorted(glob.glob(os.path.join(REPO, "docs", "results", "*.jsonl")))


def test_there_are_committed_results_to_check():
    assert len(COMMITTED) >= 20


@pytest.mark.parametrize("path", COMMITTED, ids=os.path.basename)
def test_every_committed_results_file_prints_its_table(path, capsys):
    assert main([path]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Environment: ") and "\n|" in out
    assert "error" not in err


def test_help_works(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out


def test_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err
