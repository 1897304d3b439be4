"""The GPU peak table: every entry is found by its own name and by the name torch reports, and only by whole words;
its fp8 peaks, memory sizes and the fp8 capability check."""

import pytest

from src.harness.hardware import GPU_SPECS, device_memory_gb, device_peak, find_gpu_spec, has_fp8


@pytest.mark.parametrize("spec", [spec for _, spec in GPU_SPECS], ids=lambda spec: spec.name)
def test_every_entry_resolves_to_itself_by_its_name(spec):
    assert find_gpu_spec(spec.name) is spec
    assert find_gpu_spec(f"NVIDIA {spec.name.lower()}") is spec  # case and a vendor prefix do not matter


# What torch.cuda.get_device_name() reports (from nvidia-smi / rocm-smi listings of these boards).
REPORTED = {
    "NVIDIA GH200 480GB": "GH200",
    "NVIDIA H200": "H200 SXM",
    "NVIDIA H100 80GB HBM3": "H100 SXM",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H100 NVL": "H100 NVL",
    "NVIDIA H20": "H20",
    "NVIDIA B200": "B200",
    "NVIDIA GB200": "GB200",
    "NVIDIA B100": "B100",
    "NVIDIA A100-SXM4-40GB": "A100 SXM 40GB",
    "NVIDIA A100-SXM4-80GB": "A100 SXM 80GB",
    "NVIDIA A100-PCIE-40GB": "A100 PCIe 40GB",
    "NVIDIA A100 80GB PCIe": "A100 PCIe 80GB",
    "NVIDIA A10G": "A10G",
    "NVIDIA A10": "A10",
    "NVIDIA L40": "L40",
    "NVIDIA L40S": "L40S",
    "NVIDIA L4": "L4",
    "NVIDIA GeForce RTX 5090": "RTX 5090",
    "NVIDIA GeForce RTX 4090": "RTX 4090",
    "NVIDIA GeForce RTX 3090": "RTX 3090",
    "NVIDIA RTX A6000": "RTX A6000",
    "NVIDIA RTX 6000 Ada Generation": "RTX 6000 Ada",
    "Tesla V100-SXM2-16GB": "V100 16GB",
    "Tesla V100-SXM2-32GB": "V100",
    "AMD Instinct MI300X": "MI300X",
    "AMD Instinct MI325X": "MI325X",
}


@pytest.mark.parametrize("reported,expected", list(REPORTED.items()))
def test_reported_names_find_their_own_entry(reported, expected):
    assert find_gpu_spec(reported).name == expected


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 2080 Ti", "Quadro RTX 6000", "NVIDIA RTX PRO 6000 Blackwell",
                                  "NVIDIA T4", "AMD Instinct MI250X", "NVIDIA H800", "NVIDIA L20"])
def test_an_unknown_gpu_leaves_mfu_empty_rather_than_borrowing_a_neighbour(name):
    assert find_gpu_spec(name) is None
    peak = device_peak(name, "bf16")
    assert peak.tflops is None and "MFU left empty" in peak.note


def test_every_entry_has_a_bandwidth_and_a_bf16_peak_at_least_its_fp32():
    for _, spec in GPU_SPECS:
        assert spec.bandwidth_tb_s > 0
        assert spec.bf16 == 0 or spec.bf16 >= spec.fp32


def test_every_entry_has_its_datasheet_memory():
    for _, spec in GPU_SPECS:
        assert spec.memory_gb > 0
        assert device_memory_gb(spec.name) == spec.memory_gb
    assert device_memory_gb("NVIDIA H200") == 141.0 and device_memory_gb("Tesla V100-SXM2-16GB") == 16.0
    assert device_memory_gb("NVIDIA T4") is None and device_memory_gb("") is None


# The boards with fp8 tensor cores (Ada, Hopper, Blackwell, CDNA3) and those without (Volta, Ampere).
WITH_FP8 = {"B200", "GB200", "B100", "H200 SXM", "H100 PCIe", "H100 NVL", "H100 SXM", "GH200", "H20", "L40S",
            "L40", "L4", "RTX 5090", "RTX 4090", "RTX 6000 Ada", "MI300X", "MI325X"}
WITHOUT_FP8 = {"A100 PCIe 40GB", "A100 SXM 40GB", "A100 PCIe 80GB", "A100 SXM 80GB", "A10G", "A10", "RTX 3090",
               "RTX A6000", "V100 16GB", "V100"}


def test_the_fp8_lists_cover_the_table():
    assert WITH_FP8 | WITHOUT_FP8 == {spec.name for _, spec in GPU_SPECS} and not WITH_FP8 & WITHOUT_FP8


@pytest.mark.parametrize("spec", [spec for _, spec in GPU_SPECS], ids=lambda spec: spec.name)
def test_fp8_peak_is_dense_twice_bf16_where_the_gpu_has_fp8(spec):
    assert has_fp8(spec.name) == (spec.name in WITH_FP8)
    fp8, bf16 = device_peak(spec.name, "fp8"), device_peak(spec.name, "bf16")
    if spec.name in WITHOUT_FP8:
        assert spec.fp8 == 0 and fp8.tflops is None and "no fp8 tensor cores" in fp8.note
        return
    assert fp8.tflops == spec.fp8 and bf16.tflops == spec.bf16 and "fp8" in fp8.note
    # Every datasheet's dense fp8 is twice its dense bf16 (a sparse figure taken by mistake would be 4x); the
    # widest is L40S, whose datasheet gives 733 against 362.05 (2.02x).
    assert spec.fp8 / spec.bf16 == pytest.approx(2.0, rel=0.03)


@pytest.mark.parametrize("name,capability,expected", [
    ("NVIDIA H100 80GB HBM3", None, True),
    ("NVIDIA A100-SXM4-80GB", (9, 0), False),  # the table wins over a capability
    ("NVIDIA L20", (8, 9), True),  # Ada, not in the table: the capability decides
    ("NVIDIA RTX PRO 6000 Blackwell", (12, 0), True),
    ("NVIDIA T4", (7, 5), False),
    ("NVIDIA A800", (8, 0), False),
    ("NVIDIA L20", None, False),  # unknown and no capability: no
    ("", None, False),  # CPU
])
def test_has_fp8_from_the_table_else_the_compute_capability(name, capability, expected):
    assert has_fp8(name, capability) is expected
