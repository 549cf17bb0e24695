"""Fixtures for the explorer tests: a small two-date Mars index, a served app, a headless Chromium.

The constants and helpers they build on (dates, the landmark catalogue, the server launcher, page
helpers) are in tests/explorer_testkit.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import explorer_testkit as kit
import pytest


def _lookalike(*args: str, env: dict) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike", *args], env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(f"lookalike {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


@pytest.fixture(scope="session")
def explorer_env() -> dict:
    data = kit.data_dir()
    if not (data / "mars_8k.jpg").is_file():
        pytest.skip(f"real data not found in {data} (set LOOKALIKE_DATA)")
    return dict(os.environ, LOOKALIKE_DATA=str(data))


@pytest.fixture(scope="session")
def explorer_index(tmp_path_factory, explorer_env) -> Path:
    """Mars zones 30N, 31N (2010) + 32N (2015, appended), 64-bit codes: 138 tiles, ~20 s."""
    out = tmp_path_factory.mktemp("explorer") / "mars_small"
    _lookalike(
        "index",
        "mars_8k",
        "--zones",
        "30N,31N",
        "--bits",
        "64",
        "--time",
        kit.FIRST_DATE,
        "--out",
        str(out),
        env=explorer_env,
    )
    _lookalike(
        "index",
        "mars_8k",
        "--zones",
        "32N",
        "--bits",
        "64",
        "--time",
        kit.SECOND_DATE,
        "--append",
        "--out",
        str(out),
        env=explorer_env,
    )
    from lookalike.indexer.catalogue import attach_to_index
    from lookalike.indexer.store import open_index

    attach_to_index(out, kit.fixture_landmarks(open_index(out).tiles))
    return out


@pytest.fixture(scope="session")
def explorer_url(explorer_index, explorer_env):
    proc, url = kit.start_server(explorer_index, explorer_env)
    yield url
    kit.stop_server(proc)


@pytest.fixture(scope="session")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(kit.CHROMIUM).exists():
        pytest.skip(f"{kit.CHROMIUM} is missing (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=kit.CHROMIUM, headless=True, args=kit.CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


SCENE_INDEXES = {  # folder under data/scenes, files, extra build options (Python API keywords)
    "hirise_cubes": ("mars_hirise_red_25cm", "*.cub", {}),
    "hirise5m": ("mars_hirise_colour_5m", "*.tif", {}),
    "naip": ("earth_naip_5m_2009_2020", "*.tif", {"gsd": 10.0}),  # 10 years of one quarter quad
}
LANDMARK_COLLECTIONS = {"hirise5m"}  # catalogued by the shipped HiRISE classifier, at its scale


def _build(out: Path, rasters: list[str], env: dict, **options) -> None:
    """``build_index`` in a process of its own (as ``lookalike index`` runs it)."""
    script = (
        "import sys, json; from lookalike.workflows.indexing import build_index; "
        "build_index(sys.argv[1], rasters=json.loads(sys.argv[2]), progress=False, "
        "**json.loads(sys.argv[3]))"
    )
    import json

    proc = subprocess.run(
        [sys.executable, "-c", script, str(out), json.dumps(rasters), json.dumps(options)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building {out.name} failed:\n{proc.stderr[-2000:]}")


@pytest.fixture(scope="session")
def scene_indexes(tmp_path_factory, explorer_env) -> dict[str, Path]:
    """Collections of real scenes: the HiRISE 0.25 m before/after cubes, the 5 m HiRISE colour
    COG (Mars) and ten NAIP years of one quarter quad (Earth, tiles at 10 m): a few minutes."""
    scenes = kit.data_dir() / "scenes"
    if not scenes.is_dir():
        pytest.skip(f"real scenes not found in {scenes}")
    root = tmp_path_factory.mktemp("scenes")
    out = {}
    for name, (folder, pattern, options) in SCENE_INDEXES.items():
        rasters = sorted(str(p) for p in (scenes / folder).glob(pattern))
        _build(root / name, rasters, explorer_env, **options)
        if name in LANDMARK_COLLECTIONS:
            _lookalike(
                "landmarks", *rasters, "--threshold", "0", "--index", str(root / name),
                "--out", str(root / f"{name}_landmarks.parquet"), env=explorer_env,
            )  # fmt: skip
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def collections_url(explorer_index, scene_indexes, explorer_env):
    """A server of the Mars mosaic zones, the Mars scenes and NAIP: two bodies."""
    proc, url = kit.start_server([explorer_index, *scene_indexes.values()], explorer_env)
    yield url
    kit.stop_server(proc)
