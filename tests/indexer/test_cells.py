"""Cell keys (``indexer.cells``): the rows they give for a point or a box hold every centre a
pass over all of them would find, at the poles and across 180 degrees too."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.errors import IndexCorruptError
from lookalike.indexer.cells import Cells, cell_level, on_the_globe, write_cells
from lookalike.indexer.filter_columns import FilterColumns


def _centres(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centres spread over the sphere, crowded at the poles and along 180 degrees, a few missing."""
    rng = np.random.default_rng(seed)
    lon = np.r_[
        rng.uniform(-180, 180, n), rng.uniform(-180, 180, 500), rng.choice([-180.0, 180.0, 179.99], 300)
    ]
    lat = np.r_[
        np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(88, 90, 500), rng.uniform(-5, 5, 300)
    ]
    lat[[0, 77]] = [90.0, -90.0]
    lon[5], lat[9] = np.nan, np.nan
    return lon, lat


def _angle(lon, lat, plon, plat) -> np.ndarray:
    y, x, py, px = map(np.radians, (lat, lon, plat, plon))
    cos = np.sin(y) * math.sin(py) + np.cos(y) * math.cos(py) * np.cos(x - px)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@pytest.mark.parametrize("reach_deg", [0.3, 2.0, 11.0])
def test_rows_near_a_point_hold_every_centre_within_reach(tmp_path, reach_deg):
    lon, lat = _centres()
    write_cells(tmp_path / "c.npy", lon, lat, math.radians(reach_deg))
    cells = Cells(tmp_path / "c.npy", len(lon))
    assert 180.0 / 2**cells.level >= reach_deg > 90.0 / 2**cells.level or cells.level == 0
    rng = np.random.default_rng(1)
    points = [(0.0, 89.9), (10.0, -89.5), (179.9, 0.0), (-180.0, 3.0), (180.0, -2.0), (45.0, 90.0)]
    points += list(zip(rng.uniform(-180, 180, 40), rng.uniform(-90, 90, 40)))
    for plon, plat in points:
        near = cells.rows_near(plon, plat, reach_deg)
        within = np.flatnonzero(_angle(lon, lat, plon, plat) <= reach_deg)
        assert set(within) <= set(near), (plon, plat)
        assert len(near) == len(set(near))  # no row twice
        assert len(near) < len(lon) / 3 or abs(plat) + reach_deg > 80  # a few cells, not all


def test_rows_in_a_box_hold_every_centre_in_it(tmp_path):
    lon, lat = _centres(seed=2)
    write_cells(tmp_path / "c.npy", lon, lat, math.radians(1.5))
    cells = Cells(tmp_path / "c.npy", len(lon))
    columns = FilterColumns(len(lon), None, (), None, (), None, lon, lat, None)
    rng = np.random.default_rng(3)
    boxes = [(170.0, -10.0, -170.0, 10.0), (-180.0, -90.0, 180.0, 90.0), (179.99, -6.0, 180.0, 6.0)]
    boxes += [(-20.0, 85.0, 40.0, 90.0), (120.0, -30.0, 100.0, 30.0), (-180.0, 0.0, -179.0, 1.0)]
    for _ in range(40):
        w, e = rng.uniform(-180, 180, 2)
        s, n = np.sort(rng.uniform(-90, 90, 2))
        boxes.append((w, s, e, n))
    for box in boxes:
        inside = np.flatnonzero(columns.in_box(*box))
        assert set(inside) <= set(cells.rows_in(*box)), box


def test_the_level_fits_the_reach_and_bad_files_are_refused(tmp_path):
    assert cell_level(math.radians(180.0)) == 0 and cell_level(0.0) == cell_level(1e-12) == 24
    assert 180.0 / 2 ** cell_level(math.radians(0.7)) >= 0.7
    assert on_the_globe(np.array([-180.0, np.nan]), np.array([90.0, 0.0]))
    assert not on_the_globe(np.array([190.0]), np.array([0.0]))
    lon, lat = _centres(100)
    write_cells(tmp_path / "c.npy", lon, lat, 0.01)
    with pytest.raises(IndexCorruptError, match="cell keys"):
        Cells(tmp_path / "c.npy", len(lon) + 1)
    (tmp_path / "c.npy").write_bytes(b"not a cell file")
    with pytest.raises(IndexCorruptError, match="readable"):
        Cells(tmp_path / "c.npy", len(lon))


def test_a_box_through_the_cells_keeps_the_rows_a_pass_keeps(tmp_path):
    from lookalike.indexer.search import box_mask

    lon, lat = _centres(seed=4)
    write_cells(tmp_path / "c.npy", lon, lat, math.radians(0.8))
    cells = Cells(tmp_path / "c.npy", len(lon))
    columns = FilterColumns(len(lon), None, (), None, (), None, lon, lat, None)
    rng = np.random.default_rng(5)
    boxes = [(170.0, -10.0, -170.0, 10.0), (-200.0, -10.0, -170.0, 10.0), (200.0, -95.0, -170.0, 95.0)]
    boxes += [(-180.0, -90.0, 180.0, 90.0), (10.0, 20.0, 30.0, 10.0), (179.99, -6.0, 180.0, 6.0)]
    boxes += [tuple(rng.uniform(-180, 180, 2)) + tuple(np.sort(rng.uniform(-90, 90, 2))) for _ in range(30)]
    for w, s, e, n in boxes:
        expected = columns.in_box(w, s, e, n)
        np.testing.assert_array_equal(box_mask(columns, (w, s, e, n), cells), expected)
    assert box_mask(columns, (0, 0, 10, 10), cells).sum() > 10
