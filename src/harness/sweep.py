"""Run a list of configurations, each in a child process by default on CUDA, and hand back one record each.

A child that dies (segfault, abort, killed) becomes a record with status "crash: ..." and the last line it wrote
to stderr; the sweep goes on. Ctrl-C kills the running child and propagates, after every finished record was
already handed to `on_record` (which appends it to the results file); SIGTERM does the same and exits 143
(lifetime.sigterm_ends_children). Each child works in a temporary folder named after this process
(lifetime.temp_folder); a child whose parent dies removes it and ends (worker.py, launch.py), and a sweep removes
the folders that dead sweeps left behind.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys

from src.harness.lifetime import remove_orphaned_folders, sigterm_ends_children, temp_folder
from src.harness.progress import PROGRESS_FD_VARIABLE, wanted
from src.harness.record import Record, new_record, with_fields
from src.harness.runner import derive_figures, run_spec_with_environment
from src.spec import RunSpec

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@contextlib.contextmanager
def _progress_fd():
    """A copy of this process's stderr for the child's progress bar (its own stderr is a file), or None if off."""
    if not wanted():
        yield None
        return
    fd = os.dup(sys.stderr.fileno())
    try:
        yield fd
    finally:
        os.close(fd)


def run_in_child(spec: RunSpec) -> dict:
    with temp_folder() as tmp:
        result_path, stderr_path = os.path.join(tmp, "record.json"), os.path.join(tmp, "stderr.txt")
        with open(stderr_path, "w+") as stderr, _progress_fd() as progress:
            env = dict(os.environ, **({PROGRESS_FD_VARIABLE: str(progress)} if progress is not None else {}))
            child = subprocess.Popen([sys.executable, "-m", "src.harness.worker", result_path, str(os.getpid())],
                                     stdin=subprocess.PIPE, stderr=stderr, cwd=_REPO, text=True, env=env,
                                     pass_fds=() if progress is None else (progress,))
            try:
                child.communicate(json.dumps(spec.to_dict()))
            except BaseException:  # Ctrl-C, SIGTERM or anything else: never leave the child running
                child.kill()
                child.wait()
                raise
            stderr.seek(0)
            messages = stderr.read()
        if messages.strip():
            sys.stderr.write(messages)
        if child.returncode == 0 and os.path.exists(result_path):
            with open(result_path) as f:
                return json.load(f)
        last_line = next((line for line in reversed(messages.strip().splitlines()) if line.strip()), "")
        return crash_record(spec, f"{_describe_exit(child.returncode)}" + (f"; {last_line.strip()}" if last_line else ""))


def crash_record(spec: RunSpec, reason: str) -> Record:
    from src.harness.environment import collect_environment

    env = collect_environment(spec.device, query_gpu=False)  # the parent leaves the GPU to its children
    record = new_record(spec, status=f"crash: {reason}"[:400])
    return with_fields(record, {**derive_figures(spec, record, env["gpu_name"]), "env": env})


LAUNCH_TIMEOUT_S = 3600  # one configuration's whole process group, start to end


def run_in_torchrun(spec: RunSpec) -> dict:
    """A configuration with a parallel strategy: nproc_per_node ranks under torchrun (src/harness/dist_worker.py);
    a failed launch becomes a record whose status names the rank that failed first and its cause (a rank stopped
    for longer than the collective timeout is killed by the launcher and named as the cause)."""
    from src.harness.dist_worker import collective_timeout_s
    from src.harness.launch import run_torchrun

    with temp_folder() as tmp:
        spec_path, result_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "record.json")
        with open(spec_path, "w") as f:
            json.dump(spec.to_dict(), f)
        result = run_torchrun(spec.nproc_per_node, "src.harness.dist_worker", [spec_path, result_path],
                              LAUNCH_TIMEOUT_S, stall_timeout_s=collective_timeout_s(spec))
        if result.ok and os.path.exists(result_path):
            with open(result_path) as f:
                return json.load(f)
    if result.stderr_tail.strip():
        sys.stderr.write(result.stderr_tail)
    record = crash_record(spec, result.describe())
    if any(cause.startswith("OOM") for cause in result.failed_ranks.values()):
        # as a single process's OOM row (a result, not a failure), the ranks and causes in `error`
        record = {**record, "status": "OOM", "error": result.describe()[:400]}
    return record


def run_sweep(specs: list[RunSpec], on_record) -> None:
    """Under a user's own torchrun every rank runs each configuration in this process (the group is already
    there); otherwise a strategy runs through torchrun, and anything else as before."""
    from src.harness.launch import under_torchrun

    if any(spec.isolate == "process" or spec.parallel != "none" for spec in specs):
        remove_orphaned_folders()
    # SIGTERM: the running child or process group is ended and its folders removed. Not under a user's torchrun,
    # whose agent ends its ranks with SIGTERM: there the default action must kill a rank blocked in a collective.
    with contextlib.nullcontext() if under_torchrun() else sigterm_ends_children():
        for index, spec in enumerate(specs):
            if spec.parallel != "none" and not under_torchrun():
                record = run_in_torchrun(spec)
            elif spec.isolate == "process" and not under_torchrun():
                record = run_in_child(spec)
            else:
                record = run_spec_with_environment(spec)
                if under_torchrun() and record["status"] != "ok":  # the group cannot go on: let torchrun end it
                    raise RuntimeError(f"{spec.label}: {record['status']}")
            on_record(index, record)
