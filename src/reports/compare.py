"""A/B statistics: match configurations of two sweeps, bootstrap the ratio of median step times, give a verdict.

Method. For each configuration the per-step times of A and of B are resampled with replacement,
independently, N_BOOTSTRAP times (fixed SEED, so a report is reproducible); the 2.5th and 97.5th percentiles
of median(B*)/median(A*) bound a 95% confidence interval of the ratio of medians. A file that holds the same
configuration from several processes (the same command run twice into one --output) has its runs resampled
first, then the steps within each. The verdict is "faster" / "slower" only when the CI excludes 1.0 AND the
change max(ratio, 1/ratio) - 1 reaches the noise it must beat, else "within noise":

    both sides repeated (>= 2 runs each)  the run-to-run spread: the largest max/min - 1 of one side's run medians
    a side with one run                   SINGLE_RUN_NOISE (25%), since one process cannot show its spread
    either row on a busy host             no verdict at all (src/reports/anomalies.py: host_busy)
    always                                at least --min_effect (MIN_EFFECT, 2%)

Why not the CI alone: steps of one process are not independent (one clock state, one allocator layout, one
placement), so a CI from them describes that process, not the next one. Measured: the same code run twice gave
"faster" for 3 of 4 configurations on a CPU host with load 1.5-5 on 2 cores (issue 21); on this project's 2-core
CPU host at load 7-8, two runs of the same four tiny configurations gave step ratios of 0.03, 0.61, 1.28 and 1.82;
on the H100 VM, host-bound sizes' step medians differed 17% and 24% between two processes of the same code (small:
52.6 / 44.9 ms and 39.2 / 48.6 ms; docs/results/benchmark_h100_2026-11-24.md). SINGLE_RUN_NOISE is set just above
that 24%; a GPU-bound size varies far less, so repeat the runs to resolve a smaller change: their spread then
replaces the 25%. The median and the bootstrap need no normality (step times are skewed by stragglers) and no scipy.

Where the time went. Two matched rows that both ran with --trace carry ms per profiled step by category, idle, and
their top kernels (src/harness/record.py trace_* fields); trace_differences sets them side by side, largest
difference first, each with its share of the step-time difference. Rows that differ on purpose in one field (our
model against torchtitan's: --pair_on backend) are matched on every other field.
"""

from dataclasses import dataclass

import numpy as np

from src.harness.results import CONFIG_FIELDS
from src.spec import compile_mode_before_the_field

# How a configuration was measured (or where its profiles went), not what it is. peak_tflops is the device's
# peak for MFU; a CSV round trip files it under config because the record has a field of the same name.
IGNORED_FIELDS = ("timer", "isolate", "seed", "nvtx", "profile_steps", "trace", "memory_snapshot", "peak_tflops")
MIN_EFFECT = 0.02
SINGLE_RUN_NOISE = 0.25  # see the module docstring: 17-24% between processes of the same code on the H100 VM
CONFIDENCE = 0.95
N_BOOTSTRAP = 4000
SEED = 0
MIN_SAMPLES = 5  # a median CI from fewer steps is mostly resampling noise
ENVIRONMENT_FIELDS = ("gpu_name", "driver_version", "cuda_version", "torch_version", "triton_version",
                      "python_version", "git_commit")

FASTER, SLOWER, SAME = "faster", "slower", "within noise"


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float  # median(B) / median(A); < 1 means B takes less time per step
    low: float
    high: float
    verdict: str
    noise: str = ""  # what the change had to beat, e.g. "run spread 4.0%", "one run: 25%", "busy host"


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
    """faster/slower when the CI excludes 1 and the change reaches min_effect (the noise to beat), else SAME. The
    change is max(ratio, 1/ratio) - 1: runs 24% apart are 24% apart whichever side is A."""
    if (low <= 1.0 <= high) or max(ratio, 1.0 / ratio) - 1.0 < min_effect:
        return SAME
    return FASTER if ratio < 1.0 else SLOWER


def run_spread(runs: list[np.ndarray]) -> float:
    """max/min - 1 of the runs' median step times: how far two processes of one configuration landed apart."""
    medians = [float(np.median(r)) for r in runs]
    return max(medians) / min(medians) - 1.0


def noise_to_beat(runs_a: list[np.ndarray], runs_b: list[np.ndarray]) -> tuple[float, str]:
    """(the relative change a verdict needs beyond the CI, its name): the larger run spread of the two sides when
    both repeat the configuration, else SINGLE_RUN_NOISE."""
    if min(len(runs_a), len(runs_b)) >= 2:
        spread = max(run_spread(runs_a), run_spread(runs_b))
        return spread, f"run spread {spread:.1%}"
    return SINGLE_RUN_NOISE, f"one run: {SINGLE_RUN_NOISE:.0%}"


def compare_samples(a, b, min_effect: float = MIN_EFFECT, busy_host: bool = False) -> RatioEstimate:
    """Ratio, CI and verdict of B against A from per-step times (seconds), or from one list of them per run (see
    the module docstring); `busy_host` (a row measured on a busy host) withholds the verdict. Raises ValueError
    if too few."""
    runs_a, runs_b = _as_runs(a), _as_runs(b)
    a, b = np.concatenate(runs_a), np.concatenate(runs_b)
    if min(a.size, b.size) < MIN_SAMPLES:
        raise ValueError(f"too few measured steps ({a.size} in A, {b.size} in B; need {MIN_SAMPLES})")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a > 0) and np.all(b > 0)):
        raise ValueError("step times are not finite positive numbers")
    ratio, low, high = bootstrap_median_ratio(runs_a, runs_b)
    if busy_host:
        return RatioEstimate(ratio, low, high, SAME, "busy host")
    noise, name = noise_to_beat(runs_a, runs_b)
    return RatioEstimate(ratio, low, high, verdict(ratio, low, high, max(min_effect, noise)), name)


def normalized(value):
    """A config value as both file formats would agree on it: CSV reads an empty string back as None."""
    if value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# What a field absent from an older results file meant. The optimizer is not here: before --optimizer the recipe
# chose it by size, so an old row's optimizer is unknown (--ignore optimizer matches across it).
# compile_scope came later than --compile: a compiled row without it compiled the model whole (fsdp2: its blocks);
# compile_mode later still: such a row compiled in torch's default mode.
ABSENT_FIELDS_MEANT = {
    "activation_checkpointing": lambda config: "none",
    "compile_scope": lambda config: (("blocks" if config.get("parallel") == "fsdp2" else "model")
                                     if config.get("compile") or config.get("recipe") else None),
    "compile_mode": compile_mode_before_the_field,
}


def config_value(config: dict, field: str):
    """A row's config field, or what its absence meant in the older files that lack it. A CSV written before the
    field and then rewritten with the union of both headers holds it as an empty cell: that is absent too."""
    value = config.get(field)
    meant = ABSENT_FIELDS_MEANT.get(field)
    return meant(config) if meant and value in ("", None) else value


def config_key(record: dict, ignored: tuple[str, ...] = IGNORED_FIELDS) -> tuple:
    """What makes two rows the same configuration: every config field except `ignored`, as sorted items."""
    config = record.get("config") or {}
    return tuple(sorted((k, normalized(config_value(config, k))) for k in CONFIG_FIELDS if k not in ignored))


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


def env_value(record: dict, field: str):
    """A field of the row's environment. cuda_version only where the run used CUDA: rows before 2026-12-02 gave
    torch's build (13.0) on CPU runs too (src/harness/environment.py)."""
    env = record.get("env") or {}
    if field == "cuda_version" and (env.get("device") or (record.get("config") or {}).get("device")) == "cpu":
        return None
    return env.get(field)


def distinct_values(records: list[dict], field: str, section: str = "env") -> list[str]:
    values = {str(normalized(env_value(r, field) if section == "env" else (r.get(section) or {}).get(field)))
              for r in records}
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


# ---- where the time went: two rows' --trace figures side by side ------------------------------------------------

IDLE = "idle"
TOP_KERNEL_DIFFERENCES = 10


def has_trace(record: dict) -> bool:
    """Whether a row carries --trace's per-step figures (src/instruments/trace_summary.py per_step_fields)."""
    return isinstance(record.get("trace_ms_per_step"), dict) and record.get("trace_step_ms") is not None


def trace_differences(a: dict, b: dict) -> list[tuple[str, float, float, float, float | None]]:
    """[(category, A ms, B ms, B - A, share of the step difference)] per profiled step, largest |B - A| first, idle
    among them. Categories and idle add up to the harness's step time of the profiled steps (`trace_step_ms`), so
    the shares add up to 1; None when the two steps took the same time."""
    step = b["trace_step_ms"] - a["trace_step_ms"]
    names = list(dict.fromkeys([*a["trace_ms_per_step"], *b["trace_ms_per_step"]]))
    rows = [(name, a["trace_ms_per_step"].get(name, 0.0), b["trace_ms_per_step"].get(name, 0.0)) for name in names]
    rows.append((IDLE, a.get("trace_idle_ms_per_step") or 0.0, b.get("trace_idle_ms_per_step") or 0.0))
    out = [(name, x, y, y - x, (y - x) / step if step else None) for name, x, y in rows]
    return sorted(out, key=lambda row: -abs(row[3]))


def phase_category_differences(a: dict, b: dict, n: int) -> list[tuple[str, str, float, float, float]]:
    """[(phase, category, A ms, B ms, B - A)] per profiled step: the n cells of phase x category that differ most
    (cells that do not differ left out)."""
    pa, pb = a.get("trace_phase_ms_per_step") or {}, b.get("trace_phase_ms_per_step") or {}
    cells = {(phase, name) for side in (pa, pb) for phase, by in side.items() for name in by}
    rows = [(phase, name, pa.get(phase, {}).get(name, 0.0), pb.get(phase, {}).get(name, 0.0)) for phase, name in cells]
    differ = [(p, c, x, y, y - x) for p, c, x, y in rows if y != x]
    return sorted(differ, key=lambda row: (-abs(row[4]), row[0], row[1]))[:n]


def _kernels_by_name(record: dict) -> tuple[dict[str, float], float | None]:
    """({kernel name: ms per step}, the bound below which a kernel not listed lies: None when the list holds every
    kernel, which it does when its times add up to the busy time)."""
    kernels: dict[str, float] = {}
    for kernel in record.get("trace_top_kernels") or []:
        kernels[kernel["name"]] = kernels.get(kernel["name"], 0.0) + kernel["ms_per_step"]
    busy = sum((record.get("trace_ms_per_step") or {}).values())
    listed = [k["ms_per_step"] for k in record.get("trace_top_kernels") or []]
    whole = abs(sum(listed) - busy) <= 1e-9 * max(busy, 1e-30)
    return kernels, None if whole or not listed else min(listed)


def kernel_differences(a: dict, b: dict, n: int = TOP_KERNEL_DIFFERENCES):
    """[(kernel, A ms, B ms, B - A, bound)] per profiled step for the n kernels whose times differ most, by name.

    A row keeps only its largest kernels, so a kernel one side did not list took less than that side's smallest
    listed one: its ms is then None and `bound` says which way B - A is bounded ("<" or ">"), B - A being
    computed with that smallest listed time; bound is "" where both times are known (or a list holds every kernel,
    so an absent kernel ran 0 ms)."""
    ka, bound_a = _kernels_by_name(a)
    kb, bound_b = _kernels_by_name(b)
    rows = []
    for name in dict.fromkeys([*ka, *kb]):
        x, y = ka.get(name), kb.get(name)
        if x is None and bound_a is not None:
            rows.append((name, None, y, y - bound_a, ">"))  # A ran less than bound_a: B - A exceeds this
        elif y is None and bound_b is not None:
            rows.append((name, x, None, bound_b - x, "<"))
        else:
            rows.append((name, x or 0.0, y or 0.0, (y or 0.0) - (x or 0.0), ""))
    return sorted(rows, key=lambda row: -abs(row[3]))[:n]


def host_wait_differences(a: dict, b: dict) -> list[tuple[str, float, float]]:
    """[("call in op", A calls, B calls)] per profiled step of the host waits (trace_summary.py) whose counts
    differ, most different first; empty where they match or a row predates the field."""
    if "trace_host_waits" not in a or "trace_host_waits" not in b:
        return []
    counts = lambda r: {f"`{w['call']}` in `{w['op']}`": w["calls_per_step"] for w in r["trace_host_waits"]}
    ca, cb = counts(a), counts(b)
    rows = [(key, ca.get(key, 0.0), cb.get(key, 0.0)) for key in dict.fromkeys([*ca, *cb])]
    return sorted((row for row in rows if row[1] != row[2]), key=lambda row: -abs(row[2] - row[1]))


def split_on(records: list[dict], field: str) -> tuple[tuple, list[dict], list[dict]]:
    """((A's value, B's value), A's rows, B's rows) of one file whose rows hold exactly two values of `field`: A is
    the value of its first row. Raises ValueError naming the values otherwise."""
    value = lambda r: normalized(config_value(r.get("config") or {}, field))
    values = list(dict.fromkeys(value(r) for r in records))
    if len(values) != 2:
        raise ValueError(f"--pair_on {field} with one file needs rows of exactly two {field} values, it has "
                         f"{len(values)} ({', '.join(map(str, values))}); give two files to compare")
    return tuple(values), [r for r in records if value(r) == values[0]], [r for r in records if value(r) == values[1]]
