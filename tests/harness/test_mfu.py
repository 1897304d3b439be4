"""The fp8 step's MFUs: against the fp8 peak, bf16-equivalent, and against the peak of its fp8/bf16 mix."""

import pytest

from src.harness.mfu import fp8_mfu


def test_a_step_of_known_figures():
    # 1 PFLOP in 1 s on a GPU of 2000 fp8 / 1000 bf16 TFLOP/s, 80% of the FLOPs in fp8: at peak the fp8 part takes
    # 0.8e15 / 2e15 = 0.4 s and the rest 0.2e15 / 1e15 = 0.2 s, so the mix could run in 0.6 s.
    m = fp8_mfu(1e15, 1.0, 2000.0, 1000.0, 0.8)
    assert m.fp8_peak == pytest.approx(0.5, rel=1e-12)
    assert m.bf16_equivalent == pytest.approx(1.0, rel=1e-12)
    assert m.blended == pytest.approx(0.6, rel=1e-12)
    assert m.fp8_flops_fraction == 0.8


@pytest.mark.parametrize("time_s", [0.37, 2.0])
def test_the_blended_figure_spans_bf16_equivalent_to_fp8_peak(time_s):
    flops, fp8, bf16 = 3.3e14, 1979.0, 989.4
    none, some, every = (fp8_mfu(flops, time_s, fp8, bf16, f) for f in (0.0, 0.5, 1.0))
    assert none.blended == pytest.approx(none.bf16_equivalent, rel=1e-12)  # nothing in fp8: the bf16 scale
    assert every.blended == pytest.approx(every.fp8_peak, rel=1e-12)  # everything in fp8: the fp8 scale
    assert every.blended < some.blended < none.blended
    assert none.bf16_equivalent / none.fp8_peak == pytest.approx(fp8 / bf16, rel=1e-12)


@pytest.mark.parametrize("args,field", [
    ((0.0, 1.0, 2000.0, 1000.0, 0.5), "step_flops"),
    ((1e15, 0.0, 2000.0, 1000.0, 0.5), "step_time_s"),
    ((1e15, 1.0, 0.0, 1000.0, 0.5), "fp8_peak_tflops"),
    ((1e15, 1.0, 2000.0, -1.0, 0.5), "bf16_peak_tflops"),
    ((1e15, 1.0, 2000.0, 1000.0, 1.5), "fp8_flops_fraction"),
])
def test_bad_input_names_the_field(args, field):
    with pytest.raises(ValueError, match=field):
        fp8_mfu(*args)
