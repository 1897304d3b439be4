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


def test_lines_that_are_not_rows_are_skipped_with_a_warning_each(tmp_path, capsys):
    """Issue 21 item 3: `42` in the middle of a JSONL was a traceback, `{"a": 1}` a blank row."""
    good = open(COMMITTED[0]).read().splitlines()
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join([good[0], "42", "[1, 2]", "null", '{"a": 1}', *good[1:]]) + "\n")
    assert main([str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.count("table: warning: ") == 4 and "not a row" in err
    assert sum(line.startswith("|") for line in out.splitlines()) == 2 + len(good)  # header, rule, the rows


@pytest.mark.parametrize("text", ["", "# A README\n\nprose, with a comma\n"])
def test_an_empty_or_foreign_file_is_refused_in_one_line(tmp_path, capsys, text):
    path = tmp_path / "README.md"
    path.write_text(text)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("table: error: ")
