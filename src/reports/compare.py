"""A/B statistics: match configurations of two sweeps, bootstrap the ratio of median step times, give a verdict.

Method. For each configuration the per-step times of A and of B are resampled with replacement,
independently, N_BOOTSTRAP times (fixed SEED, so a report is reproducible); the 2.5th and 97.5th percentiles
of median(B*)/median(A*) bound a 95% confidence interval of the ratio of medians. The verdict is

    "faster" / "slower"           the CI excludes 1.0 AND |ratio - 1| >= MIN_EFFECT
    "no significant difference"   otherwise

Why a minimum effect as well: steps of one run are not independent (one process, one clock state, one
allocator layout), so a CI from them describes that run, not the next one, and comes out narrower than
run-to-run variation (clock boost, temperature, placement), commonly quoted as 0.5-2% on GPUs for the same
code; we have not yet measured it for this project: two runs of one sweep, compared here, would. MIN_EFFECT =
2% sits at the top of that range: a smaller change is not reported even when its CI excludes 1.0. The median and the bootstrap need no
normality (step times are skewed by stragglers) and no scipy.
"""

from dataclasses import dataclass

import numpy as np

from src.harness.results import CONFIG_FIELDS

# How a configuration was measured (or where its profiles went), not what it is. peak_tflops is the device's
# peak for MFU; a CSV round trip files it under config because the record has a field of the same name.
IGNORED_FIELDS = ("timer", "isolate", "seed", "nvtx", "profile_steps", "trace", "memory_snapshot", "peak_tflops")
MIN_EFFECT = 0.02
CONFIDENCE = 0.95
N_BOOTSTRAP = 4000
SEED = 0
MIN_SAMPLES = 5  # a median CI from fewer steps is mostly resampling noise
ENVIRONMENT_FIELDS = ("gpu_name", "driver_version", "cuda_version", "torch_version", "triton_version",
                      "python_version", "git_commit")

FASTER, SLOWER, SAME = "faster", "slower", "no significant difference"


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float  # median(B) / median(A); < 1 means B takes less time per step
    low: float
    high: float
    verdict: str


def _bootstrap_medians(runs: list[np.ndarray], rng, n_boot: int) -> np.ndarray:
    """(n_boot,) medians of resamples. One run: its steps resampled. Several runs of the same configuration (a
    file that repeats it): runs resampled first, then steps within each, so the interval also covers how much
    runs differ from each other, which steps of one run cannot show."""
    if len(runs) == 1:
        (a,) = runs
        return np.median(a[rng.integers(0, a.size, (n_boot, a.size))], axis=1)
    medians = np.empty(n_boot)
    for i in range(n_boot):
        chosen = [runs[j] for j in rng.integers(0, len(runs), len(runs))]
        medians[i] = np.median(np.concatenate([r[rng.integers(0, r.size, r.size)] for r in chosen]))
    return medians


def bootstrap_median_ratio(a, b, n_boot: int = N_BOOTSTRAP, seed: int = SEED,
                           confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(median(b)/median(a), CI low, CI high) by the percentile bootstrap; a and b are step times, or lists of
    step-time lists (one per run); see the module docstring."""
    runs_a, runs_b = _as_runs(a), _as_runs(b)
    rng = np.random.default_rng(seed)
    medians_a, medians_b = _bootstrap_medians(runs_a, rng, n_boot), _bootstrap_medians(runs_b, rng, n_boot)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians_b / medians_a, [tail, 100 - tail])
    ratio = np.median(np.concatenate(runs_b)) / np.median(np.concatenate(runs_a))
    return float(ratio), float(low), float(high)


def _as_runs(samples) -> list[np.ndarray]:
    if len(samples) and isinstance(samples[0], (list, tuple, np.ndarray)):
        return [np.asarray(run, dtype=float) for run in samples]
    return [np.asarray(samples, dtype=float)]


def verdict(ratio: float, low: float, high: float, min_effect: float = MIN_EFFECT) -> str:
    if (low <= 1.0 <= high) or abs(ratio - 1.0) < min_effect:
        return SAME
    return FASTER if ratio < 1.0 else SLOWER


def compare_samples(a, b, min_effect: float = MIN_EFFECT) -> RatioEstimate:
    """Ratio, CI and verdict of B against A from per-step times (seconds), or from one list of them per run;
    raises ValueError if too few."""
    runs_a, runs_b = _as_runs(a), _as_runs(b)
    a, b = np.concatenate(runs_a), np.concatenate(runs_b)
    if min(a.size, b.size) < MIN_SAMPLES:
        raise ValueError(f"too few measured steps ({a.size} in A, {b.size} in B; need {MIN_SAMPLES})")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.median(a) > 0):
        raise ValueError("step times are not finite positive numbers")
    ratio, low, high = bootstrap_median_ratio(runs_a, runs_b)
    return RatioEstimate(ratio, low, high, verdict(ratio, low, high, min_effect))


def normalized(value):
    """A config value as both file formats would agree on it: CSV reads an empty string back as None."""
    if value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# What a field absent from an older results file meant. The optimizer is not here: before --optimizer the recipe
# chose it by size, so an old row's optimizer is unknown (--ignore optimizer matches across it).
ABSENT_FIELDS_MEANT = {"activation_checkpointing": "none"}


def config_key(record: dict, ignored: tuple[str, ...] = IGNORED_FIELDS) -> tuple:
    """What makes two rows the same configuration: every config field except `ignored`, as sorted items."""
    config = record.get("config") or {}
    return tuple(sorted((k, normalized(config.get(k, ABSENT_FIELDS_MEANT.get(k)))) for k in CONFIG_FIELDS
                        if k not in ignored))


def latest_by_config(records: list[dict], ignored: tuple[str, ...]) -> dict[tuple, dict]:
    """One record per configuration: the last ok one if any ran ok, else the last one (a rerun supersedes)."""
    chosen: dict[tuple, dict] = {}
    for record in records:
        key = config_key(record, ignored)
        previous = chosen.get(key)
        if previous is None or record.get("status") == "ok" or previous.get("status") != "ok":
            chosen[key] = record
    return chosen


def match(records_a: list[dict], records_b: list[dict], ignored: tuple[str, ...] = IGNORED_FIELDS):
    """(pairs [(key, record A, record B)] in A's order, keys only in A, keys only in B)."""
    by_a, by_b = latest_by_config(records_a, ignored), latest_by_config(records_b, ignored)
    pairs = [(key, by_a[key], by_b[key]) for key in by_a if key in by_b]
    return pairs, [k for k in by_a if k not in by_b], [k for k in by_b if k not in by_a]


def distinct_values(records: list[dict], field: str, section: str = "env") -> list[str]:
    values = {str(normalized((r.get(section) or {}).get(field))) for r in records}
    return sorted(values - {"None"}) or ["(not recorded)"]


def environment_differences(records_a: list[dict], records_b: list[dict], ignored: tuple[str, ...] = IGNORED_FIELDS):
    """([(field, A's values, B's values)] that differ, [fields that agree]): environment, precision, and the
    config fields left out of matching (a timer or a profiler that differs is worth knowing about)."""
    measured = [f for f in ("precision", *ignored) if f != "peak_tflops"]  # the device's, shown by gpu_name
    fields = [(f, "env") for f in ENVIRONMENT_FIELDS] + [(f, "config") for f in measured]
    differ, same = [], []
    for field, section in fields:
        a, b = distinct_values(records_a, field, section), distinct_values(records_b, field, section)
        if a != b:
            differ.append((field, a, b))
        else:
            same.append(field)
    return differ, same


def gpu_label(records: list[dict]) -> str:
    """The GPU name(s) of a sweep, 'CPU' for CPU runs."""
    names = {(r.get("env") or {}).get("gpu_name") or ("CPU" if (r.get("config") or {}).get("device") == "cpu"
                                                        else "unknown device") for r in records}
    return ", ".join(sorted(names))
