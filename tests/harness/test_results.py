import csv
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from src.harness.record import new_record, with_fields
from src.harness.results import append_record, check_writable, read_records
from tests.conftest import tiny_spec


def record(i: int, **extra) -> dict:
    return with_fields(new_record(tiny_spec(seed=i)), {
        "time_forward": [0.1 * i, 0.2], "tflops": 1.5, "env": {"gpu_name": "X", "git_commit": "abc"}, **extra})


@pytest.mark.parametrize("name", ["r.csv", "r.jsonl"])
def test_round_trip(tmp_path, name):
    path = str(tmp_path / name)
    for i in range(3):
        append_record(path, record(i))
    records, warnings = read_records(path)
    assert warnings == []
    assert [r["config"]["seed"] for r in records] == [0, 1, 2]
    assert records[2]["time_forward"] == [0.2, 0.2] and records[2]["env"]["gpu_name"] == "X"


def _append_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        append_record(path, record(worker * 1000 + i, note="x" * 2000))  # long rows: more than one page each


@pytest.mark.parametrize("name", ["r.csv", "r.jsonl"])
def test_concurrent_appends_give_a_valid_file(tmp_path, name):
    path = str(tmp_path / name)
    procs = [multiprocessing.get_context("spawn").Process(target=_append_many, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    records, warnings = read_records(path)
    assert warnings == [] and len(records) == 160
    assert sorted(r["config"]["seed"] for r in records) == sorted(w * 1000 + i for w in range(4) for i in range(40))


WRITER = """
import sys
from src.harness.results import append_record
i = 0
while True:
    append_record(sys.argv[1], {"config": {"batch_size": i}, "status": "ok", "blob": "y" * 5000})
    i += 1
"""


@pytest.mark.parametrize("name", ["r.csv", "r.jsonl"])
def test_a_writer_killed_mid_append_leaves_only_whole_rows(tmp_path, name):
    path = str(tmp_path / name)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path], cwd=os.getcwd())
    deadline = time.time() + 30
    while (not os.path.exists(path) or os.path.getsize(path) < 200_000) and time.time() < deadline:
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    records, _ = read_records(path)
    assert len(records) > 10
    assert [r["config"]["batch_size"] for r in records] == list(range(len(records)))  # whole, in order, no gaps


@pytest.mark.parametrize("name", ["r.csv", "r.jsonl"])
def test_a_torn_last_line_is_skipped_and_the_next_row_starts_clean(tmp_path, name):
    path = str(tmp_path / name)
    append_record(path, record(1))
    with open(path, "a") as f:
        f.write('{"config": {"size": "torn' if name.endswith("jsonl") else "tiny,torn")  # a writer died here
    append_record(path, record(2))
    records, warnings = read_records(path)
    assert [r["config"]["seed"] for r in records] == [1, 2]
    assert len(warnings) == 1


def test_csv_from_an_older_version_keeps_its_rows_and_values(tmp_path):
    path = tmp_path / "old.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["d_model", "mean_time_forward", "legacy_column"])
        writer.writerow([768, 0.0111, "kept"])
    append_record(str(path), record(7))
    records, warnings = read_records(str(path))
    assert warnings == [] and len(records) == 2
    assert records[0]["config"]["d_model"] == 768 and records[0]["mean_time_forward"] == 0.0111
    assert records[0]["legacy_column"] == "kept"
    assert records[1]["config"]["seed"] == 7 and records[1]["legacy_column"] is None


def test_check_writable_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        check_writable(str(tmp_path / "missing" / "r.csv"))
    with pytest.raises(ValueError, match="is a directory"):
        check_writable(str(tmp_path))
    check_writable(str(tmp_path / "r.csv"))
    assert not (tmp_path / "r.csv").exists()


def test_jsonl_records_keep_lists_and_nested_fields(tmp_path):
    path = str(tmp_path / "r.jsonl")
    append_record(path, record(3, warnings=["a"]))
    with open(path) as f:
        assert json.loads(f.readline())["warnings"] == ["a"]


def test_a_stated_commit_wins_over_what_git_answers(monkeypatch):
    """The GPU machine's copy of the tree had a stale .git: the commit named in LMBENCH_COMMIT is the one recorded."""
    from src.harness.environment import git_commit

    monkeypatch.delenv("LMBENCH_COMMIT", raising=False)
    from_git = git_commit()
    assert from_git  # this checkout is a git repository
    monkeypatch.setenv("LMBENCH_COMMIT", "0123456789ab")
    assert git_commit() == "0123456789ab"
