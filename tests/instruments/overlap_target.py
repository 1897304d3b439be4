"""A rank program for the overlap test: one all-reduce started async under matmuls, then one waited for at once.

argv: OUT_DIR; each rank writes OUT_DIR/rank<r>.json, a torch.profiler Chrome trace of one step.
"""

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from src.harness.launch import init_distributed


@record
def main() -> None:
    rank, _, _ = init_distributed("gloo", timeout_s=60)
    x, grads = torch.randn(256, 256), torch.randn(1 << 20)  # 4 MB over gloo: milliseconds, like the matmuls
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.profiler.record_function("measured step 0"):
            work = dist.all_reduce(grads, async_op=True)  # hidden behind the matmuls below, at least in part
            for _ in range(20):
                x = x @ x
                x = x / x.norm()
            work.wait()
            dist.all_reduce(grads)  # nothing to hide it: exposed
    prof.export_chrome_trace(os.path.join(sys.argv[1], f"rank{rank}.json"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
