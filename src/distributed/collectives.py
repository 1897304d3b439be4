"""Time one collective on the running process group, check its result, and derive bandwidth as nccl-tests does.

Sizes follow nccl-tests: `size` is the bytes of the whole tensor the operation is about - the all-reduce and
broadcast buffer, all-gather's output, reduce-scatter's input - so each rank sends or receives size / n per chunk.
algbw = size / time; busbw = algbw x the factor below, the fraction of the data that crosses each rank's link in a
ring, which makes one number comparable with the link's peak whatever n is:
    all_reduce 2(n-1)/n, all_gather (n-1)/n, reduce_scatter (n-1)/n, broadcast 1.
A time is the slowest rank's for that iteration (the collective is done when every rank has its result), and a row
reports the median over iterations with the 20th and 80th percentiles.

Inputs hold known values: element i of rank r is ((i + r) mod 8) + 1, small integers every dtype holds exactly, so
the expected result is known in closed form; integers must match exactly, floats within n x eps(dtype) of it (each
of the n-1 additions may round once when a low-precision sum leaves the exactly representable range).
"""

import timeit
from dataclasses import dataclass

import torch
import torch.distributed as dist

from src import nvtx
from src.distributed.common import world

OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int32": torch.int32, "int64": torch.int64,
}
KB = 1024
DEFAULT_MIN_BYTES, DEFAULT_MAX_BYTES, DEFAULT_FACTOR = KB, KB**3, 4  # 1 KB .. 1 GB: 11 sizes
PATTERN_PERIOD = 8
CHECK_CHUNK = 1 << 24  # elements compared at a time: the float64 expectation of a 1 GB tensor would need 4-8 GB
ROOT = 0


def bus_factor(op: str, world_size: int) -> float:
    n = world_size
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    if op == "broadcast":
        return 1.0
    raise ValueError(f"unknown collective {op!r}; choose from {', '.join(OPS)}")


def bandwidths(op: str, size_bytes: int, seconds: float, world_size: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s (1e9 bytes, nccl-tests' unit) for `size_bytes` moved in `seconds`."""
    algbw = size_bytes / seconds / 1e9
    return algbw, algbw * bus_factor(op, world_size)


def size_ladder(min_bytes: int = DEFAULT_MIN_BYTES, max_bytes: int = DEFAULT_MAX_BYTES,
                factor: int = DEFAULT_FACTOR) -> list[int]:
    if min_bytes < 1 or max_bytes < min_bytes or factor < 2:
        raise ValueError(f"need 1 <= min ({min_bytes}) <= max ({max_bytes}) and factor >= 2 ({factor})")
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= factor
    return sizes


def element_count(size_bytes: int, dtype: torch.dtype, world_size: int) -> int:
    """Elements of the whole tensor: as nccl-tests, rounded down to a multiple of n so every rank's chunk is equal."""
    count = size_bytes // dtype.itemsize
    return count - count % world_size


def pattern(rank: int, start: int, count: int, device) -> torch.Tensor:
    """Rank `rank`'s values at positions start .. start+count, as int64: ((i + rank) mod 8) + 1."""
    i = torch.arange(start, start + count, device=device, dtype=torch.int64)
    return (i + rank) % PATTERN_PERIOD + 1


def summed_pattern(world_size: int, start: int, count: int, device) -> torch.Tensor:
    total = torch.zeros(count, device=device, dtype=torch.int64)
    for rank in range(world_size):
        total += pattern(rank, start, count, device)
    return total


def tolerance(dtype: torch.dtype, world_size: int) -> float:
    """Relative error a correct result may have: 0 for integers, n x eps for floats (see the module docstring)."""
    return 0.0 if not dtype.is_floating_point else world_size * torch.finfo(dtype).eps


def _filled(rank: int, count: int, dtype: torch.dtype, device) -> torch.Tensor:
    """A tensor of rank `rank`'s pattern, built a chunk at a time (an int64 arange of 1 GB of bf16 would be 4 GB)."""
    data = torch.empty(count, dtype=dtype, device=device)
    for start in range(0, count, CHECK_CHUNK):
        part = data[start:start + CHECK_CHUNK]
        part.copy_(pattern(rank, start, part.numel(), device))
    return data


@dataclass
class Buffers:
    """The tensors of one operation on this rank; `input` is what the timed call reads, `output` what it writes."""
    input: torch.Tensor
    output: torch.Tensor


def make_buffers(op: str, count: int, dtype: torch.dtype, rank: int, world_size: int, device) -> Buffers:
    """Fresh inputs filled with the known pattern; `count` elements of the whole tensor (see element_count)."""
    chunk = count // world_size
    if op == "all_reduce":
        data = _filled(rank, count, dtype, device)
        return Buffers(data, data)  # in place
    if op == "broadcast":
        data = _filled(ROOT, count, dtype, device) if rank == ROOT else torch.zeros(count, dtype=dtype, device=device)
        return Buffers(data, data)
    if op == "all_gather":
        return Buffers(_filled(rank, chunk, dtype, device), torch.zeros(count, dtype=dtype, device=device))
    if op == "reduce_scatter":
        return Buffers(_filled(rank, count, dtype, device), torch.zeros(chunk, dtype=dtype, device=device))
    raise ValueError(f"unknown collective {op!r}")


def run_op(op: str, buffers: Buffers) -> None:
    if op == "all_reduce":
        dist.all_reduce(buffers.input)
    elif op == "broadcast":
        dist.broadcast(buffers.input, src=ROOT)
    elif op == "all_gather":
        dist.all_gather_into_tensor(buffers.output, buffers.input)
    elif op == "reduce_scatter":
        dist.reduce_scatter_tensor(buffers.output, buffers.input)
    else:
        raise ValueError(f"unknown collective {op!r}")


def _expected(op: str, rank: int, world_size: int, start: int, count: int, chunk: int, device) -> torch.Tensor:
    """The correct output of `op` on this rank at positions start .. start+count, as int64."""
    if op == "all_reduce":
        return summed_pattern(world_size, start, count, device)
    if op == "broadcast":
        return pattern(ROOT, start, count, device)
    if op == "all_gather":  # output[s * chunk + i] is rank s's element i
        i = torch.arange(start, start + count, device=device, dtype=torch.int64)
        return (i % chunk + i // chunk) % PATTERN_PERIOD + 1
    if op == "reduce_scatter":  # this rank's chunk of the sum
        return summed_pattern(world_size, rank * chunk + start, count, device)
    raise ValueError(f"unknown collective {op!r}")


def max_relative_error(op: str, output: torch.Tensor, rank: int, world_size: int, count: int) -> float:
    """Largest |output - expected| / expected over this rank's output, compared a chunk at a time."""
    chunk = count // world_size
    worst = 0.0
    for start in range(0, output.numel(), CHECK_CHUNK):
        part = output[start:start + CHECK_CHUNK]
        expected = _expected(op, rank, world_size, start, part.numel(), chunk, output.device).double()
        worst = max(worst, float(((part.double() - expected).abs() / expected).max()))  # expected >= 1
    return worst


@dataclass
class Measurement:
    """One operation at one size on the whole group; the same on every rank after measure() returns."""
    op: str
    size_bytes: int  # nccl-tests' size: the whole tensor (see the module docstring)
    count: int  # its elements
    times_s: list[float]  # per timed iteration, the slowest rank's
    max_relative_error: float  # the worst rank's, from the first (untimed) call
    tolerance: float

    @property
    def correct(self) -> bool:
        return self.max_relative_error <= self.tolerance


def _gather_max(values: list[float], device) -> list[float]:
    """Element-wise maximum across ranks (each rank's list has the same length)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def measure(op: str, size_bytes: int, dtype: torch.dtype, iters: int, warmup: int, device) -> Measurement:
    """Check `op` once on fresh known inputs, warm up, then time `iters` calls; call on every rank together.

    CUDA: an event pair around each call on the current stream, which waits for NCCL's stream, read once at the
    end so the timed loop never synchronises. CPU (gloo): a barrier so every rank starts together, then the wall
    clock around the call, which returns once this rank's part is done.
    Timed calls reuse the checked buffers (an all-reduce keeps summing into its result, growing it; nothing of
    the time depends on the values), so the check stays outside the timing and no second copy is held.
    """
    rank, world_size = world()
    count = element_count(size_bytes, dtype, world_size)
    if count == 0:
        raise ValueError(f"{size_bytes} bytes hold no {dtype} element for each of {world_size} ranks")
    buffers = make_buffers(op, count, dtype, rank, world_size, device)
    label = f"{op} {count * dtype.itemsize} B"
    with nvtx.range(f"check {label}"):
        run_op(op, buffers)
    error = max_relative_error(op, buffers.output, rank, world_size, count)
    for _ in range(warmup):
        run_op(op, buffers)
    on_cuda = torch.device(device).type == "cuda"
    times = []
    with nvtx.range(f"time {label}"):
        if on_cuda:
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
            for start, end in events:
                start.record()
                run_op(op, buffers)
                end.record()
            torch.cuda.synchronize()
            times = [start.elapsed_time(end) / 1e3 for start, end in events]
        else:
            for _ in range(iters):
                dist.barrier()
                begin = timeit.default_timer()
                run_op(op, buffers)
                times.append(timeit.default_timer() - begin)
    *times, error = _gather_max([*times, error], device)
    return Measurement(op, count * dtype.itemsize, count, times, error, tolerance(dtype, world_size))
