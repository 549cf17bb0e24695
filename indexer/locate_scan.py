"""The tile under a point in a table too large for footprint trees.

``locate.FootprintLocator`` makes every footprint a shapely polygon in an STR tree: about a
kilobyte a tile, tens of gigabytes at a hundred million tiles. ``ScanLocator`` keeps nothing per
tile: one parallel pass over the index's mapped centres (``FilterColumns.lon``/``lat``) finds the
tiles whose centre lies within the largest footprint's reach of the point, and those are tested
nearest first, a few hundred at a time, by a ``FootprintLocator`` over just their rows. The
answer is the same tile (nearest centre among the footprints holding the point, ties to the
lower row): the first batch holding the point holds the nearest such centre.

Where the index has cell keys (``indexer.cells``, written with every index since they were
introduced) the rows near the point come from binary searches of them instead: O(log n) plus
the rows of the point's cells, 0.07 s at a hundred million tiles against 0.2-0.3 s for the pass
(a latitude test per row, trigonometry only inside the band) that older indexes still take.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pandas as pd

from lookalike.indexer.cells import Cells
from lookalike.indexer.filter_columns import FilterColumns, footprint_reach
from lookalike.indexer.locate import FootprintLocator, centre_order
from lookalike.indexer.tile_table import TileTable

CORNERS = tuple(f"{axis}{i}" for i in range(4) for axis in ("lon", "lat"))
FIRST_BATCH = 256  # candidates tested at once; the batch doubles while none holds the point
LAST_BATCH = 1 << 16
CHUNK_SLOTS = 4096  # rows near a point each chunk of the scan can hold before a second pass


class ScanLocator:
    """``rows_under`` of ``FootprintLocator`` for a table read through ``table.take``; with the
    index's ``cells`` the rows near a point come from a few binary searches of its cell keys
    (O(log n)), without them from a pass over every centre."""

    def __init__(self, table: TileTable, columns: FilterColumns, cells: Cells | None = None) -> None:
        self.table, self.columns, self.cells = table, columns, cells
        if not all(c in table for c in CORNERS):
            self.reach = -1.0  # no footprints: no tile is under any point
        else:
            self.reach = columns.reach if columns.reach is not None else table_reach(table)

    def rows_under(self, lon: np.ndarray, lat: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """Row of the tile under each point (-1 if none), among the rows ``keep`` (all when None)."""
        lon, lat = np.atleast_1d(np.asarray(lon, float)), np.atleast_1d(np.asarray(lat, float))
        return np.array([self.row_under(x, y, keep) for x, y in zip(lon, lat)], np.int64)

    def row_under(self, lon: float, lat: float, keep: np.ndarray | None = None) -> int:
        if self.reach < 0 or not (math.isfinite(lon) and math.isfinite(lat)):
            return -1
        rows = self.near(lon, lat, keep)
        if len(rows) == 0:
            return -1
        clat, clon = np.radians(self.columns.lat[rows]), np.radians(self.columns.lon[rows])
        order = centre_order(clat, clon, math.radians(lat), math.radians(lon))
        rows = rows[np.lexsort((rows, order))]
        start, size = 0, FIRST_BATCH
        while start < len(rows):
            batch = rows[start : start + size]
            found = int(FootprintLocator(self.table.take(batch)).rows_under([lon], [lat])[0])
            if found >= 0:
                return int(batch[found])
            start, size = start + size, min(2 * size, LAST_BATCH)
        return -1

    def near(self, lon: float, lat: float, keep: np.ndarray | None = None) -> np.ndarray:
        """Rows whose centre is within the reach of (lon, lat), in row order."""
        reach_deg = math.degrees(self.reach) + 1e-9
        if self.cells is not None:
            return self._near_by_cells(lon, lat, reach_deg, keep)
        args = (
            self.columns.lon,
            self.columns.lat,
            math.radians(lon),
            math.radians(lat),
            lat,
            reach_deg,
            math.cos(self.reach) - 1e-12,
            np.ones(1, bool) if keep is None else keep,
            keep is not None,
        )
        chunks = max(1, min(256, len(self.columns.lon) // (1 << 18)))
        counts = np.zeros(chunks, np.int64)
        # one pass when every chunk's rows fit its slot of the buffer, a second to place them else
        buffer = np.empty(chunks * CHUNK_SLOTS, np.int64)
        _near(*args, chunks, counts, np.empty(0, np.int64), buffer, CHUNK_SLOTS)
        if counts.max() <= CHUNK_SLOTS:
            slots = (buffer[c * CHUNK_SLOTS : c * CHUNK_SLOTS + counts[c]] for c in range(chunks))
            return np.concatenate(list(slots))
        starts = np.concatenate([[0], np.cumsum(counts)])
        out = np.empty(int(starts[-1]), np.int64)
        _near(*args, chunks, counts, starts, out, 0)
        return out

    def _near_by_cells(self, lon: float, lat: float, reach_deg: float, keep: np.ndarray | None) -> np.ndarray:
        rows = np.sort(self.cells.rows_near(lon, lat, reach_deg))
        if keep is not None:
            rows = rows[keep[rows]]
        y, x = np.radians(self.columns.lat[rows]), np.radians(self.columns.lon[rows])
        plat, plon = math.radians(lat), math.radians(lon)
        cos = np.sin(y) * math.sin(plat) + np.cos(y) * math.cos(plat) * np.cos(x - plon)
        # the band test of the scan as well, so both paths keep exactly the same rows
        near = (np.abs(self.columns.lat[rows] - lat) <= reach_deg) & (cos >= math.cos(self.reach) - 1e-12)
        return rows[near]


def table_reach(table: TileTable) -> float:
    """``FilterColumns.reach`` of a table whose columns file predates it: read once, column batch
    by column batch."""
    parts = [footprint_reach(pd.DataFrame(part)) for part in table.column_batches(("lon", "lat", *CORNERS))]
    return max([p for p in parts if p is not None], default=0.0)


@numba.njit(parallel=True, cache=True, nogil=True)
def _near(lon, lat, plon, plat, lat_deg, band_deg, min_cos, keep, masked, chunks, counts, starts, out, slots):
    """Count the rows near the point chunk by chunk, and write them: from ``starts[c]`` when
    ``starts`` is given, else the first ``slots`` of each chunk from ``c * slots``."""
    n = lon.size
    step = -(-n // chunks)
    sin_p, cos_p = math.sin(plat), math.cos(plat)
    for c in numba.prange(chunks):
        at = starts[c] if starts.size else c * slots
        room = out.size - at if starts.size else slots
        found = 0
        for i in range(c * step, min(n, (c + 1) * step)):
            if not abs(lat[i] - lat_deg) <= band_deg:  # also skips a NaN centre
                continue
            if masked and not keep[i]:
                continue
            y = math.radians(lat[i])
            cos = math.sin(y) * sin_p + math.cos(y) * cos_p * math.cos(math.radians(lon[i]) - plon)
            if cos >= min_cos:
                if found < room:
                    out[at + found] = i
                found += 1
        counts[c] = found
