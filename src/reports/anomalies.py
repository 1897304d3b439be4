"""Rows that look wrong: throughput far below a smaller size's in the same sweep, or a forward slower than its backward.

Both came from real runs (issue 14, H200, bf16, ctx 1024, train, --recipe fast): large's step ran at 141 TFLOP/s
while medium's ran at 332 and xl's at 328, and large's forward (94 ms median) took longer than its own backward
(82 ms). Neither is an error, so the sweep goes on; the tool says so beside the numbers: the benchmark at the end
of the sweep (the forward/backward check also in each row's `warnings`), the report in its summary.
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


def forward_slower_than_backward(record: dict) -> str | None:
    """The warning for one row whose median forward exceeds FORWARD_OVER_BACKWARD x its median backward, else None."""
    forward, backward = record.get(stat_field("median", "forward")), record.get(stat_field("median", "backward"))
    if not is_ok(record) or not forward or not backward or (record.get("config") or {}).get("mode") == "forward":
        return None
    if forward <= FORWARD_OVER_BACKWARD * backward:
        return None
    return (f"forward ({forward * 1e3:.1f} ms median) is slower than backward ({backward * 1e3:.1f} ms), which does "
            "twice its FLOPs: look at its trace (--trace DIR) for what is not arithmetic")


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
    """Every (row, warning) of both kinds, in the order of `records`."""
    found = [(r, w) for r in records if (w := forward_slower_than_backward(r))] + throughput_dips(records)
    order = {id(r): i for i, r in enumerate(records)}
    return sorted(found, key=lambda item: order[id(item[0])])
