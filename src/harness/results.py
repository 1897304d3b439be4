"""The results file: one record per configuration, appended whole under a lock; CSV, or JSON lines for `.jsonl`.

A record is a dict: scalar summary fields, `config` (every option), `env` (where it ran) and per-step time lists.
JSON lines keep it as it is. CSV flattens it: config fields become columns, env fields `env_<name>`, lists JSON text;
read back, each cell takes the type the record schema gives its column (src/harness/record.py FIELDS, RunSpec's
fields for config columns, text for env), so a CSV row reads back as the same record its JSON line would.
read_records is the one reader of every command: what is not a row (a torn line, a JSON value that is not a row)
is skipped with one warning per line.
Appends are safe against each other (an exclusive flock on a hidden sidecar `.<file>.lock`) and against a reader: a
record is one write() of one line, and a write that fails (a full disk) is cut back, leaving the file exactly as
it was. A CSV written by another version with other columns is rewritten with the union of both headers (old
values kept in place) through a temporary file and an atomic rename, or refused when a line cannot be placed.
check_writable is the one check of every command's output path, run before any work.
"""

import csv
import errno
import io
import json
import os
import stat
import types
import typing
from contextlib import contextmanager

from src.harness.record import CONFIG_TYPES, ENV_FIELDS, FIELDS, LIST_FIELDS, fields_problem, is_row, row_problem
from src.spec import config_fields

ENV_PREFIX = "env_"
# The options that identify a configuration (RunSpec's fields); CSV keeps them as plain columns, records keep
# them under `config`.
CONFIG_FIELDS = config_fields()


def is_jsonl(path: str) -> bool:
    """JSON lines for a name ending in .jsonl in any case (r.JSONL too), CSV for every other name."""
    return str(path).lower().endswith(".jsonl")


# Kernel interfaces, not storage: a file there cannot hold rows (and /proc, /sys are refused by path as well,
# because a container may mount a tmpfs inside /sys, as /sys/fs/cgroup is here).
_KERNEL_FILESYSTEMS = {"proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "configfs",
                       "devpts", "bpf", "pstore", "efivarfs", "fusectl", "mqueue", "binfmt_misc", "nsfs"}
_KERNEL_TREES = ("/proc", "/sys")
_HEAD_BYTES = 64 * 1024  # an existing results file must show what it is within its first line, read up to this
# Columns of a benchmark results file besides CONFIG_FIELDS; a CSV header must share two names with these.
RESULT_FIELDS = ("status", "error", "warnings", "mean_time_forward", "mean_time_step", "median_time_step", "tflops")


def discards(path: str) -> bool:
    """--output /dev/null: rows are measured and printed but written nowhere, and no lock file is made in /dev."""
    return os.path.realpath(path) == os.devnull


def _filesystem_type(path: str) -> str:
    """The type of the filesystem holding `path` (which exists), from /proc/self/mountinfo; "" where unknown."""
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return ""
    best, kind = "", ""
    for fields in mounts:
        point = fields[4].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[fields.index("-") + 1]
    return kind


def _check_storage(path: str, real: str) -> None:
    existing = real
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    kind = _filesystem_type(existing)
    tree = next((t for t in _KERNEL_TREES if real == t or real.startswith(t + "/")), "")
    if kind in _KERNEL_FILESYSTEMS or tree:
        raise ValueError(f"{path} is in a kernel interface ({kind if kind in _KERNEL_FILESYSTEMS else tree}), "
                         "not on storage")


def _kind(path: str) -> str:
    return "JSON-lines" if is_jsonl(path) else "CSV"


def _starts_like_results(path: str, columns) -> bool:
    """Whether the file at `path` is empty or starts as a results file of its kind: a first line that is a row
    (JSON lines) or a CSV header sharing two of `columns`."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if not head:
        return True
    line, newline, _ = head.partition(b"\n")
    try:
        if b"\0" in line or not newline:
            return False
        text = line.decode("utf-8")
        if is_jsonl(path):
            return is_row(json.loads(text))
        header = next(csv.reader([text]), [])
        # An empty first line is no header (random bytes that start with a newline passed as one: a flaky test)
        return bool(header) and len(set(header) & set(columns)) >= min(2, len(header))
    except (ValueError, RecursionError, csv.Error):  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
        return False


def _check_results_file(path: str, columns) -> None:
    """Raise ValueError unless the existing file at `path` is empty or a results file of this kind."""
    if not _starts_like_results(path, columns):
        raise ValueError(f"{path} exists and is not a {_kind(path)} results file of this tool; refusing to append "
                         "to it (choose another name)")


def _check_no_symlink_loop(path: str) -> None:
    """A path through a symlink loop (the file itself, or a folder above it) cannot be opened: ELOOP on any
    stat, where realpath (non-strict) hands back a path that merely does not exist."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"{path} goes through a symlink loop (too many levels of symbolic links)") from None


def check_writable(path: str, *, directory: bool = False, replaces: bool = False,
                   columns=CONFIG_FIELDS + RESULT_FIELDS) -> None:
    """Raise ValueError naming the problem unless results can be written at `path`. Creates and writes nothing.

    A file (directory=False) is appended to: it must be absent, empty, or a results file whose first line is
    one of ours (a CSV header sharing two of `columns`, or a JSON object with a status), on storage, writable,
    in a writable directory (its lock file goes beside it). /dev/null is accepted and means "discard"
    (see discards). A file the command replaces whole (replaces=True: a plot) may hold anything. A directory
    (directory=True) must exist or be creatable under a writable one.
    """
    _check_no_symlink_loop(path)
    real = os.path.realpath(path)
    if discards(path):
        if directory:
            raise ValueError(f"{path} is not a directory")
        return
    _check_storage(path, real)
    if directory:
        if os.path.exists(real) and not os.path.isdir(real):
            raise ValueError(f"{path} exists and is not a directory")
        existing = real
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ValueError(f"cannot create {path}: {existing} is not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write under {path}: {existing} is not writable")
        return
    if os.path.isdir(real):
        raise ValueError(f"output path {path} is a directory")
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        raise ValueError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {parent} is not writable")
    if os.path.exists(real):
        if not stat.S_ISREG(os.stat(real).st_mode):
            raise ValueError(f"output path {path} is not a regular file (a device, pipe or socket)")
        if not os.access(real, os.W_OK):
            raise ValueError(f"output file {path} is not writable")
        if not replaces:
            _check_results_file(real, columns)


def flatten(record: dict) -> dict:
    """The CSV row of a record: config and env lifted to columns, lists as JSON text."""
    row = dict(record.get("config", {}))
    for key, value in record.items():
        if key == "config":
            continue
        if key == "env":
            row.update({ENV_PREFIX + k: v for k, v in value.items()})
        elif isinstance(value, (list, dict)):
            row[key] = json.dumps(value)
        else:
            row[key] = value
    return row


@contextmanager
def _locked(path: str):
    import fcntl  # POSIX only; imported here so reading results works anywhere

    folder, name = os.path.split(os.path.abspath(path))
    with open(os.path.join(folder, f".{name}.lock"), "a") as lock:  # hidden sidecar: survives the CSV rename
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_whole(path: str, text: str) -> None:
    """Append `text` with one write(); start on a fresh line if a killed writer left a torn one.

    If the write fails or is short (a full disk), the file is cut back to its size before: it is left exactly
    as it was, and OSError is raised.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    text = "\n" + text
        data = text.encode()
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes (disk full?)", path)
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _csv_text(header: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="raise", lineterminator="\n")
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in header})
    return buf.getvalue()


def _read_csv_header(path: str) -> list[str] | None:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def append_record(path: str, record: dict, columns=CONFIG_FIELDS + RESULT_FIELDS) -> None:
    """Append one record whole, or leave the file as it was and raise (OSError, or ValueError for a file that
    is not ours). /dev/null takes nothing and locks nothing."""
    if discards(path):
        return
    with _locked(path):
        if os.path.exists(path):
            _check_results_file(path, columns)
        if is_jsonl(path):
            _write_whole(path, json.dumps(record, default=str) + "\n")
            return
        row = flatten(record)
        header = _read_csv_header(path)
        if header is None:
            _write_whole(path, _csv_text(list(row), [{k: k for k in row}, row]))
        elif set(row) <= set(header):
            _write_whole(path, _csv_text(header, [row]))
        else:
            _rewrite_csv_with_union(path, header, row)


def _rewrite_csv_with_union(path: str, header: list[str], row: dict) -> None:
    """Rewrite the CSV under the union of its header and the new row's fields, through a temporary file and an
    atomic rename. A line with fewer fields than the header (a torn line) is carried over as it was, never spread
    over columns it does not belong to; readers skip it with a warning. A line with more fields than the header
    could land under the new columns, so the rewrite is refused (ValueError) and the file left as it was."""
    union = header + [k for k in row if k not in header]
    with open(path, newline="") as f:
        lines = list(csv.reader(f))[1:]
    for number, fields in enumerate(lines, 2):
        if len(fields) > len(header):
            raise ValueError(f"{path}:{number} has {len(fields)} fields but the header {len(header)}; adding the "
                             f"columns {', '.join(union[len(header):])} would misplace it: fix that line or write "
                             "to another file")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(union)
    for fields in lines:
        if len(fields) == len(header):
            writer.writerow(fields + [""] * (len(union) - len(header)))
        elif fields:
            writer.writerow(fields)
    buf.write(_csv_text(union, [row]))
    replace_whole(path, buf.getvalue())


def replace_whole(path: str, text: str) -> None:
    """Replace the file at `path` by `text` through a temporary file and an atomic rename: a reader, or a kill
    mid-write, sees the old file or the new one, never part of either; the temporary file is removed on failure."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# Each CSV column's declared type: RunSpec's fields for config columns, the record schema's for the rest, text
# (or ENV_FIELDS' exceptions) for env columns. A column in none of them was written by another tool or version.
def _column_type(key: str):
    if key.startswith(ENV_PREFIX):
        return ENV_FIELDS.get(key[len(ENV_PREFIX):], str)
    return CONFIG_TYPES.get(key, FIELDS.get(key))


def _from_text(kind, text: str):
    """A CSV cell as the type `kind` (an annotation: str, int, float | None, list[float], dict) says; a cell that
    type cannot read (a hand-edited file) is kept as written. Empty is "" for text and None for the rest."""
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    options = [k for k in typing.get_args(kind) if k is not type(None)] if union else [kind]
    if text == "":
        return "" if str in options else None
    for option in options:
        base = typing.get_origin(option) or option
        try:
            if base is str:
                return text
            if base is bool:
                return {"True": True, "False": False}[text]
            if base is int:
                try:
                    return int(text)
                except ValueError:
                    return float(text)  # an integer column written as 4.0 by another tool is still a number
            if base is float:
                return float(text)
            if base in (list, dict):
                return json.loads(text)
        except (KeyError, ValueError, RecursionError):
            continue
    return text


def _guess(text: str):
    """A cell of a column outside the schema: a number only where the text is exactly how Python writes that
    number (so "001234567890" and "123e4567" stay text), JSON lists and objects parsed, else the text."""
    if text == "":
        return None
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        return value if repr(value) == text else text
    return text


def _parse_csv_value(key: str, text: str):
    kind = _column_type(key)
    return _guess(text) if kind is None else _from_text(kind, text)


def _read_jsonl(path: str) -> tuple[list[dict], list[str]]:
    records, warnings = [], []
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is one skipped line, not an unreadable file
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                warnings.append(f"{path}:{number}: skipped a line that is not whole JSON")
                continue
            problem = row_problem(value)
            if problem:
                warnings.append(f"{path}:{number}: skipped a line that is not a row: {problem}")
                continue
            value["config"], value["env"] = value.get("config") or {}, value.get("env") or {}
            records.append(value)
    return records, warnings


def _read_csv(path: str) -> tuple[list[dict], list[str]]:
    if not _starts_like_results(path, CONFIG_FIELDS + tuple(FIELDS)):
        raise ValueError("not a CSV results file of this tool (its first line is not a header sharing two column "
                         "names with the record schema)")
    records, warnings = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        try:
            for number, raw in enumerate(reader, 2):
                if None in raw or any(v is None for v in raw.values()):
                    warnings.append(f"{path}:{number}: skipped a row with the wrong number of fields")
                    continue
                record, config, env = {}, {}, {}
                for key, text in raw.items():
                    value = _parse_csv_value(key, text)
                    if key.startswith(ENV_PREFIX):
                        env[key[len(ENV_PREFIX):]] = value
                    elif key in CONFIG_FIELDS:
                        config[key] = value
                    else:
                        record[key] = value
                record["config"], record["env"] = config, env
                problem = fields_problem(record)  # a cell its column's type cannot read (a hand edit)
                if problem:
                    warnings.append(f"{path}:{number}: skipped a row that does not fit the record schema: {problem}")
                    continue
                records.append(record)
        except csv.Error as error:  # a NUL byte, a cell over the csv module's field limit
            raise ValueError(f"line {reader.line_num}: {error}") from None
    return records, warnings


def read_records(path: str) -> tuple[list[dict], list[str]]:
    """All rows of a results file, in order, and a warning for each line skipped: a torn line, a JSON line that is
    not a row (see src/harness/record.py is_row: `42`, `null`, `{"a": 1}`), a CSV line with the wrong number of
    fields. Both formats come back in the record's shape: options under `config`, environment under `env`.

    Raises OSError (missing, unreadable) or ValueError (a CSV that is not a results file of this tool) naming
    the problem; every command turns that into one line and exit status 2.
    """
    return _read_jsonl(path) if is_jsonl(path) else _read_csv(path)
