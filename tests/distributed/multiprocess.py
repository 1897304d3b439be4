"""Run a test function on N real processes joined by a gloo process group, with a timeout on everything.

`run_on_ranks(fn, world_size, *args)` calls fn(rank, world_size, *args) on every rank of a pool of spawned
processes that stays up for the whole session (starting Python + torch costs each rank several seconds on a
2-core runner; the pool pays that once per world size). A rank's exception fails the test with that rank's
traceback; a rank that hangs fails it after `timeout_s`; either way the pool is torn down (its process group may
hold mismatched collectives) and the next test starts a fresh one. Collectives time out after 60 s.
"""

import atexit
import datetime
import queue
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from src.harness.launch import free_port  # a port nobody listens on now: the OS picks one

COLLECTIVE_TIMEOUT_S = 60  # a rank waiting on a dead peer raises after this


def _serve(rank: int, world_size: int, port: int, tasks, results) -> None:
    torch.set_num_threads(1)  # N ranks on 2 cores: more threads than cores made a 2-step test 3x slower
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    while (task := tasks.get()) is not None:
        fn, args = task
        try:
            fn(rank, world_size, *args)
            results.put((rank, None))
        except BaseException:
            results.put((rank, traceback.format_exc()))
    dist.destroy_process_group()


class _RankPool:
    def __init__(self, world_size: int):
        context = mp.get_context("spawn")
        self.world_size = world_size
        self.tasks = [context.Queue() for _ in range(world_size)]
        self.results = context.Queue()
        port = free_port()
        self.processes = [
            context.Process(target=_serve, args=(rank, world_size, port, self.tasks[rank], self.results), daemon=True)
            for rank in range(world_size)
        ]
        for process in self.processes:
            process.start()

    def run(self, fn, args: tuple, timeout_s: float) -> None:
        for task_queue in self.tasks:
            task_queue.put((fn, args))
        errors = {}
        for _ in range(self.world_size):
            try:
                rank, error = self.results.get(timeout=timeout_s)
            except queue.Empty:
                raise TimeoutError(f"{fn.__name__} on {self.world_size} ranks: no answer within {timeout_s} s")
            if error is not None:
                errors[rank] = error
                timeout_s = COLLECTIVE_TIMEOUT_S + 30  # the others fail on their collective timeout, or finish
        if errors:
            first = next(iter(errors))  # the first to fail is the cause; the others mostly timed out waiting for it
            raise AssertionError(f"{fn.__name__} failed on rank(s) {list(errors)}; first rank {first}:\n{errors[first]}")

    def close(self) -> None:
        for task_queue, process in zip(self.tasks, self.processes):
            if process.is_alive():
                task_queue.put(None)
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)


_pools: dict[int, _RankPool] = {}


def run_on_ranks(fn, world_size: int, *args, timeout_s: float = 240) -> None:
    """fn must be a module-level function (the ranks import it by name)."""
    pool = _pools.get(world_size) or _pools.setdefault(world_size, _RankPool(world_size))
    try:
        pool.run(fn, args, timeout_s)
    except BaseException:
        _pools.pop(world_size).close()
        raise


@atexit.register
def _close_pools() -> None:
    for pool in _pools.values():
        pool.close()
