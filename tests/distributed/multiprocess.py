"""Run a test function on N real processes joined by a gloo process group, with a timeout on everything.

`run_on_ranks(fn, world_size, *args)` spawns the ranks, each calling fn(rank, world_size, *args) inside
`init_process_group("gloo", ...)` on a free port; a rank's exception fails the test with that rank's traceback
(the other ranks are terminated), and a hang fails it after `timeout_s` instead of stalling the suite.
"""

import datetime
import socket
import time

import torch.distributed as dist
import torch.multiprocessing as mp

COLLECTIVE_TIMEOUT_S = 60  # a rank waiting on a dead peer raises after this


def free_port() -> int:
    """A TCP port nobody listens on right now: bind to port 0 and let the OS choose."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, fn, world_size: int, port: int, args: tuple) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn, world_size: int, *args, timeout_s: float = 240) -> None:
    """fn must be a module-level function (the ranks are spawned, so it is imported by name)."""
    context = mp.start_processes(
        _rank_main, args=(fn, world_size, free_port(), args), nprocs=world_size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout_s
    # join() returns True when all ranks exited cleanly, raises (terminating the rest) when one failed.
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            for process in context.processes:
                process.join(5)
            raise TimeoutError(f"{fn.__name__} on {world_size} ranks did not finish within {timeout_s} s")
