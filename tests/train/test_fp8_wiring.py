"""--precision fp8 through the RunSpec and the row: what is refused before any work, and the row's MFU figures
(against the GPU's dense fp8 peak, and bf16-equivalent so fp8 and bf16 rows compare). The conversion itself is
tested under torchao's emulation in test_fp8.py; the step runs only on a GPU with fp8 tensor cores."""

import pytest

from src.harness.hardware import find_gpu_spec
from src.harness.record import new_record, with_fields
from src.harness.runner import derive_figures
from src.spec import RunSpec

TINY = dict(size="tiny", d_model=64, d_ff=256, num_heads=4, num_layers=2, mode="train", attention="sdpa")


@pytest.mark.parametrize("changes,message", [
    (dict(precision="fp8"), "fp8 needs a GPU with fp8 tensor cores"),
    (dict(precision="fp8", device="cuda", timer="events", fp8_recipe="blockwise"), "fp8_recipe: must be one of"),
    (dict(precision="bf16", fp8_recipe="rowwise"), "applies to precision fp8 only"),
])
def test_what_fp8_cannot_run_is_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        RunSpec(**TINY, **changes)


def test_the_fast_recipe_in_fp8_keeps_bf16_weights_with_fp32_masters_as_in_bf16():
    from src.train.step import chosen_optimizer, uses_bf16_weights

    fast = RunSpec(**TINY, precision="fp8", device="cuda", timer="events", recipe="fast")
    assert uses_bf16_weights(fast) and chosen_optimizer(fast, parameters=10**9) == "ours"
    explicit = RunSpec(**TINY, precision="fp8", device="cuda", timer="events", optimizer="ours")  # not refused
    assert chosen_optimizer(explicit, parameters=10**9) == "ours"
    assert chosen_optimizer(RunSpec(**TINY, precision="fp8", device="cuda", timer="events", recipe="fast",
                                    optimizer="fused"), parameters=10**9) == "fused"  # the 2026-12-03 fp8 rows


def test_an_fp8_row_defaults_to_tensorwise_and_says_so():
    spec = RunSpec(**TINY, precision="fp8", device="cuda", timer="events")
    assert spec.fp8_recipe == "tensorwise" and "fp8 sdpa tensorwise" in spec.label


def test_an_fp8_rows_mfu_is_against_the_fp8_peak_with_its_bf16_equivalent_beside_it():
    spec = RunSpec(**TINY, precision="fp8", device="cuda", timer="events", fp8_recipe="rowwise")
    steps = {"time_forward": [0.010] * 3, "time_backward": [0.020] * 3, "time_optimizer": [0.005] * 3}
    fp8_flops = 123_456_789
    figures = derive_figures(spec, with_fields(new_record(spec), {**steps, "fp8_flops_per_step": fp8_flops}),
                             "NVIDIA H200")
    h200 = find_gpu_spec("NVIDIA H200")
    tflops = figures["flops_per_step"] / 0.035 / 1e12  # the median step: 10 + 20 + 5 ms
    assert figures["tflops"] == pytest.approx(tflops)
    assert figures["mfu"] == pytest.approx(tflops / h200.fp8) and h200.fp8 > h200.bf16
    assert figures["mfu_bf16_equivalent"] == pytest.approx(tflops / h200.bf16)
    assert figures["fp8_flops_fraction"] == pytest.approx(fp8_flops / figures["flops_per_step"])
