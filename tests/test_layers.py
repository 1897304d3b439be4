"""The layering contract in pyproject.toml holds: no package imports one above it (import-linter checks it)."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_package_imports_one_above_it(monkeypatch):
    cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the dev group: uv sync installs it")
    monkeypatch.chdir(REPO)
    assert cli.lint_imports(config_filename="pyproject.toml", no_cache=True) == 0  # 0: every contract kept


def test_the_contract_catches_an_upward_import(tmp_path, monkeypatch):
    """A model module that imports the harness must break the contract: the check can fail."""
    cli = pytest.importorskip("importlinter.cli")
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO, "src"), copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "pyproject.toml"), copy / "pyproject.toml")
    with open(copy / "src" / "model" / "upward.py", "w") as f:
        f.write("from src.harness import results  # noqa: F401\n")
    monkeypatch.chdir(copy)
    monkeypatch.syspath_prepend(str(copy))
    for name in [m for m in __import__("sys").modules if m == "src" or m.startswith("src.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    assert cli.lint_imports(config_filename="pyproject.toml", no_cache=True) == 1
