"""The conda environment file and the LICENSE agree with ``pyproject.toml``."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def conda_requirements() -> dict[str, Requirement]:
    """Every package ``environment.yml`` installs, conda's and pip's, by normalised name."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    items: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            items += [d for d in dep["pip"] if not d.startswith("-e")]
        elif not dep.startswith(("python=", "pip")) or dep.startswith("pip:"):
            items.append(dep)
    return {normalised(r.name): r for r in map(Requirement, items)}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_environment_yml_matches_pyproject():
    wanted = {normalised(r.name): r for r in map(Requirement, pyproject()["project"]["dependencies"])}
    have = conda_requirements()
    assert sorted(wanted) == sorted(have), (
        f"missing from environment.yml: {sorted(set(wanted) - set(have))}; "
        f"not in pyproject.toml: {sorted(set(have) - set(wanted))}"
    )
    differ = {
        n: (str(wanted[n].specifier), str(have[n].specifier))
        for n in wanted
        if wanted[n].specifier != have[n].specifier
    }
    assert not differ, f"versions differ (pyproject, environment.yml): {differ}"


def test_environment_yml_installs_the_project_with_its_test_extra():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[test]" in pip


def test_license_file_is_the_declared_one():
    assert pyproject()["project"]["license"] == "BSD-3-Clause"
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
