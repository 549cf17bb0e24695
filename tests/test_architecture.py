"""The package has one import root and its layers import downwards only (import-linter).

The source folders are mapped into ``lookalike`` by setuptools (``package-dir``), so the layout
that import-linter sees is assembled here as the wheel installs it: ``lookalike/indexer``,
``lookalike/models``, ... Then the contracts in pyproject.toml must hold, and a deliberate
upward import must break them (so the check cannot pass vacuously).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

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
        mapped = max(
            (p for p in mapping if package == p or package.startswith(p + ".")), key=len, default=None
        )
        source = (
            ROOT.joinpath(mapping[mapped], *parts[len(mapped.split(".")) :])
            if mapped
            else ROOT.joinpath(*parts)
        )
        target = dest.joinpath(*parts)
        target.mkdir(parents=True, exist_ok=True)
        for py in source.glob("*.py"):
            shutil.copy2(py, target / py.name)
    return dest


def _run(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(_lint_imports()), "--no-cache", str(PYPROJECT)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


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
    mapping = setup.get("package-dir", {})

    def folder(package: str) -> Path:
        root = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len, default=None)
        if root is None:
            return ROOT / package.replace(".", "/")
        return ROOT / mapping[root] / package[len(root) :].lstrip(".").replace(".", "/")

    data_packages = {p for p in setup["package-data"] if not (folder(p) / "__init__.py").is_file()}
    listed = set(setup["packages"]) - data_packages
    found = {
        "lookalike." + p.parent.relative_to(ROOT / "lookalike").as_posix().replace("/", ".")
        for p in (ROOT / "lookalike").glob("*/__init__.py")
    } | {"lookalike"}
    for package, folder in mapping.items():
        assert (ROOT / folder / "__init__.py").is_file(), package
        found |= {
            package
            + (
                "." + p.parent.relative_to(ROOT / folder).as_posix().replace("/", ".")
                if p.parent != ROOT / folder
                else ""
            )
            for p in (ROOT / folder).rglob("__init__.py")
        }
    assert found == listed


SOURCE_FOLDERS = ("explorer", "indexer", "models", "data", "lookalike")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _python_files() -> list[Path]:
    return sorted(p for folder in SOURCE_FOLDERS for p in (ROOT / folder).rglob("*.py"))


def test_modules_and_functions_stay_small():
    """No module of 600 lines or more, and no function (nested ones counted in their parent)
    over 80 lines, from ``def`` to its last line."""
    files = _python_files()
    assert files, "no Python files found in the source folders"
    offenders = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT).as_posix()
        lines = len(source.splitlines())
        if lines >= MAX_MODULE_LINES:
            offenders.append(f"{where}: module of {lines} lines (limit: under {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source, filename=where)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offenders.append(
                        f"{where}:{node.lineno}: {node.name} is {length} lines (limit: {MAX_FUNCTION_LINES})"
                    )
    assert not offenders, "too large:\n" + "\n".join(offenders)
