"""Peak dense throughput and memory bandwidth of common GPUs, for MFU and speed-of-light figures.

Datasheet figures, dense (no 2:4 sparsity), in TFLOP/s; bandwidth in TB/s. fp32 means CUDA-core FP32 (what
torch runs with float32_matmul_precision 'highest', its default); tf32 is used instead when the user allows it.
For reference, on one H100 SXM we measured bf16 matmul at 786 TFLOP/s (8192^3), fp32 52, tf32 385, copy 3.0 TB/s:
MFU against the datasheet is therefore capped near 80% even for a perfect model.
"""

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GpuSpec:
    name: str
    fp32: float
    tf32: float
    bf16: float  # fp16 tensor-core rate is the same on all of these
    bandwidth_tb_s: float


# Matched against torch.cuda.get_device_name() by whole words, ignoring case ("NVIDIA GH200 480GB" has the word
# GH200, never H200; "NVIDIA L40" never matches L4 or L40S). Entries with more words are tried first, so the order
# below is only for reading. Sources: each vendor's datasheet, dense figures; per GPU where sold in boards of 8/72.
GPU_SPECS: list[tuple[tuple[str, ...], GpuSpec]] = [
    # NVIDIA Blackwell datasheet per-GPU columns (as tabulated at glennklockwood.com/garden/processors/B200):
    # HGX B200 at 1000 W, GB200 at 1200 W; HGX B100 (700 W): 28 PF sparse FP16 / 14 PF sparse TF32 / 480 TF FP32
    # per 8 GPUs. HBM3e 8 TB/s each.
    (("B200",), GpuSpec("B200", 80.0, 1100.0, 2250.0, 8.0)),
    (("GB200",), GpuSpec("GB200", 90.0, 1250.0, 2500.0, 8.0)),
    (("B100",), GpuSpec("B100", 60.0, 875.0, 1750.0, 8.0)),
    # H100/H200 datasheets (SXM, PCIe, NVL columns); GH200 superchip datasheet (96 GB HBM3 at 4 TB/s).
    (("H200",), GpuSpec("H200 SXM", 67.0, 494.7, 989.4, 4.8)),
    (("H100", "PCIe"), GpuSpec("H100 PCIe", 51.2, 378.0, 756.0, 2.0)),
    (("H100", "NVL"), GpuSpec("H100 NVL", 60.0, 417.5, 835.0, 3.9)),
    (("H100",), GpuSpec("H100 SXM", 67.0, 494.7, 989.4, 3.35)),
    (("GH200",), GpuSpec("GH200", 67.0, 494.7, 989.4, 4.0)),
    # HGX H20 product brief: FP16/BF16 148, TF32 74, FP32 44 TFLOPS, 96 GB HBM3 at 4.0 TB/s.
    (("H20",), GpuSpec("H20", 44.0, 74.0, 148.0, 4.0)),
    # A100 datasheet (40/80 GB, SXM/PCIe columns).
    (("A100", "PCIe", "40GB"), GpuSpec("A100 PCIe 40GB", 19.5, 156.0, 312.0, 1.555)),
    (("A100", "40GB"), GpuSpec("A100 SXM 40GB", 19.5, 156.0, 312.0, 1.555)),
    (("A100", "PCIe"), GpuSpec("A100 PCIe 80GB", 19.5, 156.0, 312.0, 1.935)),
    (("A100",), GpuSpec("A100 SXM 80GB", 19.5, 156.0, 312.0, 2.039)),
    (("A10G",), GpuSpec("A10G", 31.2, 35.0, 70.0, 0.6)),
    (("A10",), GpuSpec("A10", 31.2, 62.5, 125.0, 0.6)),
    # L40 and L40S datasheets: BF16 181.05 / 362.05 dense, TF32 90.5 / 183, FP32 90.5 / 91.6, 864 GB/s GDDR6.
    (("L40S",), GpuSpec("L40S", 91.6, 183.0, 362.0, 0.864)),
    (("L40",), GpuSpec("L40", 90.5, 90.5, 181.05, 0.864)),
    (("L4",), GpuSpec("L4", 30.3, 60.0, 121.0, 0.3)),
    # GeForce: FP16/BF16 tensor with FP32 accumulate (half the FP16-accumulate rate on GeForce). RTX 5090: Blackwell
    # GeForce whitepaper, 838.4 TFLOPS sparse FP16-accumulate -> 209.5 dense FP32-accumulate, 104.8 FP32, 1792 GB/s.
    (("RTX", "5090"), GpuSpec("RTX 5090", 104.8, 104.8, 209.5, 1.792)),
    (("RTX", "4090"), GpuSpec("RTX 4090", 82.6, 82.6, 165.2, 1.008)),
    (("RTX", "3090"), GpuSpec("RTX 3090", 35.6, 35.6, 71.0, 0.936)),
    # Workstation cards run FP32 accumulate at full rate. RTX A6000 datasheet: FP32 38.7, tensor 309.7 TFLOPS
    # sparse -> BF16 154.8 / TF32 77.4 dense, 768 GB/s. RTX 6000 Ada datasheet: FP32 91.1, tensor 1457 TFLOPS
    # (FP8 sparse) -> BF16 364.2 / TF32 182.1 dense, 960 GB/s.
    (("RTX", "A6000"), GpuSpec("RTX A6000", 38.7, 77.4, 154.8, 0.768)),
    (("RTX", "6000", "Ada"), GpuSpec("RTX 6000 Ada", 91.1, 182.1, 364.2, 0.96)),
    (("V100",), GpuSpec("V100", 15.7, 0.0, 0.0, 0.9)),
    # AMD Instinct MI300X / MI325X datasheets (torch reports them through torch.cuda on ROCm): matrix FP32 163.4,
    # TF32 653.7, BF16 1307.4 TFLOPS dense; HBM3 5.3 TB/s (MI300X), HBM3E 6 TB/s (MI325X).
    (("MI300X",), GpuSpec("MI300X", 163.4, 653.7, 1307.4, 5.3)),
    (("MI325X",), GpuSpec("MI325X", 163.4, 653.7, 1307.4, 6.0)),
]
_BY_SPECIFICITY = sorted(GPU_SPECS, key=lambda entry: -len(entry[0]))  # stable: ties keep the order above


def find_gpu_spec(device_name: str) -> GpuSpec | None:
    """The entry whose every word is a whole word of `device_name` (case ignored), most words first; else None."""
    words = set(re.split(r"[^0-9A-Z]+", device_name.upper()))
    for needed, spec in _BY_SPECIFICITY:
        if all(w.upper() in words for w in needed):
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
