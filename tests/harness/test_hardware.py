"""The GPU peak table: every entry is found by its own name and by the name torch reports, and only by whole words."""

import pytest

from src.harness.hardware import GPU_SPECS, device_peak, find_gpu_spec


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
    "Tesla V100-SXM2-16GB": "V100",
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
