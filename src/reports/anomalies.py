"""Rows that look wrong: throughput far below a smaller size's, a forward slower than its backward, a phase longer
than the whole it is part of, scaling efficiency well above 1, or a host too busy to give the run its cores.

The first two came from real runs (issue 14, H200, bf16, ctx 1024, train, --recipe fast): large's step ran at 141
TFLOP/s while medium's ran at 332 and xl's at 328, and large's forward (94 ms median) took longer than its own
backward (82 ms). The last three from a CPU host with other work on it (issue 21: load 1.5-5 on 2 cores): the
attention benchmark printed a forward slower than its own forward+backward, and the report a scaling efficiency
of 268%. None is an error, so the sweep goes on; the tool says so beside the numbers: the benchmark at the end of
the sweep (the forward/backward check also in each row's `warnings`), the report in its summary, the attention
benchmark in its rows' `warnings`.
"""

import math

from src.harness.record import stat_field
from src.harness.results import CONFIG_FIELDS
from src.reports.labels import NOT_A_VARIANT, SIZE_FIELDS, is_ok
from src.reports.compare import normalized

# At fixed settings a larger model fills the GPU at least as well (bigger matmuls), so its TFLOP/s should not fall
# much below a smaller size's. Neighbouring sizes in a healthy sweep differ by a few percent (medium 332 against
# xl 328 TFLOP/s above); the anomalous rows were 0.43 (large, 141) and 0.74 (xl in a second run, 245) of medium's.
THROUGHPUT_DIP = 0.75
# Backward does twice the forward's FLOPs (src/model/flops.py), so a forward slower than backward runs at under
# half backward's rate: something other than arithmetic (host overhead, recompilation, a slow kernel) holds it.
FORWARD_OVER_BACKWARD = 1.0
# Each rank of a data-parallel or sharded step does the world-size-1 step's work plus its communication; the one
# real gain is that a sharded optimizer (zero1, fsdp) steps 1/n of the parameters. AdamW took 24% of xl's fp32
# train step on the H100 (60 of 244 ms, docs/results), so sharding it away entirely gives at most 1 / 0.76 = 1.32.
# Above 1.5 one of the two rows is off; the 268% came from a world-size-1 row measured on a busy host.
EFFICIENCY_CEILING = 1.5
# The cores the other processes may use before a run's reading can suffer: /proc's 0.1 s sample resolves 0.1 core
# per process, and an idle host's kernel threads add a few hundredths.
BUSY_MARGIN_CORES = 0.5


def forward_slower_than_backward(record: dict) -> str | None:
    """The warning for one row whose median forward exceeds FORWARD_OVER_BACKWARD x its median backward, else None."""
    forward, backward = record.get(stat_field("median", "forward")), record.get(stat_field("median", "backward"))
    if not is_ok(record) or not forward or not backward or (record.get("config") or {}).get("mode") == "forward":
        return None
    if forward <= FORWARD_OVER_BACKWARD * backward:
        return None
    return (f"forward ({forward * 1e3:.1f} ms median) is slower than backward ({backward * 1e3:.1f} ms), which does "
            "twice its FLOPs: look at its trace (--trace DIR) for what is not arithmetic")


def part_longer_than_whole(parts: dict[str, float | None], whole_name: str, whole: float | None) -> list[str]:
    """A warning per part (name -> time) measured longer than the whole that contains it (`whole_name`, `whole`):
    impossible for the same work, so the two timings saw different conditions (a busy host, a clock change)."""
    if not whole or not math.isfinite(whole):
        return []
    return [f"{name} ({time * 1e3:.3g} ms) took longer than {whole_name} ({whole * 1e3:.3g} ms), which contains it: "
            "the timings saw different conditions (a busy host?); measure again" for name, time in parts.items()
            if time and math.isfinite(time) and time > whole]


def efficiency_above_one(efficiency: float | None) -> str | None:
    """The warning for a scaling efficiency above EFFICIENCY_CEILING, else None."""
    if efficiency is None or efficiency <= EFFICIENCY_CEILING:
        return None
    return (f"scaling efficiency {efficiency:.0%} is above {EFFICIENCY_CEILING:.0%}: a rank does world size 1's "
            "work (less a sharded optimizer's) plus its communication, so one of the two rows is off (was the host "
            "busy? see its environment)")


def host_busy(record: dict) -> str | None:
    """The warning for a row measured while other processes held the cores it needed, from its environment's load
    (src/harness/environment.py: `other_cpu_cores` sampled after the run, `load_average_1m` that still counts the
    run itself); None when the row has no load recorded (rows before 2026-12-02) or the host had room."""
    env = record.get("env") or {}
    needed, cpus = env.get("cores_needed"), env.get("cpu_count")
    if not isinstance(needed, (int, float)) or not isinstance(cpus, (int, float)):
        return None
    load = env.get("load_average_1m")
    others = max(env.get("other_cpu_cores") or 0, (load - needed) if isinstance(load, (int, float)) else 0)
    if cpus - others >= needed - BUSY_MARGIN_CORES:
        return None
    cpu = (env.get("device") or (record.get("config") or {}).get("device")) == "cpu"
    busiest = f" (busiest: {env['busiest_processes']})" if env.get("busiest_processes") else ""
    seen = [f"load {load:g} (this run's own {needed:g} threads included)" if isinstance(load, (int, float)) else "",
            f"{env['other_cpu_cores']:g} cores used by other processes in a sample after the run"
            if env.get("other_cpu_cores") is not None else "",
            f"busiest: {env['busiest_processes']}" if env.get("busiest_processes") else ""]
    return (f"the host was busy ({'; '.join(x for x in seen if x)}) on {cpus:g} cores; this run needs {needed:g}: "
            + ("every phase on the CPU" if cpu else "a host-bound (small) model's step")
            + " may read slower than on an idle host: measure again when it is idle")


def _settings(record: dict) -> tuple:
    """Everything but the size: rows with the same settings are neighbours along the size axis. Under a recipe the
    AdamW is left out too: the fast recipe picks it by size (fused where it replays CUDA graphs, ours above), and
    the issue's rows (medium fused, large ours) must still be neighbours."""
    config = record.get("config") or {}
    left_out = SIZE_FIELDS + NOT_A_VARIANT + (("optimizer",) if config.get("recipe") else ())
    return tuple(normalized(config.get(f)) for f in CONFIG_FIELDS if f not in left_out)


def throughput_dips(records: list[dict]) -> list[tuple[dict, str]]:
    """(row, warning) for each ok row whose TFLOP/s is below THROUGHPUT_DIP x that of a smaller size measured with
    the same settings (the smaller size with the highest TFLOP/s is named)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        tflops = r.get("tflops")
        if is_ok(r) and r.get("parameters") and isinstance(tflops, (int, float)) and math.isfinite(tflops):
            groups.setdefault(_settings(r), []).append(r)
    found = []
    for rows in groups.values():
        rows.sort(key=lambda r: r["parameters"])
        for i, r in enumerate(rows):
            smaller = [s for s in rows[:i] if s["parameters"] < r["parameters"]]
            if not smaller:
                continue
            best = max(smaller, key=lambda s: s["tflops"])
            if r["tflops"] < THROUGHPUT_DIP * best["tflops"]:
                found.append((r, f"{r['tflops']:.0f} TFLOP/s is {r['tflops'] / best['tflops']:.0%} of the smaller "
                                 f"{best['config'].get('size')}'s {best['tflops']:.0f} with the same settings; a "
                                 "larger model should run at least as fast per FLOP"))
    return found


def anomalies(records: list[dict]) -> list[tuple[dict, str]]:
    """Every (row, warning) of a benchmark sweep, in the order of `records`: a forward slower than its backward, a
    throughput dip, a busy host (scaling efficiency needs the report's pairing: src/reports/distributed.py)."""
    found = [(r, w) for r in records for check in (forward_slower_than_backward, host_busy) if (w := check(r))]
    found += throughput_dips(records)
    order = {id(r): i for i, r in enumerate(records)}
    return sorted(found, key=lambda item: order[id(item[0])])
