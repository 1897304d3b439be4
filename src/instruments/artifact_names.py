"""File names for one configuration's profiling artefacts (traces, tables, snapshots), derived from its label."""

import re

from src.spec import RunSpec


def artifact_name(spec: RunSpec) -> str:
    """The label with steps, made safe for any filesystem: "tiny ctx=128 ..." -> "tiny_ctx-128_...".

    benchmark_steps is added because it is a sweep axis the label leaves out; two configurations must never
    write over each other's files.
    """
    text = f"{spec.label} steps={spec.benchmark_steps}".replace("=", "-")
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")
