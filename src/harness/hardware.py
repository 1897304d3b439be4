"""Peak dense throughput and memory bandwidth of common GPUs, for MFU and speed-of-light figures.

Datasheet figures, dense (no 2:4 sparsity), in TFLOP/s; bandwidth in TB/s. fp32 means CUDA-core FP32 (what
torch runs with float32_matmul_precision 'highest', its default); tf32 is used instead when the user allows it.
For reference, on one H100 SXM we measured bf16 matmul at 786 TFLOP/s (8192^3), fp32 52, tf32 385, copy 3.0 TB/s:
MFU against the datasheet is therefore capped near 80% even for a perfect model.
A run with precision "fp8" gets the fp8 peak; its bf16-equivalent figure is the same call with "bf16" (see
src/harness/mfu.py for both MFUs of one step).
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
    fp8: float  # e4m3/e5m2 tensor cores (Ada, Hopper, Blackwell, CDNA3); 0 where the GPU has none
    bandwidth_tb_s: float
    memory_gb: float  # datasheet memory, GB as the datasheet writes it: what "fits" is checked against


# Matched against torch.cuda.get_device_name() by whole words, ignoring case ("NVIDIA GH200 480GB" has the word
# GH200, never H200; "NVIDIA L40" never matches L4 or L40S). Entries with more words are tried first, so the order
# below is only for reading. Sources: each vendor's datasheet, dense figures; per GPU where sold in boards of 8/72.
# Columns: name, fp32, tf32, bf16, fp8 (TFLOP/s), bandwidth (TB/s), memory (GB). Datasheets give fp8 with 2:4
# sparsity first: the dense figure is half of it, as for bf16. 0 = no such tensor cores (Volta and Ampere lack fp8).
GPU_SPECS: list[tuple[tuple[str, ...], GpuSpec]] = [
    # NVIDIA Blackwell datasheet per-GPU columns (as tabulated at glennklockwood.com/garden/processors/B200):
    # HGX B200 at 1000 W, GB200 at 1200 W; HGX B100 (700 W): 28 PF sparse FP16 / 14 PF sparse TF32 / 480 TF FP32
    # per 8 GPUs. HBM3e 8 TB/s each. FP8 dense: 4.5 PF (HGX B200), 5 PF (GB200), 56 PF sparse per 8 = 3.5 PF dense
    # (HGX B100). Memory: DGX/HGX B200 1,440 GB per 8 GPUs (the B100 board likewise); GB200 NVL72 13.4 TB per 72.
    (("B200",), GpuSpec("B200", 80.0, 1100.0, 2250.0, 4500.0, 8.0, 180.0)),
    (("GB200",), GpuSpec("GB200", 90.0, 1250.0, 2500.0, 5000.0, 8.0, 186.0)),
    (("B100",), GpuSpec("B100", 60.0, 875.0, 1750.0, 3500.0, 8.0, 180.0)),
    # H100/H200 datasheets (SXM, PCIe, NVL columns); GH200 superchip datasheet (96 GB HBM3 at 4 TB/s). FP8 sparse
    # 3,958 (SXM, H200, GH200), 3,026 (PCIe), 3,341 (NVL) TFLOPS; memory 80 / 80 / 94 GB, H200 141 GB HBM3e.
    (("H200",), GpuSpec("H200 SXM", 67.0, 494.7, 989.4, 1979.0, 4.8, 141.0)),
    (("H100", "PCIe"), GpuSpec("H100 PCIe", 51.2, 378.0, 756.0, 1513.0, 2.0, 80.0)),
    (("H100", "NVL"), GpuSpec("H100 NVL", 60.0, 417.5, 835.0, 1670.5, 3.9, 94.0)),
    (("H100",), GpuSpec("H100 SXM", 67.0, 494.7, 989.4, 1979.0, 3.35, 80.0)),
    (("GH200",), GpuSpec("GH200", 67.0, 494.7, 989.4, 1979.0, 4.0, 96.0)),
    # HGX H20 product brief: FP8 296, FP16/BF16 148, TF32 74, FP32 44 TFLOPS, 96 GB HBM3 at 4.0 TB/s.
    (("H20",), GpuSpec("H20", 44.0, 74.0, 148.0, 296.0, 4.0, 96.0)),
    # A100 datasheet (40/80 GB, SXM/PCIe columns); A10 datasheet and AWS's A10G (24 GB GDDR6 each). No fp8.
    (("A100", "PCIe", "40GB"), GpuSpec("A100 PCIe 40GB", 19.5, 156.0, 312.0, 0.0, 1.555, 40.0)),
    (("A100", "40GB"), GpuSpec("A100 SXM 40GB", 19.5, 156.0, 312.0, 0.0, 1.555, 40.0)),
    (("A100", "PCIe"), GpuSpec("A100 PCIe 80GB", 19.5, 156.0, 312.0, 0.0, 1.935, 80.0)),
    (("A100",), GpuSpec("A100 SXM 80GB", 19.5, 156.0, 312.0, 0.0, 2.039, 80.0)),
    (("A10G",), GpuSpec("A10G", 31.2, 35.0, 70.0, 0.0, 0.6, 24.0)),
    (("A10",), GpuSpec("A10", 31.2, 62.5, 125.0, 0.0, 0.6, 24.0)),
    # L40 and L40S datasheets: BF16 181.05 / 362.05 dense, TF32 90.5 / 183, FP32 90.5 / 91.6, FP8 724 / 1,466
    # sparse, 48 GB GDDR6 at 864 GB/s. L4 datasheet: FP8 485 sparse, BF16 242 sparse, 24 GB at 300 GB/s.
    (("L40S",), GpuSpec("L40S", 91.6, 183.0, 362.0, 733.0, 0.864, 48.0)),
    (("L40",), GpuSpec("L40", 90.5, 90.5, 181.05, 362.0, 0.864, 48.0)),
    (("L4",), GpuSpec("L4", 30.3, 60.0, 121.0, 242.5, 0.3, 24.0)),
    # GeForce: FP16/BF16 and FP8 tensor with FP32 accumulate (half the FP16-accumulate rate on GeForce; torch's
    # scaled matmul accumulates in FP32). RTX 5090: Blackwell GeForce whitepaper, 838.4 TFLOPS sparse
    # FP16-accumulate -> 209.5 dense FP32-accumulate, FP8 1,676.8 sparse -> 419.2, 104.8 FP32, 32 GB at 1792 GB/s.
    # RTX 4090: Ada whitepaper, FP8 1,321.2 sparse FP16-accumulate -> 330.3 dense FP32-accumulate, 24 GB.
    (("RTX", "5090"), GpuSpec("RTX 5090", 104.8, 104.8, 209.5, 419.2, 1.792, 32.0)),
    (("RTX", "4090"), GpuSpec("RTX 4090", 82.6, 82.6, 165.2, 330.3, 1.008, 24.0)),
    (("RTX", "3090"), GpuSpec("RTX 3090", 35.6, 35.6, 71.0, 0.0, 0.936, 24.0)),
    # Workstation cards run FP32 accumulate at full rate. RTX A6000 datasheet: FP32 38.7, tensor 309.7 TFLOPS
    # sparse -> BF16 154.8 / TF32 77.4 dense, 48 GB at 768 GB/s. RTX 6000 Ada datasheet: FP32 91.1, tensor 1457
    # TFLOPS (FP8 sparse) -> FP8 728.5 / BF16 364.2 / TF32 182.1 dense, 48 GB at 960 GB/s.
    (("RTX", "A6000"), GpuSpec("RTX A6000", 38.7, 77.4, 154.8, 0.0, 0.768, 48.0)),
    (("RTX", "6000", "Ada"), GpuSpec("RTX 6000 Ada", 91.1, 182.1, 364.2, 728.5, 0.96, 48.0)),
    # V100 SXM2 datasheet: 16 or 32 GB HBM2 at 900 GB/s; no bf16 or fp8 tensor cores.
    (("V100", "16GB"), GpuSpec("V100 16GB", 15.7, 0.0, 0.0, 0.0, 0.9, 16.0)),
    (("V100",), GpuSpec("V100", 15.7, 0.0, 0.0, 0.0, 0.9, 32.0)),
    # AMD Instinct MI300X / MI325X datasheets (torch reports them through torch.cuda on ROCm): matrix FP32 163.4,
    # TF32 653.7, BF16 1307.4, FP8 2614.9 TFLOPS dense; 192 GB HBM3 at 5.3 TB/s (MI300X), 256 GB HBM3E at 6 TB/s
    # (MI325X).
    (("MI300X",), GpuSpec("MI300X", 163.4, 653.7, 1307.4, 2614.9, 5.3, 192.0)),
    (("MI325X",), GpuSpec("MI325X", 163.4, 653.7, 1307.4, 2614.9, 6.0, 256.0)),
]
_BY_SPECIFICITY = sorted(GPU_SPECS, key=lambda entry: -len(entry[0]))  # stable: ties keep the order above


def find_gpu_spec(device_name: str) -> GpuSpec | None:
    """The entry whose every word is a whole word of `device_name` (case ignored), most words first; else None."""
    words = set(re.split(r"[^0-9A-Z]+", device_name.upper()))
    for needed, spec in _BY_SPECIFICITY:
        if all(w.upper() in words for w in needed):
            return spec
    return None


def device_memory_gb(device_name: str) -> float | None:
    """The GPU's datasheet memory in GB (1e9 bytes as the datasheets write it), None for a GPU not in the table."""
    spec = find_gpu_spec(device_name) if device_name else None
    return spec.memory_gb if spec else None


# Compute capability from which NVIDIA GPUs have fp8 tensor cores: Ada is 8.9, Hopper 9.0, Blackwell 10.0/12.0
# (torch._scaled_mm refuses below 8.9). Only asked for a GPU missing from the table.
FP8_MIN_CAPABILITY = (8, 9)


def has_fp8(device_name: str, capability: tuple[int, int] | None = None) -> bool:
    """Whether the GPU has fp8 tensor cores: the table says for a GPU in it; else the compute capability, if
    given, decides; else (CPU, an unknown GPU without a capability) no."""
    spec = find_gpu_spec(device_name) if device_name else None
    if spec is not None:
        return spec.fp8 > 0
    return capability is not None and tuple(capability) >= FP8_MIN_CAPABILITY


def matmul_kind(precision: str) -> str:
    """Which peak a run's matmuls can reach: fp8 or bf16/fp16 tensor cores, tf32 if allowed, else plain fp32."""
    if precision == "fp8":
        return "fp8"
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
