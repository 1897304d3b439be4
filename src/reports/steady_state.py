"""Per-step time curves of a record, and the step from which they are steady (warm-up over).

The curve of a configuration is its warm-up steps (whole-step times) followed by its measured steps
(forward + backward + optimizer). `steady_start` finds the first step after which the curve stays near its
final level:

    level = median of the last half of the curve                (the settled part; a median ignores spikes)
    noise = 1.4826 * MAD(step-to-step differences of that half) / sqrt(2)
    band  = max(K_MAD * noise, REL_BAND * level)
    steady from the first step s such that step s is inside level +- band and so is every later step,
    except isolated spikes: a single step outside the band whose neighbours are both inside.

The noise comes from differences of neighbouring steps so that a slow drift (a curve still settling)
is not mistaken for noise and does not widen the band; for independent noise it estimates the standard
deviation. The relative floor keeps a very quiet tail (e.g. a coarse CPU timer) from calling ordinary
jitter unsteady; K_MAD widens the band on noisy devices. Isolated spikes (a GC pause, a clock change) are
noise, not warm-up; a first slow step is warm-up, which is why a spike needs an in-band step on both sides.
"""

import numpy as np

from src.harness.record import measured_step_times, warmup_step_times

REL_BAND = 0.05  # a step within 5% of the final level counts as settled
K_MAD = 3.0  # or within 3 robust standard deviations of it, whichever is wider
MAD_TO_SIGMA = 1.4826  # MAD * 1.4826 estimates the standard deviation of normal noise


def step_curve(record: dict) -> np.ndarray:
    """Seconds per step in the order they ran: warm-up steps, then measured steps."""
    return np.concatenate([warmup_step_times(record), measured_step_times(record)])


def steady_band(times: np.ndarray, rel_band: float = REL_BAND, k_mad: float = K_MAD) -> tuple[float, float]:
    """(level, half width) of the band a settled step stays in; see the module docstring."""
    times = np.asarray(times, dtype=float)
    tail = times[len(times) // 2:]
    level = float(np.median(tail))
    diffs = np.diff(tail)
    mad = float(np.median(np.abs(diffs - np.median(diffs)))) if diffs.size else 0.0
    noise = MAD_TO_SIGMA * mad / np.sqrt(2)  # a difference of two independent steps has sqrt(2) x their spread
    return level, max(k_mad * noise, rel_band * abs(level))


def steady_start(times, rel_band: float = REL_BAND, k_mad: float = K_MAD) -> int | None:
    """Index of the first steady step of `times`, or None if the curve never settles (or is empty)."""
    times = np.asarray(times, dtype=float)
    if times.size == 0 or not np.all(np.isfinite(times)):
        return None
    level, half_width = steady_band(times, rel_band, k_mad)
    inside = np.abs(times - level) <= half_width
    right_inside = np.append(inside[1:], True)  # the last step has no right neighbour to disagree
    left_inside = np.insert(inside[:-1], 0, False)  # the first step can never be a spike: it may be warm-up
    tolerated = inside | (left_inside & right_inside)
    not_tolerated = np.flatnonzero(~tolerated)
    start = int(not_tolerated[-1]) + 1 if not_tolerated.size else 0
    return start if start < times.size else None
