"""Child-process entry: read one RunSpec as JSON on stdin, measure it, write the record as JSON to argv[1].

The parent (sweep.py) starts one of these per configuration so that an out-of-memory error or a crash inside
CUDA ends this process, not the sweep, and each configuration starts from a fresh CUDA context. argv[2] is the
parent's pid: if the parent dies (even by SIGKILL, which it cannot clean up after), a watchdog thread here removes
the parent's temporary folder (the one holding argv[1]) and ends this process, instead of measuring on as an orphan.
"""

import json
import os
import shutil
import sys
import threading
import time

PARENT_POLL_S = 0.5  # how often the watchdog looks for the parent; ending within a second of its death is enough
EXIT_ORPHANED = 3


def watch_parent(parent: int, folder: str) -> None:
    """Start a daemon thread that removes `folder` and exits this process once `parent` is no longer its parent.

    A thread, not a signal: torch releases the GIL inside its kernels, so the thread runs even while the main
    thread is deep in a long step, where a Python signal handler would wait for the step to end.
    """
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main() -> None:
    result_path, parent = sys.argv[1], int(sys.argv[2])
    watch_parent(parent, os.path.dirname(result_path))  # before importing torch, which takes seconds

    from src.harness.runner import run_spec_with_environment
    from src.spec import RunSpec

    spec = RunSpec.from_dict(json.load(sys.stdin))
    record = run_spec_with_environment(spec)
    with open(result_path, "w") as f:
        json.dump(record, f, default=str)


if __name__ == "__main__":
    main()
