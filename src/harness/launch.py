"""Start a process group through PyTorch's own launcher (torchrun) and get back which rank failed and why.

The parent side: `run_torchrun(n, module, args, timeout_s)` runs `python -m torch.distributed.run ... -m module`
on this host, never hangs (a timeout ends the whole group) and never leaves a process behind: on Ctrl-C or SIGTERM
the parent ends the group before it exits, and if the parent dies without a word (SIGKILL) the launcher notices
within PARENT_POLL_S, ends the ranks and removes the parent's temporary folders (lifetime.py). A rank stopped
(SIGSTOP, Ctrl-Z, a debugger) for longer than `stall_timeout_s` cannot answer its peers' collectives: the launcher
kills it and names it as the cause, instead of the healthy rank that timed out waiting for it.
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
import time
import threading
import uuid
from datetime import timedelta

from src.harness.lifetime import remove_folders_of, sigterm_ends_children, temp_folder, watch_parent

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_ID_VARIABLE = "LMBENCH_LAUNCH_ID"  # every process of one launch carries it: how leftovers are found
TICK_S = 0.5  # how often run_torchrun's on_tick runs while the group works
TERMINATE_GRACE_S = 5.0  # SIGTERM first so ranks can leave their collectives; SIGKILL for whatever is left after this
ORPHAN_GRACE_S = 1.0  # the same once the parent is gone: nobody waits for the ranks' answer, so a shorter grace
STALL_POLL_S = 0.5  # how often the launcher reads its ranks' process states
STDERR_TAIL_LINES = 40
# Joining the group waits for every rank to start, and ranks start seconds apart on a busy host (their torch import:
# 15 s apart seen on 2 loaded cores), whatever their step: the join gets at least this, the collectives after it
# the caller's timeout.
JOIN_TIMEOUT_S = 300.0
PORT_ATTEMPTS = 3  # free_port() can race with another process binding the same port; a fresh one is tried then
_ENTRY = "src.harness.launch"  # this file's __main__, run in the launcher process
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A rank that failed because a peer did: it lost the connection, or timed out waiting for a peer that never came.
_PEER_LOST = re.compile(r"closed by peer|reset by peer|remote worker|NCCL communicator was aborted|timed out waiting"
                        r"|collective operation timeout", re.IGNORECASE)
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
    """Under torchrun: join the process group (within JOIN_TIMEOUT_S at least) with a timeout of `timeout_s` on
    every collective after that -> (rank, world_size, local_rank)."""
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
        dist.init_process_group(backend, timeout=timedelta(seconds=max(timeout_s, JOIN_TIMEOUT_S)), device_id=device_id)
        if timeout_s < JOIN_TIMEOUT_S:
            dist.barrier()  # every rank has joined: from here on a wait is on a peer's work, not on its start
            # torch's own setter for a group's timeout (private, in torch 2.11 and since 2.3); without it every
            # collective keeps the join's longer timeout and only StallWatch's bound on a stopped rank holds.
            set_timeout = getattr(dist.distributed_c10d, "_set_pg_timeout", None)
            if set_timeout is not None:
                set_timeout(timedelta(seconds=timeout_s))
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


def _terminate(find, grace_s: float) -> None:
    """SIGTERM to every pid `find()` returns; after `grace_s` SIGKILL to whatever it still returns."""
    _signal_all(find(), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and find():
        time.sleep(0.05)
    for _ in range(100):  # a rank may fork while being killed; a few rounds catch the late ones
        left = find()
        if not left:
            break
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.05)


def _end_launch(launcher: subprocess.Popen, launch_id: str) -> None:
    """SIGTERM to torchrun (its agent passes it on to the ranks) and to every process of the launch; after the
    grace period SIGKILL to whatever is left. Returns once the launcher is reaped and no process of it remains."""
    _terminate(lambda: processes_with_launch_id(launch_id) + ([launcher.pid] if launcher.poll() is None else []),
               TERMINATE_GRACE_S)
    launcher.wait()


def _children(pid: int) -> list[int]:
    found = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(task) as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return found


def _process_state(pid: int) -> str:
    """R, S, D, T (stopped by a signal), t (stopped by a debugger), Z ...; "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _rank_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"RANK="):
                    return int(item[5:])
    except (OSError, ValueError):
        pass
    return None


class StallWatch(threading.Thread):
    """In the launcher: a rank whose process stays stopped for `timeout_s` is killed (SIGKILL, which a stopped
    process cannot hold back) and its cause kept in `stalled` (rank -> one line).

    Its peers would time out waiting for it, but each in a collective of its own and after the same timeout, so the
    first error torchrun sees names a healthy rank; and torchrun's SIGTERM to the stopped rank waits in the kernel
    until its 30 s grace is over. The process state says which rank it is at once.
    """

    def __init__(self, timeout_s: float):
        super().__init__(name="stall-watch", daemon=True)
        self.timeout_s = timeout_s
        self.stalled: dict[int, str] = {}

    def run(self) -> None:
        stopped_since: dict[int, float] = {}
        while True:
            now = time.monotonic()
            for pid in _children(os.getpid()):
                state = _process_state(pid)
                if state not in ("T", "t"):
                    stopped_since.pop(pid, None)
                    continue
                since = stopped_since.setdefault(pid, now)
                rank = _rank_of(pid)
                if now - since >= self.timeout_s and rank is not None and rank not in self.stalled:
                    self.stalled[rank] = (f"stopped answering: its process was stopped (state {state}: SIGSTOP, "
                                          f"Ctrl-Z or a debugger) for {now - since:.1f} s, past the collective "
                                          f"timeout of {self.timeout_s:g} s; killed")
                    _signal_all([pid], signal.SIGKILL)
            time.sleep(STALL_POLL_S)


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
    """One line for a rank: why the launcher killed it, else the exception from its error file, else how it ended
    and its last error line."""
    if failure.get("stalled"):
        return failure["stalled"]
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
    # The cause first: a rank the launcher found stopped, then the first to fail; a rank that lost its peer or
    # timed out waiting for it fails too, later (or in the same second), and says so.
    order = sorted(causes, key=lambda r: (not failures[str(r)].get("stalled"), _PEER_LOST.search(causes[r]) is not None,
                                          failures[str(r)].get("timestamp", 0)))
    return {rank: causes[rank] for rank in order}


# ---------------------------------------------------------------- the parent side


def run_torchrun(nproc_per_node: int, module: str, module_args: list[str], timeout_s: float,
                 env: dict[str, str] | None = None, stall_timeout_s: float | None = None,
                 on_tick=None) -> LaunchResult:
    """Run `module` on `nproc_per_node` ranks of this host under torchrun and wait at most `timeout_s` seconds;
    a rank stopped for `stall_timeout_s` (None: never) is killed and named as the cause (StallWatch). `on_tick()`
    runs every TICK_S while the group works (a caller's progress lines).

    The children inherit this process's environment (on the GPU machines NCCL_NVLS_ENABLE=0 and friends must reach
    them) updated by `env`. Their stdout is ours; their stderr is captured, rank-prefixed, and its tail returned.
    """
    with sigterm_ends_children():  # SIGTERM to this process: the group is ended and its folder removed, then exit
        for attempt in range(PORT_ATTEMPTS):
            result = _launch_once(nproc_per_node, module, module_args, timeout_s, env, stall_timeout_s, on_tick)
            port_taken = "address already in use" in result.stderr_tail.lower() and not result.failed_ranks
            if not port_taken or attempt == PORT_ATTEMPTS - 1:
                return result
    raise AssertionError("unreachable")


def _launch_once(nproc_per_node, module, module_args, timeout_s, env, stall_timeout_s, on_tick) -> LaunchResult:
    launch_id = uuid.uuid4().hex
    child_env = {**os.environ, **(env or {}), LAUNCH_ID_VARIABLE: launch_id}
    with temp_folder("launch") as tmp:
        failures_path, log_dir = os.path.join(tmp, "failures.json"), os.path.join(tmp, "logs")
        torchrun = torchrun_argv(nproc_per_node, module, module_args, free_port())
        # torchrun's own options, run through this module's __main__ (see the docstring): per-rank logs, stderr teed
        argv = [sys.executable, "-m", _ENTRY, failures_path, str(os.getpid()), str(stall_timeout_s or 0),
                "--log_dir", log_dir, "--tee", "2", *torchrun[3:]]
        stderr_path = os.path.join(tmp, "stderr.txt")
        timed_out = False
        with open(stderr_path, "w") as stderr:
            launcher = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=stderr, cwd=_REPO, env=child_env,
                                        start_new_session=True)  # Ctrl-C in the terminal reaches us, not the ranks
            try:
                timed_out = not _wait(launcher, timeout_s, on_tick)
            finally:  # a normal exit, the timeout, Ctrl-C, SIGTERM or any other exception: nothing of it survives
                _end_launch(launcher, launch_id)
        return LaunchResult(
            returncode=launcher.returncode,
            timed_out=timed_out,
            failed_ranks=_failed_ranks(failures_path, log_dir),
            stderr_tail=_tail(stderr_path, STDERR_TAIL_LINES),
        )


def _wait(launcher: subprocess.Popen, timeout_s: float, on_tick) -> bool:
    """Wait for the launcher to exit, at most `timeout_s`, calling `on_tick()` meanwhile; whether it exited."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            launcher.wait(timeout=min(left, TICK_S) if on_tick else left)
            return True
        except subprocess.TimeoutExpired:
            if on_tick:
                on_tick()
    return launcher.poll() is not None


def _end_orphaned_launch(parent: int) -> None:
    """The launcher, once its parent is gone: end every process of the launch and remove the parent's folders."""
    launch_id = os.environ.get(LAUNCH_ID_VARIABLE, "")
    _terminate(lambda: processes_with_launch_id(launch_id) if launch_id else _children(os.getpid()), ORPHAN_GRACE_S)
    remove_folders_of(parent)


def _torchrun_main(argv: list[str]) -> int:
    """torchrun's own main, with the parent and the ranks watched; its ChildFailedError's per-rank failures (and
    the ranks StallWatch killed) go to argv[0] as JSON. argv: FAILURES_PATH PARENT_PID STALL_TIMEOUT_S TORCHRUN..."""
    failures_path, parent, stall_timeout_s, torchrun_args = argv[0], int(argv[1]), float(argv[2]), argv[3:]
    watch_parent(parent, lambda: _end_orphaned_launch(parent))  # before importing torch, which takes seconds
    stalls = StallWatch(stall_timeout_s)
    if stall_timeout_s > 0:
        stalls.start()

    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    failures = {}
    try:
        run.main(torchrun_args)
    except ChildFailedError as error:
        failures = {
            str(rank): {"local_rank": f.local_rank, "pid": f.pid, "exitcode": f.exitcode, "message": f.message,
                          "timestamp": f.timestamp}
            for rank, f in error.failures.items()
        }
    for rank, cause in dict(stalls.stalled).items():
        failures.setdefault(str(rank), {"local_rank": rank, "exitcode": -signal.SIGKILL, "timestamp": 0})["stalled"] = cause
    if not failures:
        return 0
    with open(failures_path, "w") as f:
        json.dump(failures, f, default=str)
    return 1


if __name__ == "__main__":
    sys.exit(_torchrun_main(sys.argv[1:]))
