"""The environment every row carries: the host's load beside the versions, and no CUDA version for a CPU run."""

import subprocess
import sys

import torch

from src.harness import environment
from src.harness.environment import collect_environment, host_load


def test_a_cpu_row_names_no_cuda_runtime_but_keeps_the_build():
    env = collect_environment("cpu")
    assert env["cuda_version"] == ""  # a CPU run used no CUDA, whatever torch was built for
    assert env["torch_cuda_build"] == (torch.version.cuda or "")


def test_the_row_records_the_load_and_the_cores_the_run_needs():
    env = collect_environment("cpu")
    assert env["cpu_count"] >= 1 and env["cores_needed"] == torch.get_num_threads()
    assert env["load_average_1m"] >= 0 and env["load_average_5m"] >= 0
    assert env["other_cpu_cores"] >= 0 and isinstance(env["busiest_processes"], str)
    assert all(not isinstance(v, (list, dict)) for v in env.values())  # each one CSV cell


def test_a_busy_process_is_named_among_the_busiest(monkeypatch):
    monkeypatch.setattr(environment, "BUSIEST_SHOWN", 10_000)  # every process that used CPU in the sample
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        load = host_load(sample_s=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert f"{spinner.pid} python" in load["busiest_processes"] and load["other_cpu_cores"] > 0
