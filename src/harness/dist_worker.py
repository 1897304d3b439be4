"""One rank of one configuration under torchrun: join the process group, measure, and rank 0 writes the record.

    python -m torch.distributed.run --nproc_per_node N -m src.harness.dist_worker SPEC.json RECORD.json

The sweep (sweep.run_in_torchrun) starts this through src.harness.launch. A rank whose configuration did not end
"ok" (an exception, an OOM, a peer that vanished) exits with an error that torchrun records for that rank, so the
parent's row names the rank that failed first and why; the others fail on the broken group or are ended by
torchrun, and the collective timeout bounds any wait.
"""

import json
import sys

from torch.distributed.elastic.multiprocessing.errors import record as record_errors

from src.harness.launch import init_distributed
from src.spec import RunSpec

COLLECTIVE_TIMEOUT_S = 300  # longer than any honest wait (a slow first step, compilation), short enough to end a hang


class RankFailed(RuntimeError):
    pass


@record_errors
def main(spec_path: str, record_path: str) -> None:
    import torch.distributed as dist

    from src.harness.runner import run_spec_with_environment

    with open(spec_path) as f:
        spec = RunSpec.from_dict(json.load(f))
    rank, _, local_rank = init_distributed(spec.distributed_backend, COLLECTIVE_TIMEOUT_S)
    if spec.device == "cuda":  # gloo on CUDA tensors too: one GPU per rank
        import torch

        torch.cuda.set_device(local_rank)
    record = run_spec_with_environment(spec)
    if record["status"] != "ok":
        raise RankFailed(f"{record['status']}" + (f" ({record['error']})" if record.get("error") else ""))
    if rank == 0:
        with open(record_path, "w") as f:
            json.dump(record, f, default=str)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
