"""How a record is named in tables and figures: which config fields vary across a sweep, and their labels."""

from src.harness.results import CONFIG_FIELDS
from src.reports.compare import gpu_label, normalized

SIZE_FIELDS = ("size", "d_model", "d_ff", "num_heads", "num_layers")  # the size name stands for the rest
# Config fields that name outputs or the device's peak (see compare.IGNORED_FIELDS), never a series to plot
NOT_A_VARIANT = ("trace", "memory_snapshot", "peak_tflops")



def is_ok(record: dict) -> bool:
    return record.get("status") == "ok"


def short_status(record: dict) -> str:
    status = str(record.get("status") or "no status")
    return "OOM" if status == "OOM" else status.split(":")[0]


def varying_fields(records: list[dict]) -> list[str]:
    """Config fields with more than one value in `records`, size-defining fields left out."""
    def values(field):
        return {str(normalized((r.get("config") or {}).get(field))) for r in records}
    return [f for f in CONFIG_FIELDS if f not in SIZE_FIELDS + NOT_A_VARIANT and len(values(f)) > 1]


def field_label(field: str, value) -> str:
    if field == "size":
        return str(value)
    if field == "context_length":
        return f"ctx {value}"
    if field == "batch_size":
        return f"batch {value}"
    if field == "compile":
        return "compiled" if value in (True, "True") else "eager"
    if field == "recipe":
        return str(value) if value else "no recipe"
    if field in ("precision", "attention", "mode"):
        return str(value)
    return f"{field} {value}"


def says_nothing(field: str, config: dict) -> bool:
    """A field whose value tells nothing in a row's name: unset (an fp8 recipe on a bf16 row), or as many k/v heads
    as heads, which is plain multi-head attention."""
    value = config.get(field)
    return value is None or value == "" or (field == "num_kv_heads" and value in (0, config.get("num_heads")))


def config_label(record: dict, fields: list[str]) -> str:
    config = record.get("config") or {}
    return ", ".join(field_label(f, config.get(f)) for f in fields if f == "size" or not says_nothing(f, config))


def sort_key(config_values: tuple):
    # numbers sort as numbers (ctx 128 before 1024), the rest as text
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in config_values)


def size_order(records: list[dict]) -> list[str]:
    """Size names from smallest to largest model (parameter count, else d_model x layers)."""
    weight = {}
    for r in records:
        c = r.get("config") or {}
        weight[c.get("size")] = r.get("parameters") or (c.get("d_model") or 0) * (c.get("num_layers") or 0)
    return sorted(weight, key=lambda s: (weight[s], str(s)))


def distinct(records: list[dict], fields: list[str]) -> list[tuple]:
    keys = {tuple((r.get("config") or {}).get(f) for f in fields) for r in records}
    return sorted(keys, key=sort_key)


def find(records: list[dict], **config) -> dict | None:
    for r in records:
        if all((r.get("config") or {}).get(k) == v for k, v in config.items()):
            return r
    return None


def subtitle(records: list[dict]) -> str:
    """GPU, then the options that are the same for every row (precision first)."""
    parts = [gpu_label(records)]
    varying = varying_fields(records)
    for field in ("precision", "mode", "batch_size", "attention", "compile"):
        if field not in varying:
            parts.append(field_label(field, (records[0].get("config") or {}).get(field)))
    if "precision" in varying:
        parts.insert(1, "precision: " + ", ".join(str(v[0]) for v in distinct(records, ["precision"])))
    return " | ".join(parts)
