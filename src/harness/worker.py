"""Child-process entry: read one RunSpec as JSON on stdin, measure it, write the record as JSON to argv[1].

The parent (sweep.py) starts one of these per configuration so that an out-of-memory error or a crash inside
CUDA ends this process, not the sweep, and each configuration starts from a fresh CUDA context. argv[2] is the
parent's pid: if the parent dies (even by SIGKILL, which it cannot clean up after), a watchdog thread here
(lifetime.watch_parent) removes the parent's temporary folder (the one holding argv[1]) and ends this process,
instead of measuring on as an orphan.
"""

import json
import os
import shutil
import sys

from src.harness.lifetime import watch_parent


def main() -> None:
    result_path, parent = sys.argv[1], int(sys.argv[2])
    folder = os.path.dirname(result_path)
    watch_parent(parent, lambda: shutil.rmtree(folder, ignore_errors=True))  # before importing torch (seconds)

    from src.harness.runner import run_spec_with_environment
    from src.spec import RunSpec

    spec = RunSpec.from_dict(json.load(sys.stdin))
    record = run_spec_with_environment(spec)
    with open(result_path, "w") as f:
        json.dump(record, f, default=str)


if __name__ == "__main__":
    main()
