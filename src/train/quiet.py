"""Silence torch's log lines that read like our failure on a machine without CUDA, where they report nothing wrong.

torch.compile on CPU builds C++ through torch.utils.cpp_extension, whose import looks for a CUDA toolkit and, with a
CUDA build of torch, an nvcc on the PATH and no driver, warns "No CUDA runtime is found, using CUDA_HOME=...": on a
CPU run there is no CUDA runtime to find. Only that logger, only without CUDA, and only when the user has not
asked for it through TORCH_LOGS (torch's own switch).
"""

import logging
import os

import torch


def quiet_cpu_compile_logs() -> None:
    if torch.cuda.is_available() or "cpp_extension" in os.environ.get("TORCH_LOGS", ""):
        return
    logger = logging.getLogger("torch.utils.cpp_extension")
    if logger.level == logging.NOTSET:  # a level someone set on purpose stays
        logger.setLevel(logging.ERROR)
