"""A child process lives no longer than the sweep that started it: SIGTERM to the sweep ends its children, each
child watches for its parent's death, and the temporary folders of sweeps that are gone are removed.

Every temporary folder of the tool is named after the process that made it, lmbench-[KIND-]<pid>-<random> (KIND:
"launch" for torchrun's logs, "collectives" for that command's rows, none for a configuration's child), so whoever
finds one whose process no longer exists knows it is garbage: a child whose parent died removes its parent's folders,
and a later sweep removes whatever a SIGKILL left before any child could.
"""

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
import time

TEMP_PREFIX = "lmbench-"
_FOLDER = re.compile(rf"{TEMP_PREFIX}(?:[a-z]+-)?(\d+)-\w+")
PARENT_POLL_S = 0.5  # how often a child looks for its parent; ending within a second of its death is enough
EXIT_ORPHANED = 3
EXIT_TERMINATED = 128 + signal.SIGTERM  # the shell's status for "ended by SIGTERM": 143


def temp_folder(kind: str = "") -> tempfile.TemporaryDirectory:
    """A temporary folder named after this process (see the docstring), removed when the `with` block ends."""
    return tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{kind + '-' if kind else ''}{os.getpid()}-")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove_folders(matches, folder: str | None) -> list[str]:
    folder = folder or tempfile.gettempdir()
    removed = []
    for name in os.listdir(folder):
        match = _FOLDER.fullmatch(name)
        path = os.path.join(folder, name)
        if match and os.path.isdir(path) and matches(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_orphaned_folders(folder: str | None = None) -> list[str]:
    """Remove the tool's temporary folders (every kind) whose process no longer exists; return their paths."""
    return _remove_folders(lambda pid: not alive(pid), folder)


def remove_folders_of(pid: int, folder: str | None = None) -> list[str]:
    """Remove the temporary folders (every kind) that process `pid` made; return their paths."""
    return _remove_folders(lambda owner: owner == pid, folder)


def watch_parent(parent: int, on_orphaned=None) -> None:
    """Start a daemon thread that, once `parent` is no longer this process's parent, calls `on_orphaned()` (which
    ends what this process started and removes folders) and exits this process with EXIT_ORPHANED.

    A thread, not a signal: torch releases the GIL inside its kernels and collectives, so the thread runs even while
    the main thread is deep in a long step or a blocked all-reduce, where a Python signal handler would wait.
    """
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        try:
            if on_orphaned is not None:
                on_orphaned()
        finally:
            os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


class Terminated(SystemExit):
    """SIGTERM, as an exception: `finally` blocks and `with` exits run (children ended, folders removed) and the
    process then exits with status 143, as the signal's default action would have, only without leaving orphans."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated(EXIT_TERMINATED)


@contextlib.contextmanager
def sigterm_ends_children():
    """Inside the block SIGTERM raises Terminated (in the main thread; elsewhere, and when an outer block already
    did it, the block changes nothing). The previous handler is back after the block."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is _raise_terminated:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
