"""The README's commands run as written after its two set-up commands: through `uv run`, from the repository root,
naming modules and scripts that exist (issue 21: `python -m ...` failed outside an activated environment)."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md")).read()
# The one command written for another set-up on purpose: a GPU node without uv whose python3 has the dependencies.
OTHER_SETUP = "runs unchanged as `python3 -m src.profiling.benchmark ...` from the repository root"
CI = "bash .ci/run"  # CI's script: it installs uv when missing, then runs `uv run pytest`


LAUNCHERS = ("uv", "python", "python3", "bash", "torchrun", "nsys")


def commands() -> list[str]:
    """Every line of a code block, and every inline `...`, that starts with a program that runs our code."""
    blocks = re.findall(r"```\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    prose = re.sub(r"```\n.*?```", "", README, flags=re.S).replace(OTHER_SETUP, "")
    lines += re.findall(r"`([^`]+)`", prose)
    return [line for line in lines if line.split(" ")[0] in LAUNCHERS]


def test_every_command_goes_through_uv_run():
    found = commands()
    assert len(found) > 30
    assert [c for c in found if not c.startswith(("uv run ", "uv sync")) and c not in ("uv run", CI)] == [], \
        "these fail outside an activated environment"


def test_every_module_and_script_named_exists():
    for command in commands():
        for module in re.findall(r"-m (src\.[\w.]+)", command):
            assert importlib.util.find_spec(module) is not None, command
        for script in re.findall(r"(scripts/[\w.]+)", command):
            assert os.path.exists(os.path.join(REPO, script)), command


def test_the_readme_says_where_to_run_them():
    setup = README.split("## Set-up")[1].split("\n## ")[0]
    assert "from the repository root" in setup and "No module named 'src'" in setup


def test_every_gpu_script_checks_for_cuda_first():
    for name in sorted(os.listdir(os.path.join(REPO, "scripts"))):
        if name.endswith(".sh") and name != "need_cuda.sh":
            text = open(os.path.join(REPO, "scripts", name)).read()
            assert f"need_cuda scripts/{name}" in text, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_a_gpu_script_refuses_in_one_line_without_cuda(tmp_path):
    # before the check, `uv run bash scripts/gpu_fast_path.sh OUT` on a CPU started 2.7B train at context 1024
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "LMBENCH_SKIP_CUDA_CHECK"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"  # python3 as under `uv run`
    result = subprocess.run(["bash", "scripts/gpu_fast_path.sh", str(out)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["scripts/gpu_fast_path.sh: needs a CUDA GPU; torch finds none"]
    assert not out.exists()
