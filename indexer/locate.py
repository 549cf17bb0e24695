"""The tile under a point: each tile's footprint made a polygon, the point tested against them,
the nearest centre winning where footprints overlap. Map clicks and landmark catalogues use it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from lookalike.indexer.tiling import footprint_plane, polar_plane


def centre_order(clat: np.ndarray, clon: np.ndarray, plat, plon) -> np.ndarray:
    """A key that orders tile centres (radians) by their angle from a point (radians), nearest
    first: minus the angle's cosine. Locators share it so that equal keys, ties, fall alike."""
    return -(np.sin(clat) * np.sin(plat) + np.cos(clat) * np.cos(plat) * np.cos(clon - plon))


def tiles_under(tiles: pd.DataFrame, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Row of the tile under each point: nearest centre among tiles whose footprint holds it; -1 if none."""
    return FootprintLocator(tiles).rows_under(lon, lat)


class FootprintLocator:
    """The tiles' footprints made into polygons and search trees once, to find the tile under
    points again and again (``tiles_under``; a map click asks for one point at a time)."""

    def __init__(self, tiles: pd.DataFrame):
        self.planes: list[tuple[int, np.ndarray, shapely.STRtree]] = []
        if len(tiles) == 0 or "lon0" not in tiles:
            return
        corners_lon = tiles[[f"lon{i}" for i in range(4)]].to_numpy(np.float64)
        corners_lat = tiles[[f"lat{i}" for i in range(4)]].to_numpy(np.float64)
        # chips with no known footprint are never under a point
        placed = np.flatnonzero(np.isfinite(corners_lon).all(axis=1) & np.isfinite(corners_lat).all(axis=1))
        centre_lon, centre_lat = tiles["lon"].to_numpy(np.float64), tiles["lat"].to_numpy(np.float64)
        self.clat, self.clon = np.radians(centre_lat), np.radians(centre_lon)
        corners_lon, corners_lat = corners_lon[placed], corners_lat[placed]
        centre_lon, centre_lat = centre_lon[placed], centre_lat[placed]
        # unwrap each footprint next to its own centre so tiles across 180 degrees stay whole
        corners_lon = (corners_lon - centre_lon[:, None] + 180.0) % 360.0 - 180.0 + centre_lon[:, None]
        plane = footprint_plane(centre_lon, centre_lat)[2]
        for which in np.unique(plane):  # polar footprints are tested in a polar plane
            members = np.flatnonzero(plane == which)
            cx, cy = polar_plane(corners_lon[members], corners_lat[members], which)
            tree = shapely.STRtree(shapely.polygons(np.stack([cx, cy], axis=-1)))
            self.planes.append((int(which), placed[members], tree))

    def rows_under(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """``tiles_under`` for these points."""
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
        out = np.full(len(lon), -1, np.int64)
        best = np.full(len(lon), np.inf)
        if len(lon) == 0:
            return out
        for which, members, tree in self.planes:
            # a point near 180 may sit in a tile unwrapped past it
            for shift in (0.0, 360.0, -360.0) if which == 0 else (0.0,):
                px, py = polar_plane(lon + shift, lat, which)
                point_idx, tile_idx = tree.query(shapely.points(px, py), predicate="intersects")
                if len(point_idx) == 0:
                    continue
                tile_idx = members[tile_idx]
                angle = centre_order(
                    self.clat[tile_idx],
                    self.clon[tile_idx],
                    np.radians(lat[point_idx]),
                    np.radians(lon[point_idx]),
                )
                order = np.lexsort((tile_idx, angle, point_idx))
                point_idx, tile_idx, angle = point_idx[order], tile_idx[order], angle[order]
                first = np.r_[True, point_idx[1:] != point_idx[:-1]]
                p, t, a = point_idx[first], tile_idx[first], angle[first]
                better = (a < best[p]) | ((a == best[p]) & (t < out[p]))
                out[p[better]], best[p[better]] = t[better], a[better]
        return out
