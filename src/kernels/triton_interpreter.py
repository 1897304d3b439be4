"""Whether Triton kernels run under its CPU interpreter: TRITON_INTERPRET, which must be set before any kernel is
defined (tests/conftest.py sets it when there is no GPU). Importing this costs no Triton import."""

import os


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")
