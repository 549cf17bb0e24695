"""Hits as an RFC 7946 GeoJSON FeatureCollection of tile footprints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.fileio import atomic_write_bytes
from lookalike.indexer.tiling import holds_pole

PROPERTIES = ("rank", "distance", "tile_id", "zone", "time", "source", "label")


def footprint_geometry(lons: np.ndarray, lats: np.ndarray) -> dict:
    """Polygon of a footprint's corners; split in two at the antimeridian when it crosses it.

    RFC 7946 section 3.1.9: geometries crossing 180 degrees are cut into a MultiPolygon whose
    parts lie on either side. A footprint around a pole becomes the polygon bounded by its
    corners, the antimeridian on both sides and the pole's own latitude.
    """
    lons = np.asarray(lons, dtype=float)
    lats = np.asarray(lats, dtype=float)
    import shapely
    from shapely.geometry import box, mapping
    from shapely.geometry.polygon import orient

    if holds_pole(lons):
        return mapping(orient(shapely.Polygon(pole_ring(lons, lats)), 1.0))
    if lons.max() - lons.min() <= 180.0:
        # RFC 7946 section 3.1.6: exterior rings are counterclockwise
        return mapping(orient(shapely.Polygon(np.column_stack([lons, lats])), 1.0))

    unwrapped = np.where(lons < 0, lons + 360.0, lons)
    poly = shapely.Polygon(np.column_stack([unwrapped, lats]))
    east = poly.intersection(box(-1.0, -90.0, 180.0, 90.0))
    west = shapely.affinity.translate(poly.intersection(box(180.0, -90.0, 541.0, 90.0)), xoff=-360.0)
    parts = [
        orient(p, 1.0)
        for g in (east, west)
        for p in getattr(g, "geoms", [g])
        if not p.is_empty and p.area > 0
    ]
    return mapping(shapely.MultiPolygon(parts))


def pole_ring(lons: np.ndarray, lats: np.ndarray) -> np.ndarray:
    """Lon/lat ring (n, 2) of a ring of points around a pole (a footprint's corners, or a
    densified outline): cut where it crosses 180 degrees and closed along the antimeridian and
    the pole's latitude (+-90)."""
    lons, lats = np.asarray(lons, float), np.asarray(lats, float)
    steps = (np.diff(np.r_[lons, lons[0]]) + 180.0) % 360.0 - 180.0
    if steps.sum() < 0:  # walk the ring eastwards
        lons, lats = lons[::-1], lats[::-1]
        steps = (np.diff(np.r_[lons, lons[0]]) + 180.0) % 360.0 - 180.0
    east = np.cumsum(np.r_[0.0, steps[:-1]]) + lons[0]  # unwrapped: one turn in all
    cut = int(np.argmax(np.floor((east + 180.0) / 360.0) > np.floor((east[0] + 180.0) / 360.0))) or len(east)
    # start just after the crossing: the points before it go a turn further east
    east = np.r_[east[cut:], east[:cut] + 360.0]
    north = np.r_[lats[cut:], lats[:cut]]
    east -= 360.0 * np.floor((east[0] + 180.0) / 360.0)  # first point in [-180, 180)
    # latitude where the ring crosses 180 degrees going from its last point back to its first
    span = east[0] + 360.0 - east[-1]
    at_180 = north[-1] + (north[0] - north[-1]) * ((180.0 - east[-1]) / span if span > 0 else 0.5)
    pole = 90.0 if north.mean() > 0 else -90.0
    return np.array([(-180.0, at_180), *zip(east, north), (180.0, at_180), (180.0, pole), (-180.0, pole)])


def json_value(value):
    """A table cell as JSON holds it: ISO 8601 text for a time, None for a missing or non-finite
    value, a Python number for a numpy one."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is None or value is pd.NaT or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def hits_to_geojson(hits: pd.DataFrame, filters: dict | None = None, query: dict | None = None) -> dict:
    """FeatureCollection of hit footprints (or centre points when a hit has no footprint)."""
    features = []
    has_fp = all(f"lon{i}" in hits for i in range(4))
    for rec in hits.to_dict("records"):
        props = {key: json_value(rec[key]) for key in PROPERTIES if key in rec}
        lons = [rec.get(f"lon{i}") for i in range(4)] if has_fp else []
        if has_fp and np.all(np.isfinite(lons)):
            geometry = footprint_geometry(np.array(lons), np.array([rec[f"lat{i}"] for i in range(4)]))
        elif np.isfinite(rec.get("lon", np.nan)):
            geometry = {"type": "Point", "coordinates": [float(rec["lon"]), float(rec["lat"])]}
        else:
            geometry = None
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    collection = {"type": "FeatureCollection", "features": features}
    if filters is not None or query is not None:
        # a foreign member (RFC 7946 section 6.1): how the hits were produced
        collection["lookalike"] = {"query": query, "filters": filters}
    return collection


def write_geojson(path: str | Path, collection: dict) -> None:
    atomic_write_bytes(Path(path), json.dumps(collection, default=str).encode())
