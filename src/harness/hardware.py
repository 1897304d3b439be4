"""Peak dense throughput and memory bandwidth of common GPUs, for MFU and speed-of-light figures.

Datasheet figures, dense (no 2:4 sparsity), in TFLOP/s; bandwidth in TB/s. fp32 means CUDA-core FP32 (what
torch runs with float32_matmul_precision 'highest', its default); tf32 is used instead when the user allows it.
For reference, on one H100 SXM we measured bf16 matmul at 786 TFLOP/s (8192^3), fp32 52, tf32 385, copy 3.0 TB/s:
MFU against the datasheet is therefore capped near 80% even for a perfect model.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GpuSpec:
    name: str
    fp32: float
    tf32: float
    bf16: float  # fp16 tensor-core rate is the same on all of these
    bandwidth_tb_s: float


# Matched in order against torch.cuda.get_device_name(): the first entry whose every word appears wins.
GPU_SPECS: list[tuple[tuple[str, ...], GpuSpec]] = [
    (("H200",), GpuSpec("H200 SXM", 67.0, 494.7, 989.4, 4.8)),
    (("H100", "PCIe"), GpuSpec("H100 PCIe", 51.2, 378.0, 756.0, 2.0)),
    (("H100", "NVL"), GpuSpec("H100 NVL", 60.0, 417.5, 835.0, 3.9)),
    (("H100",), GpuSpec("H100 SXM", 67.0, 494.7, 989.4, 3.35)),
    (("GH200",), GpuSpec("GH200", 67.0, 494.7, 989.4, 4.0)),
    (("A100", "PCIe", "40GB"), GpuSpec("A100 PCIe 40GB", 19.5, 156.0, 312.0, 1.555)),
    (("A100", "40GB"), GpuSpec("A100 SXM 40GB", 19.5, 156.0, 312.0, 1.555)),
    (("A100", "PCIe"), GpuSpec("A100 PCIe 80GB", 19.5, 156.0, 312.0, 1.935)),
    (("A100",), GpuSpec("A100 SXM 80GB", 19.5, 156.0, 312.0, 2.039)),
    (("A10G",), GpuSpec("A10G", 31.2, 35.0, 70.0, 0.6)),
    (("A10",), GpuSpec("A10", 31.2, 62.5, 125.0, 0.6)),
    (("L40S",), GpuSpec("L40S", 91.6, 183.0, 362.0, 0.864)),
    (("L4",), GpuSpec("L4", 30.3, 60.0, 121.0, 0.3)),
    (("RTX", "4090"), GpuSpec("RTX 4090", 82.6, 82.6, 165.2, 1.008)),
    (("RTX", "3090"), GpuSpec("RTX 3090", 35.6, 35.6, 71.0, 0.936)),
    (("V100",), GpuSpec("V100", 15.7, 0.0, 0.0, 0.9)),
]


def find_gpu_spec(device_name: str) -> GpuSpec | None:
    for words, spec in GPU_SPECS:
        if all(w in device_name for w in words):
            return spec
    return None


def matmul_kind(precision: str) -> str:
    """Which peak a run's matmuls can reach: bf16/fp16 tensor cores, tf32 if allowed, else plain fp32."""
    if precision in ("bf16", "fp16"):
        return "bf16"
    return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"


@dataclass(frozen=True)
class Peak:
    tflops: float | None
    bandwidth_tb_s: float | None
    note: str


def device_peak(device_name: str, precision: str, peak_tflops_override: float | None = None) -> Peak:
    spec = find_gpu_spec(device_name) if device_name else None
    bandwidth = spec.bandwidth_tb_s if spec else None
    if peak_tflops_override:
        return Peak(peak_tflops_override, bandwidth, "peak from --peak_tflops")
    if spec is None:
        what = device_name or "this CPU"
        return Peak(None, None, f"no known peak for {what}: MFU left empty; pass --peak_tflops to set one")
    kind = matmul_kind(precision)
    tflops = getattr(spec, kind)
    if not tflops:
        return Peak(None, bandwidth, f"{spec.name} has no {kind} tensor cores in our table: MFU left empty")
    return Peak(tflops, bandwidth, f"{spec.name} dense {kind} peak {tflops:g} TFLOP/s")
