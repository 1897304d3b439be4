"""Model FLOPs utilisation of a step whose matmuls ran partly in fp8: against the fp8 peak, bf16-equivalent, blended.

    mfu (fp8 peak)       = FLOPs / time / fp8 peak           what torchao/torchtitan-style fp8 rows quote
    bf16-equivalent mfu  = FLOPs / time / bf16 peak          the same step on the bf16 row's scale, so rows of both
                                                             precisions compare (above 1 means faster than bf16's peak)
    blended mfu          = FLOPs / time / blended peak       against the best this mix could do: the fp8 FLOPs at
                           blended peak = FLOPs / (f FLOPs / fp8 peak + (1 - f) FLOPs / bf16 peak)
f is the fraction of the step's FLOPs that ran in fp8 (the converted linears; attention's T x T products, the
output head kept in bf16 and every unconverted matmul ran at the bf16 rate). FLOPs are the model's own count
(the same in both precisions: fp8 changes how fast a matmul runs, not how many FLOPs it has).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Fp8Mfu:
    fp8_peak: float  # FLOPs / time / fp8 peak
    bf16_equivalent: float  # FLOPs / time / bf16 peak
    blended: float  # FLOPs / time / the peak of this step's fp8/bf16 mix
    fp8_flops_fraction: float


def fp8_mfu(step_flops: float, step_time_s: float, fp8_peak_tflops: float, bf16_peak_tflops: float,
            fp8_flops_fraction: float) -> Fp8Mfu:
    """The three MFUs of one step of `step_flops` in `step_time_s`, `fp8_flops_fraction` of them in fp8."""
    for name, value in (("step_flops", step_flops), ("step_time_s", step_time_s),
                        ("fp8_peak_tflops", fp8_peak_tflops), ("bf16_peak_tflops", bf16_peak_tflops)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    if not 0.0 <= fp8_flops_fraction <= 1.0:
        raise ValueError(f"fp8_flops_fraction must be in [0, 1], got {fp8_flops_fraction!r}")
    achieved = step_flops / step_time_s  # FLOP/s
    fp8_peak, bf16_peak = fp8_peak_tflops * 1e12, bf16_peak_tflops * 1e12
    time_at_peak = step_flops * (fp8_flops_fraction / fp8_peak + (1.0 - fp8_flops_fraction) / bf16_peak)  # s
    return Fp8Mfu(
        fp8_peak=achieved / fp8_peak,
        bf16_equivalent=achieved / bf16_peak,
        blended=time_at_peak / step_time_s,
        fp8_flops_fraction=fp8_flops_fraction,
    )
