"""Start a process group through PyTorch's own launcher (torchrun) and get back which rank failed and why.

The parent side: `run_torchrun(n, module, args, timeout_s)` runs `python -m torch.distributed.run ... -m module`
on this host, never hangs (a timeout ends the whole group) and never leaves a process behind (also on Ctrl-C).
The rank side: `init_distributed(backend, timeout_s)` for code running under torchrun, and `under_torchrun()`.

Per-rank causes come from torchrun itself: its agent raises ChildFailedError with one ProcessFailure per failed
rank (exit code, signal, and the exception a rank wrote to its TORCHELASTIC_ERROR_FILE when its entry point is
decorated with torch.distributed.elastic.multiprocessing.errors.record). To read that structured answer instead of
parsing torchrun's printed summary, the parent runs torchrun's own `main` through this module's `__main__`, which
only catches that exception and writes its failures as JSON. Ranks without an error file are described from the
last error line of their own stderr log (torchrun's --log_dir and --tee keep one per rank).
"""

import dataclasses
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_ID_VARIABLE = "LMBENCH_LAUNCH_ID"  # every process of one launch carries it: how leftovers are found
TERMINATE_GRACE_S = 5.0  # SIGTERM first so ranks can leave their collectives; SIGKILL for whatever is left after this
STDERR_TAIL_LINES = 40
PORT_ATTEMPTS = 3  # free_port() can race with another process binding the same port; a fresh one is tried then
_ENTRY = "src.harness.launch"  # this file's __main__, run in the launcher process
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PEER_LOST = re.compile(r"closed by peer|reset by peer|remote worker|NCCL communicator was aborted", re.IGNORECASE)
_ERROR_LINE = re.compile(r"^(?:\[\w+\]:)?\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$")


@dataclasses.dataclass
class LaunchResult:
    returncode: int
    timed_out: bool
    failed_ranks: dict[int, str]  # global rank -> cause ("ValueError: ...", "OOM: ...", "killed by SIGKILL"), first failure first
    stderr_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.failed_ranks

    def describe(self) -> str:
        """One line for a record's status: the failing ranks and their causes, or how the launch ended."""
        if self.ok:
            return "ok"
        causes = [f"rank {rank}: {cause}" for rank, cause in self.failed_ranks.items()]
        if self.timed_out:
            causes.insert(0, "timed out")
        return "; ".join(causes) or f"launcher exit status {self.returncode}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def under_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def torchrun_argv(nproc_per_node: int, module: str, module_args: list[str], port: int) -> list[str]:
    """The torchrun command line for one node.

    Static rendezvous on 127.0.0.1:PORT rather than --standalone: --standalone asks for "localhost:0", which some
    hosts resolve to ::1 while the store listens on IPv4, and its port is chosen inside torchrun where the parent
    cannot see it; an explicit address and a port the parent picked (fresh per launch, so two sweeps on one host
    never collide) show up in the command line and in any error about them.
    """
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", str(nproc_per_node),
        "--master_addr", "127.0.0.1", "--master_port", str(port),
        "-m", module, *module_args,
    ]


def init_distributed(backend: str, timeout_s: float) -> tuple[int, int, int]:
    """Under torchrun: join the process group with a timeout on every collective -> (rank, world_size, local_rank)."""
    import torch
    import torch.distributed as dist

    if not under_torchrun():
        raise RuntimeError(f"init_distributed needs torchrun's environment ({', '.join(TORCHRUN_VARIABLES)})")
    rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    device_id = None
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device_id = torch.device("cuda", local_rank)  # binds the communicator to this GPU at once
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), device_id=device_id)
    return rank, world_size, local_rank


# ---------------------------------------------------------------- process bookkeeping (Linux /proc, no psutil)


def processes_with_launch_id(launch_id: str) -> list[int]:
    """Pids whose environment carries this launch's id: torchrun, its agent's ranks (each in a session of its own,
    so a process-group kill from here would miss them) and anything they started, orphaned or not."""
    needle = f"{LAUNCH_ID_VARIABLE}={launch_id}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone already, or not ours
            continue
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _end_launch(launcher: subprocess.Popen, launch_id: str) -> None:
    """SIGTERM to torchrun (its agent passes it on to the ranks) and to every process of the launch; after the
    grace period SIGKILL to whatever is left. Returns once the launcher is reaped and no process of it remains."""
    if launcher.poll() is None:
        _signal_all([launcher.pid], signal.SIGTERM)
    _signal_all(processes_with_launch_id(launch_id), signal.SIGTERM)
    deadline = time.monotonic() + TERMINATE_GRACE_S
    while time.monotonic() < deadline and (launcher.poll() is None or processes_with_launch_id(launch_id)):
        time.sleep(0.05)
    for _ in range(100):  # a rank may fork while being killed; a few rounds catch the late ones
        left = processes_with_launch_id(launch_id)
        if launcher.poll() is None:
            left.append(launcher.pid)
        if not left:
            break
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.05)
    launcher.wait()


# ---------------------------------------------------------------- reading what went wrong


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _error_line(text: str) -> str:
    """The last line that names an exception ("ValueError: ..."), else the last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match:
            return match.group(1)
    return lines[-1] if lines else ""


def _classify(text: str) -> str:
    if "OutOfMemoryError" in text or "CUDA out of memory" in text:
        return f"OOM: {text}"
    return text


def _cause(failure: dict, rank_stderr: str) -> str:
    """One line for a rank: the exception from its error file, else how it ended and its last error line."""
    message = failure.get("message") or ""
    if isinstance(message, dict):  # the error file of @record: {"message": "Type: text", "extraInfo": {...}}
        return _classify(_error_line(str(message.get("message", ""))))[:300]
    exitcode = failure.get("exitcode", 1)
    if exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit status {exitcode}"
    line = _error_line(rank_stderr)
    return _classify(f"{how}; {line}" if line else how)[:300]


def _rank_stderr(log_dir: str, local_rank: int) -> str:
    paths = sorted(glob.glob(os.path.join(log_dir, "*", "attempt_*", str(local_rank), "stderr.log")))
    return _tail(paths[-1], STDERR_TAIL_LINES) if paths else ""


def _failed_ranks(failures_path: str, log_dir: str) -> dict[int, str]:
    try:
        with open(failures_path) as f:
            failures = json.load(f)
    except (OSError, ValueError):
        return {}
    causes = {
        int(rank): _cause(failure, _rank_stderr(log_dir, failure.get("local_rank", int(rank))))
        for rank, failure in failures.items()
    }
    # The first to fail first: a rank that lost its peer fails too, but later (or in the same second) and saying so.
    order = sorted(causes, key=lambda r: (failures[str(r)].get("timestamp", 0), _PEER_LOST.search(causes[r]) is not None))
    return {rank: causes[rank] for rank in order}


# ---------------------------------------------------------------- the parent side


def run_torchrun(nproc_per_node: int, module: str, module_args: list[str], timeout_s: float,
                 env: dict[str, str] | None = None) -> LaunchResult:
    """Run `module` on `nproc_per_node` ranks of this host under torchrun and wait at most `timeout_s` seconds.

    The children inherit this process's environment (on the GPU machines NCCL_NVLS_ENABLE=0 and friends must reach
    them) updated by `env`. Their stdout is ours; their stderr is captured, rank-prefixed, and its tail returned.
    """
    for attempt in range(PORT_ATTEMPTS):
        result = _launch_once(nproc_per_node, module, module_args, timeout_s, env)
        port_taken = "address already in use" in result.stderr_tail.lower() and not result.failed_ranks
        if not port_taken or attempt == PORT_ATTEMPTS - 1:
            return result
    raise AssertionError("unreachable")


def _launch_once(nproc_per_node, module, module_args, timeout_s, env) -> LaunchResult:
    launch_id = uuid.uuid4().hex
    child_env = {**os.environ, **(env or {}), LAUNCH_ID_VARIABLE: launch_id}
    with tempfile.TemporaryDirectory(prefix="lmbench-launch-") as tmp:
        failures_path, log_dir = os.path.join(tmp, "failures.json"), os.path.join(tmp, "logs")
        torchrun = torchrun_argv(nproc_per_node, module, module_args, free_port())
        # torchrun's own options, run through this module's __main__ (see the docstring): per-rank logs, stderr teed
        argv = [sys.executable, "-m", _ENTRY, failures_path, "--log_dir", log_dir, "--tee", "2", *torchrun[3:]]
        stderr_path = os.path.join(tmp, "stderr.txt")
        timed_out = False
        with open(stderr_path, "w") as stderr:
            launcher = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=stderr, cwd=_REPO, env=child_env,
                                        start_new_session=True)  # Ctrl-C in the terminal reaches us, not the ranks
            try:
                launcher.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # a normal exit, the timeout, Ctrl-C or any other exception: nothing of the launch survives it
                _end_launch(launcher, launch_id)
        return LaunchResult(
            returncode=launcher.returncode,
            timed_out=timed_out,
            failed_ranks=_failed_ranks(failures_path, log_dir),
            stderr_tail=_tail(stderr_path, STDERR_TAIL_LINES),
        )


def _torchrun_main(argv: list[str]) -> int:
    """torchrun's own main; its ChildFailedError's per-rank failures go to argv[0] as JSON."""
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    failures_path, torchrun_args = argv[0], argv[1:]
    try:
        run.main(torchrun_args)
    except ChildFailedError as error:
        failures = {
            str(rank): {"local_rank": f.local_rank, "pid": f.pid, "exitcode": f.exitcode, "message": f.message,
                          "timestamp": f.timestamp}
            for rank, f in error.failures.items()
        }
        with open(failures_path, "w") as f:
            json.dump(failures, f, default=str)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_torchrun_main(sys.argv[1:]))
