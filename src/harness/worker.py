"""Child-process entry: read one RunSpec as JSON on stdin, measure it, write the record as JSON to argv[1].

The parent (sweep.py) starts one of these per configuration so that an out-of-memory error or a crash inside
CUDA ends this process, not the sweep, and each configuration starts from a fresh CUDA context.
"""

import json
import sys

from src.harness.runner import run_spec_with_environment
from src.spec import RunSpec


def main() -> None:
    spec = RunSpec.from_dict(json.load(sys.stdin))
    record = run_spec_with_environment(spec)
    with open(sys.argv[1], "w") as f:
        json.dump(record, f, default=str)


if __name__ == "__main__":
    main()
