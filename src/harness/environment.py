"""Where a number was measured: GPU, driver, CUDA, torch, project commit, host and time, recorded in every row."""

import datetime
import os
import platform
import socket
import subprocess

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


def collect_environment(device: str, query_gpu: bool = True) -> dict:
    """`query_gpu=False` keeps a parent process from creating a CUDA context its children would have to share:
    the GPU's name and driver then come from nvidia-smi."""
    env = {
        "device": device,
        "gpu_name": "",
        "driver_version": "",
        "cuda_version": torch.version.cuda or "",
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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
