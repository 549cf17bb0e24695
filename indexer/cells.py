"""Tiles by where their centre lies: a sorted key of lon/lat cells, for lookups in O(log n).

The globe is cut into square cells of ``size`` degrees (180 / 2^k, the smallest such size not
below the largest footprint's reach, so every tile holding a point has its centre in the point's
cell or a neighbour). Each tile's key is its centre's cell, ``row_of_cells * nx + column``; the
file holds the keys sorted and the row of each. A box of lon/lat is a few runs of keys, one per
row of cells it spans, each found by binary search: the tiles near a clicked point (the tile
under the cursor) and the tiles of a drawn box come from reading those runs, not from a pass over
every centre.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lookalike.errors import IndexCorruptError
from lookalike.fileio import save_npy

FINEST_LEVEL = 24  # cells of 180 / 2^24 degrees (about a metre on Earth) at the finest
NO_CELL = np.iinfo(np.uint64).max  # the key of a tile without a centre: sorted last, never asked for


def cell_level(reach: float) -> int:
    """The level k of cells of 180 / 2^k degrees no smaller than ``reach`` (radians)."""
    reach_deg = math.degrees(max(reach, 0.0))
    if reach_deg <= 180.0 / 2**FINEST_LEVEL:
        return FINEST_LEVEL
    return max(0, min(FINEST_LEVEL, math.floor(math.log2(180.0 / reach_deg))))


def cell_keys(lon: np.ndarray, lat: np.ndarray, level: int) -> np.ndarray:
    """The cell key of each centre (``NO_CELL`` where it is not finite)."""
    size, ny = 180.0 / 2**level, 2**level
    nx = 2 * ny
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    finite = np.isfinite(lon) & np.isfinite(lat)
    with np.errstate(invalid="ignore"):
        iy = np.clip(np.floor((lat + 90.0) / size), 0, ny - 1)
        ix = np.floor((lon + 180.0) / size) % nx
    keys = np.full(len(lon), NO_CELL, np.uint64)
    keys[finite] = iy[finite].astype(np.uint64) * np.uint64(nx) + ix[finite].astype(np.uint64)
    return keys


def on_the_globe(lon: np.ndarray, lat: np.ndarray) -> bool:
    """Whether every finite centre lies in [-180, 180] x [-90, 90], as cell keys need (the
    index of a table that does not goes without them)."""
    return not (np.any(np.abs(lon) > 180.0) or np.any(np.abs(lat) > 90.0))  # NaN compares False


def write_cells(path: Path, lon: np.ndarray, lat: np.ndarray, reach: float) -> None:
    """Write the sorted cell keys of the centres and the row of each, then (level, n)."""
    level = cell_level(reach)
    keys = cell_keys(lon, lat, level)
    order = np.argsort(keys, kind="stable")  # ties keep row order
    table = np.empty((2, len(keys) + 1), np.uint64)
    table[0, :-1], table[1, :-1] = keys[order], order
    table[:, -1] = (level, len(keys))
    save_npy(path, table)


class Cells:
    """The cell keys of an index (``write_cells``) read through a memory map."""

    def __init__(self, path: Path, n: int):
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise IndexCorruptError(f"{path} is not a readable cell-key file ({exc})") from None
        if table.ndim != 2 or table.shape != (2, n + 1) or table.dtype != np.uint64:
            raise IndexCorruptError(
                f"{path}: cell keys of {n} tiles are 2 x {n + 1} uint64, not {table.shape}"
            )
        self.level, stored = int(table[0, n]), int(table[1, n])
        if stored != n or self.level > FINEST_LEVEL:
            raise IndexCorruptError(f"{path}: the cell keys say level {self.level} and {stored} tiles")
        self.keys, self.rows = table[0, :n], table[1, :n]
        self.size = 180.0 / 2**self.level
        self.ny, self.nx = 2**self.level, 2 ** (self.level + 1)

    def _cell_row(self, lat: float) -> int:
        return int(np.clip(math.floor((lat + 90.0) / self.size), 0, self.ny - 1))

    def rows_spanned(self, south: float, north: float) -> int:
        """How many rows of cells the latitudes from ``south`` to ``north`` span."""
        return max(0, self._cell_row(north) - self._cell_row(south) + 1)

    def runs(self, west: float, south: float, east: float, north: float) -> list[tuple[int, int]]:
        """Slices of the sorted keys holding every centre in the box (and others of its cells);
        ``west > east`` is a box across 180°."""
        iy0, iy1 = self._cell_row(south), self._cell_row(north)
        ix0, ix1 = (int(math.floor((v + 180.0) / self.size)) % self.nx for v in (west, east))
        spans = [(ix0, ix1)] if ix0 <= ix1 and west <= east else [(ix0, self.nx - 1), (0, ix1)]
        if east - west >= 360.0:
            spans = [(0, self.nx - 1)]
        bounds = np.array(
            [(iy * self.nx + a, iy * self.nx + b + 1) for iy in range(iy0, iy1 + 1) for a, b in spans],
            np.uint64,
        ).reshape(-1, 2)
        starts = np.searchsorted(self.keys, bounds[:, 0], "left")
        ends = np.searchsorted(self.keys, bounds[:, 1], "left")
        return [(int(s), int(e)) for s, e in zip(starts, ends) if e > s]

    def rows_in(self, west: float, south: float, east: float, north: float) -> np.ndarray:
        """Rows whose centre's cell meets the box (a superset of those whose centre is in it)."""
        runs = self.runs(west, south, east, north)
        if not runs:
            return np.zeros(0, np.int64)
        return np.concatenate([np.asarray(self.rows[s:e], np.int64) for s, e in runs])

    def rows_near(self, lon: float, lat: float, reach_deg: float) -> np.ndarray:
        """Rows whose centre's cell meets the lon/lat box around (lon, lat) that holds every point
        within ``reach_deg`` of it (the whole band of latitudes where that circle holds a pole)."""
        south, north = lat - reach_deg, lat + reach_deg
        widest = max(abs(south), abs(north))
        ratio = math.sin(math.radians(min(reach_deg, 90.0))) / max(
            math.cos(math.radians(min(widest, 90.0))), 1e-300
        )
        if widest >= 90.0 or reach_deg >= 90.0 or ratio >= 1.0:
            return self.rows_in(-180.0, south, 180.0, north)
        half = math.degrees(math.asin(ratio))  # the widest the circle is in longitude (at ``widest``)
        return self.rows_in(_wrap(lon - half), south, _wrap(lon + half), north)


def _wrap(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0
