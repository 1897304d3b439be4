"""A tiny rank program for the launcher's tests: all-reduce over gloo, write the sum, or fail as argv asks.

argv: OUT_DIR [raise RANK | kill RANK]; the variables named in ECHO_VARIABLES are written to OUT_DIR/env<rank>.
"""

import os
import signal
import sys

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from src.harness.launch import init_distributed


@record
def main() -> None:
    out_dir, *fault = sys.argv[1:]
    rank, world_size, _ = init_distributed("gloo", timeout_s=60)
    with open(os.path.join(out_dir, f"pid{rank}"), "w") as f:
        f.write(str(os.getpid()))
    with open(os.path.join(out_dir, f"env{rank}"), "w") as f:  # what the parent's environment handed down
        f.write(" ".join(f"{name}={os.environ.get(name, '')}" for name in os.environ.get("ECHO_VARIABLES", "").split()))
    if fault and fault[0] == "raise" and rank == int(fault[1]):
        raise ValueError(f"rank {rank} fails on purpose")
    dist.barrier()  # every rank has joined: a kill below happens inside a running group
    if fault and fault[0] == "kill" and rank == int(fault[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)  # the killed rank never joins: the others wait here until torchrun tears them down
    with open(os.path.join(out_dir, f"sum{rank}"), "w") as f:
        f.write(str(total.item()))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
