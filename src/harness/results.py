"""The results file: one record per configuration, appended whole under a lock; CSV, or JSON lines for `.jsonl`.

A record is a dict: scalar summary fields, `config` (every option), `env` (where it ran) and per-step time lists.
JSON lines keep it as it is. CSV flattens it: config fields become columns, env fields `env_<name>`, lists JSON text.
Appends are safe against each other (an exclusive flock on a hidden sidecar `.<file>.lock`) and against a reader: a
record is one write() of one line. A CSV written by another version with other columns is rewritten with the
union of both headers (old values kept in place) through a temporary file and an atomic rename.
"""

import csv
import io
import json
import os
from contextlib import contextmanager

from src.harness.record import LIST_FIELDS
from src.spec import config_fields

ENV_PREFIX = "env_"
# The options that identify a configuration (RunSpec's fields); CSV keeps them as plain columns, records keep
# them under `config`.
CONFIG_FIELDS = config_fields()


def is_jsonl(path: str) -> bool:
    return str(path).endswith(".jsonl")


def check_writable(path: str) -> None:
    """Raise ValueError naming the problem if `path` cannot be appended to. Creates and writes nothing."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ValueError(f"output path {path} is a directory")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(f"output directory {parent} does not exist")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ValueError(f"output file {path} is not writable")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {parent} is not writable")


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
    """Append `text` with one write(); start on a fresh line if a killed writer left a torn one."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    text = "\n" + text
        data = text.encode()
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
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


def append_record(path: str, record: dict) -> None:
    with _locked(path):
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
    union = header + [k for k in row if k not in header]
    with open(path, newline="") as f:
        old_rows = [r for r in csv.DictReader(f) if None not in r]  # skip a torn line: it has no safe place
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(_csv_text(union, [{k: k for k in union}, *old_rows, row]))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _parse_csv_value(key: str, text: str):
    if text == "":
        return None
    if key in LIST_FIELDS or text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


def read_records(path: str) -> tuple[list[dict], list[str]]:
    """All whole records of a results file, in order, and a warning for each line that could not be read.

    Both formats come back in the record's shape: options under `config`, environment under `env`.
    Raises FileNotFoundError / ValueError for a missing or unreadable file.
    """
    records, warnings = [], []
    if is_jsonl(path):
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    warnings.append(f"{path}:{number}: skipped a line that is not whole JSON")
        return records, warnings
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
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
            records.append(record)
    return records, warnings
