"""The package has one import root and its layers import downwards only (import-linter).

The source folders are mapped into ``lookalike`` by setuptools (``package-dir``), so the layout
that import-linter sees is assembled here as the wheel installs it: ``lookalike/indexer``,
``lookalike/models``, ... Then the contracts in pyproject.toml must hold, and a deliberate
upward import must break them (so the check cannot pass vacuously).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def _lint_imports() -> Path:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.fail("lint-imports is missing: install the test extras (pip install -e '.[test]')")
    return exe


def _assemble(dest: Path) -> Path:
    """Copy the package's Python files to ``dest`` in their installed layout."""
    setup = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    mapping = setup.get("package-dir", {})
    for package in setup["packages"]:
        parts = package.split(".")
        # the folder of a package: its own mapping, else its nearest mapped parent's plus the rest
        mapped = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len,
                     default=None)
        source = ROOT.joinpath(mapping[mapped], *parts[len(mapped.split(".")):]) if mapped \
            else ROOT.joinpath(*parts)
        target = dest.joinpath(*parts)
        target.mkdir(parents=True, exist_ok=True)
        for py in source.glob("*.py"):
            shutil.copy2(py, target / py.name)
    return dest


def _run(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(_lint_imports()), "--no-cache", str(PYPROJECT)], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return _assemble(tmp_path_factory.mktemp("layout"))


def test_layers_are_kept(tree):
    result = _run(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tree, tmp_path):
    broken = _assemble(tmp_path / "broken")
    hashing = broken / "lookalike" / "models" / "hashing.py"
    hashing.write_text(hashing.read_text() + "\nfrom lookalike.indexer import search  # upward\n")
    result = _run(broken)
    assert result.returncode != 0
    assert "lookalike.models is not allowed to import lookalike.indexer" in result.stdout


def test_every_package_is_listed_and_mapped():
    """A folder with an __init__.py that pyproject does not list would be left out of the wheel;
    data packages (shipped files, no Python) are listed with their package data."""
    setup = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    data_packages = set(setup["package-data"])
    listed = set(setup["packages"]) - data_packages
    mapping = setup.get("package-dir", {})
    found = {"lookalike." + p.parent.relative_to(ROOT / "lookalike").as_posix().replace("/", ".")
             for p in (ROOT / "lookalike").glob("*/__init__.py")} | {"lookalike"}
    for package, folder in mapping.items():
        assert (ROOT / folder / "__init__.py").is_file(), package
        found |= {package + ("." + p.parent.relative_to(ROOT / folder).as_posix().replace("/", ".")
                             if p.parent != ROOT / folder else "")
                  for p in (ROOT / folder).rglob("__init__.py")}
    assert found == listed
