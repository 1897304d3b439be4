"""A python3 for running the GPU scripts on the CPU: it logs each `python3 -m MODULE ARGS` of the given modules to
that module's file instead of running it, and runs everything else on the real interpreter."""

import shlex
import sys
from pathlib import Path


def logging_python3(bin_dir: Path, logs: dict[str, Path]) -> Path:
    """Write bin_dir/python3 (logs: module -> the file its commands go to); put bin_dir first on PATH to use it."""
    bin_dir.mkdir(exist_ok=True)
    lines = ["#!/usr/bin/env bash"]
    for module, log in logs.items():
        lines.append(f'if [ "$1" = -m ] && [ "$2" = {module} ]; then shift 2; echo "$*" >> {shlex.quote(str(log))}; '
                     "exit 0; fi")
    lines.append(f'exec {shlex.quote(sys.executable)} "$@"')
    shim = bin_dir / "python3"
    shim.write_text("\n".join(lines) + "\n")
    shim.chmod(0o755)
    return bin_dir
