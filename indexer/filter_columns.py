"""The tile table's columns that search filters read, as compact numpy arrays made once per table.

A filter over the pandas table costs a pass of pandas machinery over every row at every search
(77-125 ms for a zone or date filter at 10 M tiles); over these arrays it is a few numpy
comparisons: zone and source as category codes looked up in a small table of the wanted names,
time as int64 nanoseconds, lon and lat as float64. ``Index.filter_columns`` keeps them with the
index (memory-mapped from the index's columns file); ``search.filter_mask`` reads them.

At a hundred million rows a numpy pass is itself 50-300 ms (a fancy-indexed lookup, three
comparisons of 800 MB of times), so each test is one parallel numba loop over the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

NAT = np.iinfo(np.int64).min  # pandas' int64 of a missing time
LATEST = np.iinfo(np.int64).max


@dataclass(frozen=True, eq=False)
class FilterColumns:
    """Compact filter columns of a tile table of ``n`` rows (None: the table lacks the column)."""

    n: int
    zone_codes: np.ndarray | None
    zone_names: tuple[str, ...]
    source_codes: np.ndarray | None
    source_names: tuple[str, ...]
    times: np.ndarray | None  # int64 ns since 1970 UTC, NAT where unknown
    lon: np.ndarray
    lat: np.ndarray
    # the largest angle (radians) from a tile's centre to a corner of its footprint; None where
    # unknown (columns written before it was kept, or a table without footprints)
    reach: float | None = None

    @classmethod
    def of(cls, tiles: pd.DataFrame) -> FilterColumns:
        zone_codes, zone_names = _codes(tiles["zone"]) if "zone" in tiles else (None, ())
        source_codes, source_names = _codes(tiles["source"]) if "source" in tiles else (None, ())
        times = None
        if "time" in tiles:
            times = pd.to_datetime(tiles["time"], utc=True).dt.as_unit("ns").array.asi8
        return cls(
            len(tiles),
            zone_codes,
            zone_names,
            source_codes,
            source_names,
            _read_only(times),
            _read_only(_centres(tiles, "lon")),
            _read_only(_centres(tiles, "lat")),
            footprint_reach(tiles),
        )

    @classmethod
    def concat(cls, parts: list[FilterColumns]) -> FilterColumns:
        """The columns of tables written one after another (batches of one table): codes are
        renumbered into one list of names, in order of first appearance."""
        if not parts:
            raise ValueError("no filter columns to join")
        zone_codes, zone_names = _join_codes([(p.zone_codes, p.zone_names) for p in parts])
        source_codes, source_names = _join_codes([(p.source_codes, p.source_names) for p in parts])
        times = None if parts[0].times is None else np.concatenate([p.times for p in parts])
        return cls(
            sum(p.n for p in parts),
            _read_only(zone_codes),
            zone_names,
            _read_only(source_codes),
            source_names,
            _read_only(times),
            _read_only(np.concatenate([p.lon for p in parts])),
            _read_only(np.concatenate([p.lat for p in parts])),
            None if any(p.reach is None for p in parts) else max(p.reach for p in parts),
        )

    def zone_count(self) -> int:
        """How many different zones the rows are in (missing zones not counted)."""
        return len(self.zones_present())

    def zones_present(self) -> list[str]:
        """The zone labels some row is in, in the order of ``zone_names``."""
        if self.zone_codes is None:
            return []
        counts = np.zeros(len(self.zone_names) + 1, np.int64)
        for start in range(0, self.n, 1 << 23):  # in blocks: no copy of a hundred million codes
            block = self.zone_codes[start : start + (1 << 23)].astype(np.int64) + 1
            counts += np.bincount(block, minlength=len(counts))
        return [name for name, count in zip(self.zone_names, counts[1:]) if count]

    def time_span(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The earliest and latest known time (UTC), None when no row has one."""
        if self.times is None or self.n == 0:
            return None
        low, high = _time_span(self.times)
        if low > high:
            return None
        return pd.Timestamp(low, unit="ns", tz="UTC"), pd.Timestamp(high, unit="ns", tz="UTC")

    def extreme_rows(self) -> np.ndarray:
        """Rows of the westmost, southmost, eastmost and northmost centres (NaN ones left out;
        none when no row has a centre)."""
        if self.n == 0:
            return np.zeros(0, np.int64)
        rows = _extreme_rows(self.lon, self.lat)
        return np.unique(rows) if (rows >= 0).all() else np.zeros(0, np.int64)

    def source_summary(self) -> pd.DataFrame:
        """Per source with placed tiles: the bounds of its tiles' centres (``west``, ``south``,
        ``east``, ``north``), its earliest known time (``first``, NaT if none) and its tile count
        (``count``), indexed by source name, in ``source_names`` order; one pass over the rows."""
        columns = ["west", "south", "east", "north", "first", "count"]
        if self.source_codes is None or not self.source_names:
            return pd.DataFrame(columns=columns)
        times = self.times if self.times is not None else np.full(0, NAT, np.int64)
        parts = _per_source(self.source_codes, self.lon, self.lat, times, len(self.source_names))
        low, high = parts[0].min(axis=0), parts[0].max(axis=0)  # chunks' bounds joined
        bounds = np.column_stack([low[:, 0], low[:, 1], high[:, 2], high[:, 3]])
        first, count = parts[1].min(axis=0), parts[2].sum(axis=0)
        out = pd.DataFrame(bounds, columns=columns[:4], index=pd.Index(self.source_names, name="source"))
        out["first"] = pd.to_datetime(np.where(first == LATEST, NAT, first), utc=True)
        out["count"] = count
        return out[count > 0]

    def zones_in(self, wanted: set[str]) -> np.ndarray:
        """Rows whose zone label is one of ``wanted``."""
        return _lookup(self.zone_codes, self.zone_names, wanted, self.n)

    def sources_in(self, wanted: set[str]) -> np.ndarray:
        """Rows whose source is one of ``wanted``."""
        return _lookup(self.source_codes, self.source_names, wanted, self.n)

    def times_within(self, start: pd.Timestamp | None, end: pd.Timestamp | None) -> np.ndarray:
        """Rows with a known time in [start, end] (either end open when None)."""
        if self.times is None:
            return np.zeros(self.n, bool)
        low = NAT + 1 if start is None else max(_nanoseconds(start), NAT + 1)
        high = np.iinfo(np.int64).max if end is None else _nanoseconds(end)
        out = np.empty(self.n, bool)
        _within(self.times, low, high, out)
        return out

    def in_box(
        self, west: float, south: float, east: float, north: float, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Whether each row's centre lies in the lon/lat box, edges included (west > east crosses
        180), as ``indexer.bbox.in_bbox``; a missing (NaN) centre is in no box. ``rows``: only
        those rows are tested (one answer each)."""
        box = (float(west), float(south), float(east), float(north))
        if rows is None:
            out = np.empty(self.n, bool)
            _in_box(self.lon, self.lat, *box, out)
            return out
        out = np.empty(len(rows), bool)
        _in_box_rows(self.lon, self.lat, np.asarray(rows, np.int64), *box, out)
        return out


def footprint_reach(tiles: pd.DataFrame) -> float | None:
    """The largest angle (radians) from a tile's centre to a corner of its footprint, over the
    tiles with a footprint (0 when none has one); None for a table without footprint columns."""
    names = [f"{axis}{i}" for i in range(4) for axis in ("lon", "lat")]
    if not {"lon", "lat", *names} <= set(tiles.columns):
        return None
    columns = [tiles[name].to_numpy(np.float64) for name in ("lon", "lat", *names)]
    return float(np.arccos(min(1.0, _min_corner_cos(*columns)))) if len(tiles) else 0.0


def _centres(tiles: pd.DataFrame, column: str) -> np.ndarray:
    """A centre coordinate column as float64; NaN (in no box or region) for tables without one,
    such as picture folders not placed on a body."""
    if column not in tiles:
        return np.full(len(tiles), np.nan)
    return tiles[column].to_numpy(np.float64)


def _nanoseconds(time: pd.Timestamp) -> int:
    """Nanoseconds since 1970 of ``time``, clamped to what int64 holds (years 1678-2261): a date
    beyond them is before or after every time a table can hold."""
    try:
        return time.as_unit("ns").value
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        return int(np.iinfo(np.int64).max) if time.year > 1970 else NAT + 1


def _codes(column: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes (-1: missing) and the names they stand for."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes, names = column.cat.codes.to_numpy(), column.cat.categories
    else:
        codes, names = pd.factorize(column)
        codes = codes.astype(_code_dtype(len(names)))
    return _read_only(np.asarray(codes)), tuple(str(name) for name in names)


Codes = tuple[np.ndarray | None, tuple[str, ...]]  # integer codes and the names they stand for


def _join_codes(parts: list[Codes]) -> Codes:
    """Codes of several parts renumbered into one tuple of names (-1 stays missing)."""
    if parts[0][0] is None:
        return None, ()
    names: dict[str, int] = {}
    joined = []
    for codes, part_names in parts:
        renumber = np.array([names.setdefault(name, len(names)) for name in part_names] + [-1], np.int64)
        joined.append(renumber[codes])
    codes = np.concatenate(joined)
    return codes.astype(_code_dtype(len(names))), tuple(names)


def _code_dtype(count: int) -> np.dtype:
    """The smallest signed integer holding codes 0..count-1 and -1."""
    for dtype in (np.int8, np.int16, np.int32):
        if count <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _lookup(codes: np.ndarray | None, names: tuple[str, ...], wanted: set[str], n: int) -> np.ndarray:
    if codes is None:
        return np.zeros(n, bool)
    table = np.array([name in wanted for name in names] + [False], bool)
    out = np.empty(n, bool)
    _pick(codes, table, out)  # a missing value's code -1 picks the final False
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _pick(codes, table, out):
    last = table.shape[0] - 1
    for i in numba.prange(codes.shape[0]):
        c = codes[i]
        out[i] = table[c if c >= 0 else last]


@numba.njit(parallel=True, cache=True, nogil=True)
def _within(times, low, high, out):
    for i in numba.prange(times.shape[0]):
        t = times[i]
        out[i] = (t >= low) & (t <= high)  # NAT (int64 min) is below every low


@numba.njit(parallel=True, cache=True, nogil=True)
def _in_box(lon, lat, west, south, east, north, out):
    crossing = west > east
    for i in numba.prange(lon.shape[0]):
        x, y = lon[i], lat[i]
        in_lon = ((x >= west) | (x <= east)) if crossing else ((x >= west) & (x <= east))
        out[i] = in_lon & (y >= south) & (y <= north)


@numba.njit(parallel=True, cache=True, nogil=True)
def _in_box_rows(lon, lat, rows, west, south, east, north, out):
    crossing = west > east
    for j in numba.prange(rows.shape[0]):
        x, y = lon[rows[j]], lat[rows[j]]
        in_lon = ((x >= west) | (x <= east)) if crossing else ((x >= west) & (x <= east))
        out[j] = in_lon & (y >= south) & (y <= north)


def _read_only(array: np.ndarray | None) -> np.ndarray | None:
    """A read-only view (the table's own data stays as it was)."""
    if array is None:
        return None
    view = array.view()
    view.flags.writeable = False
    return view


@numba.njit(parallel=True, cache=True, nogil=True)
def _time_span(times):
    chunks = max(1, min(64, times.size // (1 << 20)))
    lows, highs = np.full(chunks, LATEST), np.full(chunks, NAT)
    step = -(-times.size // chunks)
    for c in numba.prange(chunks):
        low, high = LATEST, NAT
        for i in range(c * step, min(times.size, (c + 1) * step)):
            t = times[i]
            if t != NAT:
                low, high = min(low, t), max(high, t)
        lows[c], highs[c] = low, high
    return lows.min(), highs.max()


@numba.njit(parallel=True, cache=True, nogil=True)
def _extreme_rows(lon, lat):
    """Rows of the least lon, least lat, greatest lon, greatest lat among finite centres (-1: none)."""
    chunks = max(1, min(64, lon.size // (1 << 20)))
    step = -(-lon.size // chunks)
    rows = np.full((chunks, 4), -1, np.int64)
    for c in numba.prange(chunks):
        for i in range(c * step, min(lon.size, (c + 1) * step)):
            x, y = lon[i], lat[i]
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            if rows[c, 0] < 0 or x < lon[rows[c, 0]]:
                rows[c, 0] = i
            if rows[c, 1] < 0 or y < lat[rows[c, 1]]:
                rows[c, 1] = i
            if rows[c, 2] < 0 or x > lon[rows[c, 2]]:
                rows[c, 2] = i
            if rows[c, 3] < 0 or y > lat[rows[c, 3]]:
                rows[c, 3] = i
    out = np.full(4, -1, np.int64)
    for c in range(chunks):
        for k in range(4):
            r = rows[c, k]
            if r < 0:
                continue
            value, best = (lon[r], lon[out[k]]) if k % 2 == 0 else (lat[r], lat[out[k]])
            if out[k] < 0 or (value < best if k < 2 else value > best):
                out[k] = r
    return out


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _min_corner_cos(clon, clat, lon0, lat0, lon1, lat1, lon2, lat2, lon3, lat3):
    """The smallest cosine of the angle from a tile's centre to one of its corners (1 when no
    tile has all four corners and a centre)."""
    chunks = max(1, min(64, clon.size // (1 << 18)))
    best = np.ones(chunks)
    step = -(-clon.size // chunks)
    for c in numba.prange(chunks):
        low = 1.0
        for i in range(c * step, min(clon.size, (c + 1) * step)):
            xs = (lon0[i], lon1[i], lon2[i], lon3[i])
            ys = (lat0[i], lat1[i], lat2[i], lat3[i])
            placed = np.isfinite(clon[i]) and np.isfinite(clat[i])
            for k in range(4):
                placed = placed and np.isfinite(xs[k]) and np.isfinite(ys[k])
            if not placed:
                continue
            y, x = np.radians(clat[i]), np.radians(clon[i])
            sin_y, cos_y = np.sin(y), np.cos(y)
            for k in range(4):
                cy = np.radians(ys[k])
                cos = sin_y * np.sin(cy) + cos_y * np.cos(cy) * np.cos(x - np.radians(xs[k]))
                low = min(low, cos)
        best[c] = low
    return max(-1.0, best.min())


@numba.njit(parallel=True, cache=True, nogil=True)
def _per_source(codes, lon, lat, times, n_sources):
    """Centre bounds, earliest time and count of placed rows per chunk and source code."""
    chunks = max(1, min(32, codes.size // (1 << 20)))
    step = -(-codes.size // chunks)
    bounds = np.empty((chunks, n_sources, 4))
    first = np.full((chunks, n_sources), LATEST)
    count = np.zeros((chunks, n_sources), np.int64)
    for c in numba.prange(chunks):
        bounds[c, :, 0], bounds[c, :, 1], bounds[c, :, 2], bounds[c, :, 3] = np.inf, np.inf, -np.inf, -np.inf
        for i in range(c * step, min(codes.size, (c + 1) * step)):
            s, x, y = codes[i], lon[i], lat[i]
            if s < 0 or not (np.isfinite(x) and np.isfinite(y)):
                continue
            b = bounds[c, s]
            b[0], b[1], b[2], b[3] = min(b[0], x), min(b[1], y), max(b[2], x), max(b[3], y)
            count[c, s] += 1
            if times.size and times[i] != NAT:
                first[c, s] = min(first[c, s], times[i])
    return bounds, first, count
