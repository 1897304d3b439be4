"""One rank of one configuration under torchrun: join the process group, measure, and rank 0 writes the record.

    python -m torch.distributed.run --nproc_per_node N -m src.harness.dist_worker SPEC.json RECORD.json

The sweep (sweep.run_in_torchrun) starts this through src.harness.launch. A rank whose configuration did not end
"ok" (an exception, an OOM, a peer that vanished) exits with an error that torchrun records for that rank, so the
parent's row names the rank that failed first and why; the others fail on the broken group or are ended by
torchrun, and the collective timeout (`collective_timeout_s`) bounds any wait. A rank whose launcher is gone ends.
"""

import json
import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record as record_errors

from src.harness.launch import init_distributed
from src.harness.lifetime import watch_parent
from src.spec import LOW_PRECISIONS, RunSpec

# The collective timeout when --collective_timeout_s is not given: the longest a healthy rank may wait for a peer,
# which is the skew between ranks, at most a few steps. A step is estimated from its FLOPs and gradient bytes at
# rates well below any real device (this loaded 2-core CI host ran tiny at 1.9e9 FLOP/s, small at 8.8e9; the
# slowest GPU in hardware.py peaks at 15.7e12 fp32), so the estimate errs long; tiny on CPU at context 128 gets 55 s,
# not gloo's 300 s, and 2.7B on a GPU 54 s.
TIMEOUT_FLOOR_S = 30.0  # a busy host, the first step's allocations
STEPS_OF_SLACK = 10
SLOW_FLOP_S = {"cpu": 1e9, "cuda": 1e13}
SLOW_LINK_BYTES_S = {"gloo": 2.5e8, "nccl": 1e10}
COMPILE_ALLOWANCE_S = 600.0  # torch.compile: one rank may compile minutes longer (a cold cache) before its collective
EXPORT_ALLOWANCE_S = 120.0  # --trace / --memory_snapshot: a rank writes its files between steps while its peers wait


def collective_timeout_s(spec: RunSpec) -> float:
    """The user's --collective_timeout_s, else the estimate above: how long a rank waits in a collective before the
    group fails, and how long a rank may stay stopped before the launcher kills it and names it."""
    if spec.collective_timeout_s:
        return spec.collective_timeout_s
    from src.harness.ranks import communication_options
    from src.predict.cost import communication_per_step

    model = spec.model_spec()
    flops = model.step_flops(spec.batch_size, spec.context_length, spec.mode)
    nbytes = 0 if spec.mode == "forward" or spec.parallel == "none" else sum(communication_per_step(
        model, spec.parallel, spec.nproc_per_node, 2 if spec.precision in LOW_PRECISIONS else 4,
        **communication_options(spec)).values())
    step_s = flops / SLOW_FLOP_S[spec.device] + nbytes / SLOW_LINK_BYTES_S[spec.distributed_backend]
    timeout = TIMEOUT_FLOOR_S + STEPS_OF_SLACK * step_s
    timeout += COMPILE_ALLOWANCE_S if spec.compiled else 0.0
    timeout += EXPORT_ALLOWANCE_S if spec.trace or spec.memory_snapshot else 0.0
    return round(timeout)


class RankFailed(RuntimeError):
    pass


@record_errors
def main(spec_path: str, record_path: str) -> None:
    import torch.distributed as dist

    from src.harness.runner import run_spec_with_environment

    watch_parent(os.getppid())  # torchrun's agent (our launcher) gone: nobody will read this rank's result
    with open(spec_path) as f:
        spec = RunSpec.from_dict(json.load(f))
    rank, _, local_rank = init_distributed(spec.distributed_backend, collective_timeout_s(spec))
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
