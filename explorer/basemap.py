"""Map layers in lon/lat degrees: the planet basemap, zone grid, hit density, outlines, HiRISE.

The basemap never sends the source raster to the browser: for every pan or zoom the visible part
of an image pyramid level is regridded by Datashader to the plot's pixel size (zoomed in past the
native resolution, the native pixels themselves are sent). The pyramid keeps whole-planet views
fast: regridding the 8k mosaic itself takes seconds, its 1k level a few milliseconds.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import holoviews as hv
import numpy as np
import pandas as pd
import xarray as xr
from holoviews.operation.datashader import regrid

from lookalike.indexer.thumbnails import SourceImage
from lookalike.indexer.tiling import ZONE_WIDTH_DEG

MIN_LEVEL_PIXELS = 1024  # the coarsest pyramid level is about this wide
_pyramids: dict[tuple, list[hv.RGB]] = {}
_lock = threading.Lock()


def _as_rgb(rgb: np.ndarray, bounds: tuple[float, float, float, float]) -> hv.RGB:
    west, south, east, north = bounds
    h, w = rgb.shape[:2]
    dx, dy = (east - west) / w, (north - south) / h
    coords = {"lon": west + dx * (np.arange(w) + 0.5), "lat": north - dy * (np.arange(h) + 0.5)}
    data = xr.Dataset({c: (("lat", "lon"), rgb[..., i]) for i, c in enumerate("RGB")}, coords=coords)
    return hv.RGB(data, kdims=["lon", "lat"], vdims=list("RGB"))


def pyramid(image: SourceImage) -> list[hv.RGB]:
    """The image at full, 1/2, 1/4 ... resolution (finest first), built once per process."""
    key = (image.name, image.bounds, image.shape)
    levels = _pyramids.get(key)
    if levels is None:
        with _lock:
            levels = _pyramids.get(key)
            if levels is None:
                levels, rgb = [], image.rgb
                while True:
                    levels.append(_as_rgb(rgb, image.bounds))
                    h, w = rgb.shape[:2]
                    if w < 2 * MIN_LEVEL_PIXELS or h < 2:
                        break
                    h2, w2 = h // 2 * 2, w // 2 * 2  # 2x2 mean; an odd last row/column is dropped
                    rgb = rgb[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2, 3).mean(axis=(1, 3))
                    rgb = rgb.round().astype(np.uint8)
                _pyramids[key] = levels
    return levels


def basemap(image: SourceImage) -> hv.DynamicMap:
    """The planet, regridded to the view on every pan/zoom."""
    levels = pyramid(image)
    west, south, east, north = image.bounds
    native_dx = image.pixel_size[0]

    def render(x_range=None, y_range=None, width=None, height=None, scale=1.0):
        x_range = x_range or (west, east)
        y_range = y_range or (south, north)
        width = max(int(width or 1000), 100)
        height = max(int(height or 500), 50)
        wanted_dx = (x_range[1] - x_range[0]) / width
        # the coarsest level that still has at least one pixel per screen pixel
        level = 0
        while level + 1 < len(levels) and native_dx * 2 ** (level + 1) <= wanted_dx:
            level += 1
        # pad the range so small pans do not show an empty border before the next render
        pad_x, pad_y = (x_range[1] - x_range[0]) * 0.25, (y_range[1] - y_range[0]) * 0.25
        xr_ = (max(west, x_range[0] - pad_x), min(east, x_range[1] + pad_x))
        yr_ = (max(south, y_range[0] - pad_y), min(north, y_range[1] + pad_y))
        if xr_[0] >= xr_[1] or yr_[0] >= yr_[1]:
            return levels[-1].clone(data=levels[-1].data.isel(lon=slice(0, 0), lat=slice(0, 0)))
        op = regrid.instance(x_range=xr_, y_range=yr_, width=int(width * 1.5), height=int(height * 1.5),
                             dynamic=False, upsample=False)
        return op(levels[level])

    return hv.DynamicMap(render, streams=[hv.streams.RangeXY(), hv.streams.PlotSize()])


@lru_cache(maxsize=8)
def _grid_lines(lat_range: tuple[float, float]) -> hv.Path:
    """Zone meridians and the equator as one NaN-separated path: HoloViews handles a single
    path of 200 vertices in a millisecond, but 62 separate two-point paths in about a second."""
    segments = [[(lon, lat_range[0]), (lon, lat_range[1])] for lon in np.arange(-180.0, 180.1, ZONE_WIDTH_DEG)]
    segments.append([(-180.0, 0.0), (180.0, 0.0)])
    vertices = np.concatenate([np.vstack([np.array(seg, float), [[np.nan, np.nan]]]) for seg in segments])[:-1]
    return hv.Path([vertices], kdims=["lon", "lat"]).opts(color="white", alpha=0.25, line_width=1)


def zone_grid(zone_labels: list[str], selected: list[str], lat_range=(-80.0, 84.0)) -> hv.Overlay:
    """Meridians every 6 degrees and the equator, the indexed zones labelled, selected ones shaded."""
    grid = _grid_lines(tuple(lat_range))
    rects, labels = [], []
    for label in zone_labels:
        number, hemi = int(label[:-1]), label[-1]
        w = -180.0 + ZONE_WIDTH_DEG * (number - 1)
        s, n = (0.0, lat_range[1]) if hemi == "N" else (lat_range[0], 0.0)
        if label in selected:
            rects.append((w, s, w + ZONE_WIDTH_DEG, n))
        labels.append((w + ZONE_WIDTH_DEG / 2, n - 4 if hemi == "N" else s + 4, label))
    shaded = hv.Rectangles(rects, kdims=["lon", "lat", "lon2", "lat2"]).opts(
        fill_color="#4da3ff", fill_alpha=0.18, line_color="#4da3ff", line_width=2)
    text = hv.Labels(labels, kdims=["lon", "lat"], vdims="zone").opts(
        text_color="white", text_font_size="8pt", text_alpha=0.8)
    return grid * shaded * text


def hit_points(hits: pd.DataFrame | None) -> hv.Points:
    """Hit centres, for a datashaded density."""
    if hits is None or len(hits) == 0:
        return hv.Points(pd.DataFrame({"lon": [], "lat": []}), kdims=["lon", "lat"])
    return hv.Points(hits[["lon", "lat"]], kdims=["lon", "lat"])


def outlines(tiles: pd.DataFrame) -> list[np.ndarray]:
    """Footprint rings (lon, lat) of tile rows, unwrapped around each centre."""
    rings = []
    for rec in tiles.to_dict("records"):
        lons = np.array([rec[f"lon{i}"] for i in range(4)], float)
        lons = (lons - rec["lon"] + 180.0) % 360.0 - 180.0 + rec["lon"]
        lats = np.array([rec[f"lat{i}"] for i in range(4)], float)
        rings.append(np.column_stack([np.append(lons, lons[0]), np.append(lats, lats[0])]))
    return rings


def outline_path(tiles: pd.DataFrame, color: str, width: float = 3.0, dash: str = "solid") -> hv.Path:
    return hv.Path(outlines(tiles), kdims=["lon", "lat"]).opts(
        color=color, line_width=width, line_dash=dash)


def hirise_rectangles(table: pd.DataFrame) -> hv.Rectangles:
    """HiRISE footprints as rectangles with id and date, for rasterizing or hovering."""
    return hv.Rectangles(table, kdims=["west", "south", "east", "north"],
                         vdims=["observation_id", "date"])


def view_extent(tiles: pd.DataFrame, bounds: tuple[float, float, float, float],
                aspect: float = 2.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """Initial x/y ranges: the whole planet, or the indexed area when it covers much less."""
    west, south, east, north = bounds
    if len(tiles) == 0:
        return (west, east), (south, north)
    lo_x, hi_x = float(tiles["lon"].min()), float(tiles["lon"].max())
    lo_y, hi_y = float(tiles["lat"].min()), float(tiles["lat"].max())
    if hi_x - lo_x > 0.5 * (east - west):
        return (west, east), (south, north)
    cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    half_h = min(max((hi_y - lo_y) * 0.65, (hi_x - lo_x) * 0.65 / aspect, 2.5), (north - south) / 2)
    half_w = half_h * aspect
    cy = min(max(cy, south + half_h), north - half_h)  # keep the view on the planet
    return (cx - half_w, cx + half_w), (cy - half_h, cy + half_h)
