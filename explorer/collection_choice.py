"""Which collection of a body a click searches, which acquisitions its map draws, and what the
status says about it.

A click searches the finest collection under the cursor: the smallest ground sample distance
among the collections switched on whose drawn acquisitions have a tile there (``Search in``
overrides the choice). Hits come from that collection only: collections are compared only
when their codes come from one code model, and the status says which share one.
"""

from __future__ import annotations

import math

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.explorer.acquisitions import acquisitions, code_model, drawn_sources, finest, tile_under
from lookalike.indexer.store import Index

AUTO = "auto"
PLACED_CHIP_WITHIN_DEG = 1.0


def nearest_placed_chip(
    index: Index, lon: float, lat: float, within_deg: float = PLACED_CHIP_WITHIN_DEG
) -> int | None:
    """For chips placed at observations (footprints of a few km), the chip whose centre is
    nearest a click within ``within_deg``: such footprints are too small to hit exactly."""
    if not index.manifest.get("placed_at"):
        return None
    tiles = index.tiles
    clat, clon = np.radians(tiles["lat"].to_numpy(float)), np.radians(tiles["lon"].to_numpy(float))
    plat, plon = np.radians(lat), np.radians(lon)
    cos = np.sin(clat) * np.sin(plat) + np.cos(clat) * np.cos(plat) * np.cos(clon - plon)
    cos = np.where(np.isfinite(cos), cos, -2.0)
    row = int(np.argmax(cos))
    return row if cos[row] >= np.cos(np.radians(within_deg)) else None


def drawn_for(state, name: str) -> list[str] | None:
    """The sources of collection ``name`` the map draws (one acquisition per place, by the
    collection's chosen date and the date filter); None when that is all of them."""
    acqs = acquisitions(state.collections[name])
    try:
        time_range = state.filters().time_range or (None, None)
    except LookalikeError:
        time_range = (None, None)
    drawn = drawn_sources(acqs, state.scene_dates.get(name, ""), *time_range)
    return None if len(drawn) == len(acqs) else drawn


def scene_pairs(state, base: str | None) -> list[tuple[str, str]]:
    """(collection, source) of every scene the map draws: the drawn acquisitions of the
    collections switched on, the mosaic (``base``) left to the basemap."""
    out = []
    for name in state.collections:
        if name in state.collections_on and name != base:
            sources = drawn_for(state, name)
            out += [
                (name, s)
                for s in (
                    sources
                    if sources is not None
                    else [a.source for a in acquisitions(state.collections[name])]
                )
            ]
    return out


def _tile_gsd(index: Index, row: int) -> float:
    if "gsd" in index.table:
        value = float(index.tile(row)["gsd"])
        if math.isfinite(value):
            return value
    try:
        return float((index.manifest.get("tiling") or {}).get("gsd"))
    except (TypeError, ValueError):
        return math.nan


def pick_collection(state, lon: float, lat: float) -> tuple[str | None, int, str]:
    """(collection, tile row, status note) for a click at ``lon``, ``lat``; (None, -1, why)
    when no collection has a tile there."""
    chosen = state.search_in if state.search_in in state.collections else AUTO
    names = [chosen] if chosen != AUTO else [n for n in state.collections if n in state.collections_on]
    found: dict[str, tuple[int, float]] = {}
    for name in names:
        index = state.collections[name]
        row = tile_under(index, lon, lat, drawn_for(state, name))
        if row < 0:
            row = nearest_placed_chip(index, lon, lat)
            row = -1 if row is None else row
        if row >= 0:
            found[name] = (row, _tile_gsd(index, row))
    labels = state.collection_labels
    if not found:
        where = labels.get(chosen, chosen) if chosen != AUTO else "No collection switched on"
        verb = "has no tile" if chosen != AUTO else "has a tile"
        return (
            None,
            -1,
            (
                f"{where} {verb} at lon {lon:.4f}, lat {lat:.4f}. Click on an indexed "
                "area of the map, or switch collections on."
            ),
        )
    name = finest([(n, g) for n, (_, g) in found.items()])
    row, gsd = found[name]
    scale = f"{gsd:.3g} m/px" if math.isfinite(gsd) else "unknown resolution"
    if chosen != AUTO:
        why = "chosen under Search in"
    elif len(found) > 1:
        others = ", ".join(labels.get(n, n) for n in found if n != name)
        why = f"the finest of the collections under the click; also there: {others}"
    else:
        why = "the only collection under the click"
    return name, row, f"Searching {labels.get(name, name)} ({scale}): {why}."


def code_note(state) -> str:
    """Which other collections of the body could be compared with the one searched (those whose
    codes come from the same code model), said rather than mixed in silently."""
    if len(state.collections) < 2 or state.index is None:
        return ""
    mine = code_model(state.index.manifest)
    labels = state.collection_labels
    same = [
        labels.get(n, n)
        for n, ix in state.collections.items()
        if n != state.index_name and code_model(ix.manifest) == mine
    ]
    label = labels.get(state.index_name, state.index_name)
    if same:
        return (
            f"Hits from {label} only; {', '.join(same)} share its code model (pick one under "
            "Search in to search it)."
        )
    return f"Hits from {label} only: the other collections' codes come from other code models."
