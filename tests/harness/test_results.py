import csv
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from src.harness.record import new_record, with_fields, world_size_of
from src.harness.results import append_record, check_writable, read_records
from tests.specs import tiny_spec


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


@pytest.mark.parametrize("name", ["r.csv", "r.jsonl"])
def test_world_size_of_a_row_read_back_from_either_format(tmp_path, name):
    """The one record-level world size, as the reports and the predictor read it: the row's field, else the
    configuration's ranks, else 1, whichever file format wrote the row."""
    path = str(tmp_path / name)
    append_record(path, record(0))
    append_record(path, with_fields(new_record(tiny_spec(seed=1, parallel="ddp_flat", nproc_per_node=2)),
                                    {"world_size": 2}))
    append_record(path, new_record(tiny_spec(seed=2, parallel="ddp_flat", nproc_per_node=3)))  # no world_size field
    records, _ = read_records(path)
    assert [world_size_of(r) for r in records] == [1, 2, 3]


def test_world_size_of_a_collectives_row_and_of_an_empty_csv_cell():
    assert world_size_of({"kind": "collective", "config": {"op": "all_reduce", "world_size": 8}}) == 8
    assert world_size_of({"world_size": "", "config": {"nproc_per_node": 4}}) == 4
    assert world_size_of({}) == 1


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


# ---- output paths are checked before any work (issue 11, items 1 and 4) ----------------------------------------

def _files_under(folder) -> set:
    return {os.path.join(root, name) for root, _, names in os.walk(folder) for name in names}


BAD_OUTPUTS = {
    "proc": (lambda tmp: "/proc/r.jsonl", "kernel interface"),
    "sys": (lambda tmp: "/sys/kernel/r.csv", "kernel interface"),
    "directory": (lambda tmp: str(tmp), "is a directory"),
    "dev_full": (lambda tmp: "/dev/full", "not a regular file"),
    "png": (lambda tmp: _write(tmp / "plot.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256))), "not a CSV results file"),
    "random_bytes_csv": (lambda tmp: _write(tmp / "r.csv", os.urandom(4096)), "not a CSV results file"),
    "people_csv": (lambda tmp: _write(tmp / "people.csv", b"name,age,city\nAda,36,London\n"), "not a CSV results"),
    "random_bytes_jsonl": (lambda tmp: _write(tmp / "r.jsonl", os.urandom(4096)), "not a JSON-lines results file"),
    "other_jsonl": (lambda tmp: _write(tmp / "r.jsonl", b'{"name": "Ada"}\n'), "not a JSON-lines results file"),
}


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("case", list(BAD_OUTPUTS))
def test_a_bad_output_is_refused_naming_the_problem_and_nothing_is_created_or_changed(tmp_path, case):
    make, message = BAD_OUTPUTS[case]
    path = make(tmp_path)
    before = {p: open(p, "rb").read() for p in _files_under(tmp_path)}
    dev_before = set(os.listdir("/dev"))
    with pytest.raises(ValueError, match=message):
        check_writable(path)
    if os.path.isfile(path) and not path.startswith(("/proc", "/sys", "/dev")):
        with pytest.raises(ValueError, match=message):  # the append itself refuses too, under its lock
            append_record(path, record(1))
    assert {p: open(p, "rb").read() for p in _files_under(tmp_path) if not os.path.basename(p).startswith(".")} == before
    assert set(os.listdir("/dev")) == dev_before


def test_dev_null_means_discard_and_leaves_no_lock_file():
    dev_before = set(os.listdir("/dev"))
    check_writable(os.devnull)
    append_record(os.devnull, record(1))
    assert set(os.listdir("/dev")) == dev_before
    with pytest.raises(ValueError, match="not a directory"):
        check_writable(os.devnull, directory=True)


def test_a_directory_output_must_not_be_a_file_or_in_a_kernel_tree(tmp_path):
    check_writable(str(tmp_path / "new" / "deeper"), directory=True)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="not a directory"):
        check_writable(_write(tmp_path / "file", b"x"), directory=True)
    with pytest.raises(ValueError, match="kernel interface"):
        check_writable("/proc/traces", directory=True)


@pytest.mark.parametrize("name", ["r.csv", "r.jsonl"])
def test_our_own_and_empty_files_are_accepted(tmp_path, name):
    path = str(tmp_path / name)
    open(path, "w").close()
    check_writable(path)
    append_record(path, record(1))
    check_writable(path)


# ---- a full disk leaves the file as it was (issue 11, item 2) --------------------------------------------------

def _failing_write_after(monkeypatch, whole_writes: int):
    """os.write succeeds `whole_writes` times, then writes half and raises ENOSPC, like a disk that fills up."""
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) <= whole_writes:
            return real_write(fd, data)
        real_write(fd, data[: len(data) // 2])  # the bytes that fitted
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("name", ["r.csv", "r.jsonl"])
def test_a_full_disk_leaves_the_file_exactly_as_it_was(tmp_path, monkeypatch, name):
    path = str(tmp_path / name)
    append_record(path, record(1))
    before = open(path, "rb").read()
    _failing_write_after(monkeypatch, 0)
    with pytest.raises(OSError, match="No space"):
        append_record(path, record(2))
    assert open(path, "rb").read() == before
    monkeypatch.undo()
    append_record(path, record(3))
    assert [r["config"]["seed"] for r in read_records(path)[0]] == [1, 3]


def test_a_short_write_is_undone_too(tmp_path, monkeypatch):
    path = str(tmp_path / "r.jsonl")
    append_record(path, record(1))
    before = open(path, "rb").read()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]))
    with pytest.raises(OSError, match="short write"):
        append_record(path, record(2))
    assert open(path, "rb").read() == before


def test_a_full_disk_during_the_csv_union_rewrite_leaves_the_file_and_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "r.csv")
    append_record(path, record(1))
    before = open(path, "rb").read()
    real_open = open

    class FullFile:  # the temporary file's write fails as on a full disk
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[:100])
            self.f.flush()
            raise OSError(28, "No space left on device")

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullFile(f) if ".tmp." in str(file) else f

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(OSError, match="No space"):
        append_record(path, record(2, new_column="x"))
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == [".r.csv.lock", "r.csv"]


@pytest.fixture
def small_filesystem(tmp_path):
    """A 64 KiB tmpfs (needs root, as in CI); skipped where mounting is not permitted."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?); the os.write tests above simulate a full disk")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("name", ["r.csv", "r.jsonl"])
def test_on_a_really_full_disk_only_whole_rows_are_left(small_filesystem, name):
    path = str(small_filesystem / name)
    appended = 0
    with pytest.raises(OSError):
        while True:
            append_record(path, record(appended, note="z" * 1000))
            appended += 1
    assert appended > 10
    records, warnings = read_records(path)
    assert warnings == [] and [r["config"]["seed"] for r in records] == list(range(appended))
    assert sorted(os.listdir(small_filesystem)) == sorted([name, f".{name}.lock"])


# ---- the CSV column-union rewrite never loses data silently (issue 11, item 4) ----------------------------------

def test_the_union_rewrite_keeps_a_new_field_and_every_old_line(tmp_path):
    path = str(tmp_path / "r.csv")
    append_record(path, record(1))
    with open(path, "a") as f:
        f.write("tiny,6")  # a writer died here: a torn line
    append_record(path, record(2, new_column="kept"))
    assert "\ntiny,6\n" in open(path).read()  # carried over as it was
    records, warnings = read_records(path)
    assert [r["config"]["seed"] for r in records] == [1, 2]  # the torn line did not become a row
    assert records[1]["new_column"] == "kept" and records[0]["new_column"] is None
    assert len(warnings) == 1  # still visible to a reader


def test_a_line_with_an_extra_field_refuses_the_union_rewrite_and_nothing_changes(tmp_path):
    path = str(tmp_path / "r.csv")
    append_record(path, record(1))
    with open(path, "a") as f:
        f.write(open(path).read().splitlines()[1] + ",hand-added\n")  # one field more than the header
    before = open(path, "rb").read()
    with pytest.raises(ValueError, match=r"r.csv:3 has .* fields"):
        append_record(path, record(2, new_column="x"))
    assert open(path, "rb").read() == before
    append_record(path, record(3))  # no new column: an ordinary append still works
    assert b"hand-added" in open(path, "rb").read()


def test_a_file_that_is_replaced_whole_may_hold_anything_but_must_be_a_regular_file(tmp_path):
    plot = _write(tmp_path / "p.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    check_writable(plot, replaces=True)
    with pytest.raises(ValueError, match="not a regular file"):
        check_writable("/dev/full", replaces=True)


# ---- one reader for every command; CSV types from the schema; symlink loops; .JSONL (issue 21, items 3, 4, 6, 7) ----

NOT_ROWS = ["42", "[1, 2]", "null", '"text"', '{"a": 1}', '{"status": "ok", "time_forward": "abc"}',
            '{"status": "ok", "config": 3}', '{"status": "ok", "median_time_step": [1]}']


def test_a_json_line_that_is_not_a_row_is_skipped_with_one_warning_each(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(str(path), record(1))
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in NOT_ROWS))
    append_record(str(path), record(2))
    records, warnings = read_records(str(path))
    assert [r["config"]["seed"] for r in records] == [1, 2]
    assert [w.split(":")[1] for w in warnings] == [str(n) for n in range(2, 2 + len(NOT_ROWS))]
    assert all("not a row" in w for w in warnings)


def test_a_row_without_config_or_env_reads_with_empty_ones(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"status": "ok", "busbw_gbps": 1.0}\n{"status": "ok", "config": null}\n')
    records, warnings = read_records(str(path))
    assert warnings == [] and [(r["config"], r["env"]) for r in records] == [({}, {}), ({}, {})]


@pytest.mark.parametrize("text", ["# lm-step-bench\n\nSome prose, with a comma.\n", "name,age\nAda,36\n"])
def test_a_csv_that_is_not_a_results_file_is_refused_on_read(tmp_path, text):
    path = tmp_path / "README.md"
    path.write_text(text)
    with pytest.raises(ValueError, match="not a CSV results file"):
        read_records(str(path))


def test_csv_cells_read_back_as_the_schema_types_them_not_as_they_look(tmp_path):
    env = {"git_commit": "123e4567", "hostname": "001234567890", "cuda_version": "13.0", "gpu_name": "",
           "torch_version": "2.11", "gpu_memory_bytes": 80 * 2**30}
    rows = [record(1, env=env, error="12", peak_note="1e5", tflops=2.0, parameters=1000, trace_summary={"a": 1}),
            record(2, env=env)]
    for name in ("r.csv", "r.jsonl"):
        for r in rows:
            append_record(str(tmp_path / name), r)
    from_csv, warnings = read_records(str(tmp_path / "r.csv"))
    assert warnings == []
    assert from_csv[0]["env"] == env  # "123e4567" is not inf, the zero stays, "13.0" is not 13
    assert from_csv[0]["error"] == "12" and from_csv[0]["peak_note"] == "1e5"
    assert from_csv[0]["config"]["recipe"] == "" and from_csv[0]["config"]["compile"] is False
    assert from_csv[0]["parameters"] == 1000 and from_csv[0]["trace_summary"] == {"a": 1}
    from_jsonl, _ = read_records(str(tmp_path / "r.jsonl"))
    def recorded(row):  # a CSV cannot tell a field never set from an empty one: both read back "" or None
        return {k: v for k, v in row.items() if v is not None and v != ""}

    for csv_row, json_row in zip(from_csv, from_jsonl):  # otherwise a CSV row is the record its JSON line is
        assert recorded(csv_row) == recorded(json_row)


def test_a_column_outside_the_schema_is_a_number_only_when_python_wrote_it_so(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("d_model,status,foreign,other,third\n64,ok,001234567890,123e4567,2.5\n")
    (r,), _ = read_records(str(path))
    assert (r["foreign"], r["other"], r["third"]) == ("001234567890", "123e4567", 2.5)


def test_a_csv_cell_its_column_cannot_hold_skips_that_row(tmp_path):
    path = tmp_path / "r.csv"
    append_record(str(path), record(1))
    text = path.read_text().splitlines()
    header = text[0].split(",")
    cells = next(csv.reader([text[1]]))
    cells[header.index("time_forward")] = "not a list"
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(cells)
    records, warnings = read_records(str(path))
    assert len(records) == 1 and len(warnings) == 1 and "time_forward" in warnings[0]


def _loops(tmp_path) -> dict:
    os.symlink(tmp_path / "loop", tmp_path / "loop")  # loop -> loop
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")  # a -> b -> a
    return {"file": (str(tmp_path / "loop"), {}), "pair": (str(tmp_path / "a"), {}),
            "parent": (str(tmp_path / "loop" / "r.jsonl"), {}),
            "trace_directory": (str(tmp_path / "a" / "traces"), {"directory": True}),
            "snapshot_prefix": (str(tmp_path / "loop" / "snap-probe.pickle"), {})}


def test_a_symlink_loop_is_refused_before_any_work_and_leaves_no_lock(tmp_path):
    for case, (path, kind) in _loops(tmp_path).items():
        with pytest.raises(ValueError, match="symlink loop"):
            check_writable(path, **kind)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "loop"]


@pytest.mark.parametrize("flag", ["--output", "--trace"])  # --memory_snapshot needs CUDA: its prefix is checked above
def test_the_benchmark_refuses_a_symlink_loop_in_one_line(tmp_path, capsys, flag):
    from src.profiling.benchmark import main as benchmark

    os.symlink(tmp_path / "loop", tmp_path / "loop")
    assert benchmark(["--sizes", "tiny", "--device", "cpu", flag, str(tmp_path / "loop")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag}: " in err and "symlink loop" in err
    assert os.listdir(tmp_path) == ["loop"]


@pytest.mark.parametrize("name", ["r.JSONL", "r.Jsonl"])
def test_a_jsonl_suffix_in_any_case_is_json_lines(tmp_path, name):
    path = str(tmp_path / name)
    append_record(path, record(1))
    assert json.loads(open(path).readline())["config"]["seed"] == 1
    assert read_records(path)[0][0]["config"]["seed"] == 1


def test_a_file_whose_first_line_is_empty_is_not_taken_for_a_csv_results_file(tmp_path):
    """os.urandom's bytes start with a newline one time in 256: the check above then saw an empty header."""
    path = _write(tmp_path / "r.csv", b"\n" + bytes(range(1, 256)))
    with pytest.raises(ValueError, match="not a CSV results file"):
        check_writable(path)
