"""Where a number was measured: GPU, driver, CUDA, torch, project commit, host, its load and time, in every row.

`cuda_version` is the CUDA runtime a CUDA run used (torch's build, the one its kernels were compiled for); a CPU run
leaves it empty, since it used none, and records the build in `torch_cuda_build` (rows written before 2026-12-02 say
the build in `cuda_version` on CPU too; the reports ignore it there).
"""

import datetime
import os
import platform
import socket
import subprocess
import time

import torch

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=_REPO)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    """The project's commit, with '+dirty' when the working tree has uncommitted changes to tracked files.

    A copy of the tree whose .git is missing or stale (a cluster job's staging directory; the lent GPU machine's
    copy answered with an hours-old HEAD) names its commit in LMBENCH_COMMIT, which then wins.
    """
    if os.environ.get("LMBENCH_COMMIT"):
        return os.environ["LMBENCH_COMMIT"]
    commit = _run(["git", "rev-parse", "--short=12", "HEAD"])
    if not commit:
        return ""
    if commit and _run(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += "+dirty"
    return commit


def nvidia_smi(field: str) -> str:
    """One --query-gpu field of the first visible GPU, asked of nvidia-smi: no CUDA context ("" if unavailable)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    out = _run(["nvidia-smi", f"--id={visible or 0}", f"--query-gpu={field}", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else ""


def gpu_supports_bf16() -> bool | None:
    """bfloat16 needs compute capability 8.0 (Ampere) or later; None when nvidia-smi cannot say."""
    try:
        return float(nvidia_smi("compute_cap")) >= 8.0
    except ValueError:
        return None


def gpu_supports_fp8() -> bool | None:
    """fp8 tensor cores need compute capability 8.9 (Ada) or later (Hopper 9.0, Blackwell 10.0); None when
    nvidia-smi cannot say."""
    try:
        return float(nvidia_smi("compute_cap")) >= 8.9
    except ValueError:
        return None


def visible_gpu_count() -> int | None:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES respected), asked of nvidia-smi: no CUDA context. None
    when nvidia-smi cannot say."""
    out = _run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"])
    if not out:
        return None
    present = len(out.splitlines())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    return min(present, len([v for v in visible.split(",") if v.strip()]))


# How long host_load watches the other processes. /proc counts CPU time in ticks of 1/100 s, so 0.1 s resolves a
# tenth of a core per process and costs 0.1 s per row (a tiny CPU row takes ~5 s).
LOAD_SAMPLE_S = 0.1
BUSIEST_SHOWN = 3


def _cpu_ticks_per_process() -> dict[int, tuple[str, int, int]]:
    """pid -> (name, parent pid, user + system CPU ticks so far) of every process /proc lets us read."""
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        ticks[int(entry)] = (name, int(rest[1]), int(rest[11]) + int(rest[12]))  # proc(5) fields 4, 14, 15
    return ticks


def host_load(sample_s: float = LOAD_SAMPLE_S) -> dict:
    """How busy the host is besides this process: the load averages, the CPU count, and, where /proc exists, the
    cores the other processes used over `sample_s` and the busiest of them ("pid name share-of-one-core").

    Collected when a row's measurement has ended, so the 1-minute load average still counts the run itself (a CPU
    run adds about its thread count); `other_cpu_cores` does not (this process sleeps while it samples)."""
    load = {"cpu_count": os.cpu_count()}
    try:
        load["load_average_1m"], load["load_average_5m"], _ = (round(x, 2) for x in os.getloadavg())
    except OSError:  # not every platform has one
        pass
    if not os.path.isdir("/proc"):
        return load
    before, start = _cpu_ticks_per_process(), time.monotonic()
    time.sleep(sample_s)
    after, elapsed = _cpu_ticks_per_process(), time.monotonic() - start
    hz = os.sysconf("SC_CLK_TCK")
    # The run's own processes are not other work: this one, the sweep waiting on it, and its siblings (the other
    # ranks under torchrun).
    ours = {os.getpid(), os.getppid()}
    used = sorted(((ticks - before[pid][2]) / hz / elapsed, pid, name) for pid, (name, parent, ticks) in after.items()
                  if pid in before and pid not in ours and parent != os.getppid() and ticks > before[pid][2])
    load["other_cpu_cores"] = round(sum(share for share, _, _ in used), 2)
    load["busiest_processes"] = "; ".join(f"{pid} {name} {share:.0%}" for share, pid, name in used[::-1][:BUSIEST_SHOWN])
    return load


def cores_needed(device: str) -> int:
    """The cores a run keeps busy: torch's intra-op threads on CPU, on CUDA the one thread that launches kernels;
    times the ranks on this host under torchrun (LOCAL_WORLD_SIZE)."""
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return (torch.get_num_threads() if device == "cpu" else 1) * ranks


def collect_environment(device: str, query_gpu: bool = True) -> dict:
    """`query_gpu=False` keeps a parent process from creating a CUDA context its children would have to share:
    the GPU's name and driver then come from nvidia-smi."""
    env = {
        "device": device,
        "gpu_name": "",
        "driver_version": "",
        "cuda_version": (torch.version.cuda or "") if device == "cuda" else "",
        "torch_cuda_build": torch.version.cuda or "",
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores_needed": cores_needed(device),
        **host_load(),
    }
    if device == "cuda" and query_gpu:
        index = torch.cuda.current_device()
        env["gpu_name"] = torch.cuda.get_device_name(index)
        env["gpu_memory_bytes"] = torch.cuda.get_device_properties(index).total_memory
        env["driver_version"] = _run(["nvidia-smi", f"--id={index}", "--query-gpu=driver_version", "--format=csv,noheader"])
    elif device == "cuda":
        env["gpu_name"], env["driver_version"] = nvidia_smi("name"), nvidia_smi("driver_version")
    try:
        import triton

        env["triton_version"] = triton.__version__
    except ImportError:
        env["triton_version"] = ""
    return env


def communication_environment(device: str) -> dict:
    """collect_environment plus what decides a collective's speed: NCCL's version and the GPUs' link topology."""
    env = collect_environment(device)
    if device == "cuda":
        env["nccl_version"] = ".".join(str(part) for part in torch.cuda.nccl.version())
        env["gpu_topology"] = _run(["nvidia-smi", "topo", "-m"])  # "" where nvidia-smi does not answer
    return env
