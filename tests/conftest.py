"""Shared fixtures: where the real data lives, one backbone and one Mars index per session, the
synthetic landmark scene and its salient regions.

Real data is read from ``../shared/data`` beside the checkout (or ``$LOOKALIKE_DATA``); tests that
need it skip with a clear reason when it is absent. Nothing is ever copied into the repository.

Fixtures live in conftest files only (this one, and tests/explorer/conftest.py for the explorer);
test modules take them by argument name and never import them. Plain helpers are in the modules
beside this file (lookalike_testkit, explorer_testkit, landmark_scene), importable by name from
every test folder because pyproject.toml puts tests/ on the path (``pythonpath``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cpu_capabilities import cpu_lines
from lookalike_testkit import run_main

# tests/conftest.py -> parents[1] is the checkout, parents[2] the folder holding it and shared/
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_report_header(config) -> list[str]:
    return cpu_lines()


def find_data_dir() -> Path | None:
    """The shared real-data folder, or None when this machine does not have it."""
    env = os.environ.get("LOOKALIKE_DATA", "").strip()
    path = Path(env).expanduser() if env else DEFAULT_DATA
    return path if (path / "mars_8k.jpg").is_file() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = find_data_dir()
    if path is None:
        pytest.skip(
            "real data not found: put the shared data folder at ../shared/data beside "
            "the checkout or set LOOKALIKE_DATA to it"
        )
    return path.resolve()


@pytest.fixture(scope="session")
def hirise_dir(data_dir) -> Path:
    path = data_dir / "hirise_v1"
    if not (path / "labels.csv").is_file():
        pytest.skip(f"{path}/labels.csv not found in the shared data folder")
    return path


@pytest.fixture(scope="session")
def backbone():
    """The shipped EfficientNet-Lite0, built once per session."""
    from lookalike.models.backbones import create_backbone

    return create_backbone()


@pytest.fixture(scope="session")
def encoder(backbone):
    """A CPU encoder around the session backbone (tiles are fed at their own size)."""
    from lookalike.indexer.encoding import Encoder

    return Encoder(backbone, device="cpu")


@pytest.fixture(scope="session")
def mars_index(tmp_path_factory, data_dir) -> Path:
    """`lookalike index mars_8k --zones 30N,31N` on the real mosaic, built once per session."""
    out = tmp_path_factory.mktemp("mars") / "index"
    code, stdout, stderr = run_main(
        ["index", "mars_8k", "--zones", "30N,31N", "--out", out], LOOKALIKE_DATA=data_dir
    )
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def scene():
    """The synthetic landmark scene (tests/landmark_scene.py), for the detector and landmark tests.

    test_sources and test_distributed define a ``scene`` of their own (a GeoTIFF), which wins there.
    """
    from landmark_scene import synthetic_scene

    return synthetic_scene()


@pytest.fixture(scope="module")
def regions(scene):
    """The detector's salient regions of the synthetic landmark scene."""
    from lookalike.models.saliency import salient_regions

    return salient_regions(scene)
