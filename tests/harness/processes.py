"""What the fault tests ask of /proc: which processes carry a test's unique path, are they running, and an end to
any that a failing test would otherwise leave behind."""

import os
import signal
import time


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended; only its parent's wait is missing
    except (OSError, IndexError):
        return False


def processes_naming(text: str) -> list[int]:
    """Running pids whose command line mentions `text` (a test's unique directory: torchrun's launcher carries its
    temporary folder, the ranks their spec or output path)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return [pid for pid in found if running(pid)]


def rank_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            variables = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        return int(variables[b"RANK"]) if b"RANK" in variables else None
    except (OSError, ValueError):
        return None


def wait_for(condition, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll `condition()` until it is true or `timeout_s` is over; its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return bool(condition())


def kill_naming(text: str) -> None:
    """SIGKILL whatever still carries `text`: a failed test must not leave ranks running for the next one."""
    for pid in processes_naming(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
