"""The scenes of a collection as acquisitions (one per source raster: where, when, how fine),
which of them the map draws, and which collection a click searches.

Plain functions over an index's manifest and tile table, no widgets: the state (``state``) and
the map (``map_view``, ``scene_images``) ask them. Where scenes of one place overlap in time
(one quarter quad in ten years, a before/after pair) the map draws one acquisition per place:
the latest one at or before the date chosen for the collection (the latest of all when none is
chosen), among those the date filter lets through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lookalike.indexer.locate import FootprintLocator
from lookalike.indexer.search import scans_for_tiles, tile_locator
from lookalike.indexer.store import Index

LATEST = ""  # the date choice that draws the latest acquisition of each place


@dataclass(frozen=True)
class Acquisition:
    """One source raster of a collection: its name, acquisition time (None when unknown),
    lon/lat bounds of its tiles (west, south, east, north) and ground sample distance (m/px)."""

    source: str
    time: pd.Timestamp | None
    bounds: tuple[float, float, float, float]
    gsd: float

    @property
    def date(self) -> str:
        return "" if self.time is None else f"{self.time:%Y-%m-%d}"


def acquisitions(index: Index) -> list[Acquisition]:
    """The acquisitions of an index, one per source with tiles (made once per index)."""
    return index.cached("explorer_acquisitions", lambda: _acquisitions(index))


def _acquisitions(index: Index) -> list[Acquisition]:
    if index.large:
        return _acquisitions_from_columns(index)
    tiles = index.tiles
    if len(tiles) == 0 or "source" not in tiles or "lon0" not in tiles:
        return []
    described = index.manifest.get("sources") or {}
    lon = np.column_stack([tiles[f"lon{i}"].to_numpy(float) for i in range(4)])
    lat = np.column_stack([tiles[f"lat{i}"].to_numpy(float) for i in range(4)])
    centre = tiles["lon"].to_numpy(float)[:, None]
    lon = (lon - centre + 180.0) % 360.0 - 180.0 + centre  # unwrapped around each tile's centre
    gsd = tiles["gsd"].to_numpy(float) if "gsd" in tiles else np.full(len(tiles), np.nan)
    out = []
    for name, rows in tiles.groupby(tiles["source"].astype(str), sort=False).indices.items():
        if name in described and "path" not in described[name]:
            continue  # a folder of image chips: each chip is its own picture, not one scene
        ok = np.isfinite(lon[rows]).all(axis=1) & np.isfinite(lat[rows]).all(axis=1)
        if not ok.any():
            continue  # chips without a place
        rows = rows[ok]
        bounds = (
            float(lon[rows].min()),
            float(lat[rows].min()),
            float(lon[rows].max()),
            float(lat[rows].max()),
        )
        out.append(
            Acquisition(
                name,
                _time(described.get(name, {}), _earliest(tiles, rows)),
                bounds,
                float(np.nanmedian(gsd[rows])) if np.isfinite(gsd[rows]).any() else math.nan,
            )
        )
    return out


def _acquisitions_from_columns(index: Index) -> list[Acquisition]:
    """``_acquisitions`` of a table too large to read whole, from its filter columns: bounds of
    the tiles' centres widened by the largest footprint's reach (so a little wider than the
    footprints'), the earliest tile time, the source's own ground sample distance."""
    if "source" not in index.table or "lon0" not in index.table:
        return []
    columns = index.filter_columns()
    reach = math.degrees(columns.reach or 0.0)
    described = index.manifest.get("sources") or {}
    out = []
    for name, row in columns.source_summary().iterrows():
        desc = described.get(name, {})
        if name in described and "path" not in desc:
            continue  # a folder of image chips
        widen = reach / max(
            math.cos(math.radians(min(89.0, max(abs(row.south), abs(row.north)) + reach))), 1e-3
        )
        bounds = (
            max(-180.0, row.west - widen),
            max(-90.0, row.south - reach),
            min(180.0, row.east + widen),
            min(90.0, row.north + reach),
        )
        gsd = desc.get("gsd") if isinstance(desc, dict) else None
        first = None if pd.isna(row["first"]) else row["first"]
        out.append(Acquisition(name, _time(desc, first), bounds, float(gsd) if gsd else math.nan))
    return out


def _time(desc: dict, earliest: pd.Timestamp | None) -> pd.Timestamp | None:
    """The source's own time, else its earliest tile's."""
    value = desc.get("time") if isinstance(desc, dict) else None
    if not value:
        value = earliest
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _earliest(tiles: pd.DataFrame, rows: np.ndarray) -> pd.Timestamp | None:
    times = tiles["time"].iloc[rows].dropna() if "time" in tiles else ()
    return times.min() if len(times) else None


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def places(acqs: list[Acquisition]) -> list[list[int]]:
    """Acquisitions grouped by place: the connected groups of overlapping bounds."""
    parent = list(range(len(acqs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(acqs)):
        for j in range(i + 1, len(acqs)):
            if _overlap(acqs[i].bounds, acqs[j].bounds):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(acqs)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def date_options(acqs: list[Acquisition]) -> list[str]:
    """The dates a collection's date selector offers (YYYY-MM-DD, oldest first): those of the
    places that hold more than one date; none when no place does."""
    dated = set()
    for group in places(acqs):
        dates = {acqs[i].date for i in group if acqs[i].date}
        if len(dates) > 1:
            dated |= dates
    return sorted(dated)


def _in_range(acq: Acquisition, start: pd.Timestamp | None, end: pd.Timestamp | None) -> bool:
    if acq.time is None:
        return start is None and end is None
    return (start is None or acq.time >= start) and (end is None or acq.time <= end)


def drawn_sources(
    acqs: list[Acquisition],
    chosen: str = LATEST,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> list[str]:
    """The sources the map draws, one per place: among the acquisitions between ``start`` and
    ``end`` (the date filter), the latest at or before the ``chosen`` date (YYYY-MM-DD; the
    latest of all for ``LATEST``), else the earliest. Coarsest first (finer ones draw on top)."""
    limit = pd.Timestamp(chosen, tz="UTC") + pd.Timedelta(days=1) if chosen else None
    out = []
    for group in places(acqs):
        candidates = [acqs[i] for i in group if _in_range(acqs[i], start, end)]
        if not candidates:
            continue
        ordered = sorted(candidates, key=lambda a: (a.time is not None, a.time or pd.Timestamp(0, tz="UTC")))
        before = [a for a in ordered if limit is None or (a.time is not None and a.time < limit)]
        out.append(before[-1] if before else ordered[0])
    return [a.source for a in sorted(out, key=lambda a: -a.gsd if np.isfinite(a.gsd) else -math.inf)]


def tile_under(index: Index, lon: float, lat: float, sources: list[str] | None = None) -> int:
    """Row of the tile under (lon, lat) among the tiles of ``sources`` (all when None); -1 if
    none. Each subset's footprints are made into a search tree once."""
    key = "explorer_locator:" + ("" if sources is None else "\x1f".join(sorted(sources)))

    def make() -> tuple[FootprintLocator, np.ndarray]:
        tiles = index.tiles
        if sources is None:
            return FootprintLocator(tiles), np.arange(len(tiles))
        rows = np.flatnonzero(tiles["source"].astype(str).isin(sources).to_numpy())
        return FootprintLocator(tiles.iloc[rows].reset_index(drop=True)), rows

    if "lon0" not in index.table:
        return -1
    if scans_for_tiles(index):  # too large for trees: a scan of the centres, kept to the sources
        keep = (
            None
            if sources is None
            else index.cached("explorer_keep:" + key, lambda: index.filter_columns().sources_in(set(sources)))
        )
        return int(tile_locator(index).rows_under([lon], [lat], keep)[0])
    locator, rows = index.cached(key, make)
    found = int(locator.rows_under(np.array([lon]), np.array([lat]))[0])
    return int(rows[found]) if found >= 0 else -1


def finest(candidates: list[tuple[str, float]]) -> str | None:
    """The name with the smallest ground sample distance (unknown ones last, ties in order)."""
    if not candidates:
        return None
    return min(
        enumerate(candidates),
        key=lambda c: (not np.isfinite(c[1][1]), c[1][1] if np.isfinite(c[1][1]) else 0.0, c[0]),
    )[1][0]


def code_model(manifest: dict) -> tuple:
    """What makes two collections' codes comparable: the backbone, the hash model and the bits."""
    backbone = manifest.get("backbone")
    name = backbone.get("name") if isinstance(backbone, dict) else backbone
    hash_file = (manifest.get("files") or {}).get("hash") or {}
    return (str(name), str(hash_file.get("sha256", hash_file.get("name", ""))), manifest.get("bits"))
