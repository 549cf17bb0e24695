"""Map layers drawn from data: the planet basemap, the zone grid and labels, hit density, HiRISE.

The basemap never sends the source raster to the browser: for every pan or zoom the browser
fetches one JPEG of the visible part (``view_jpeg``), resampled from the coarsest level of an
image pyramid that still has a pixel per screen pixel (zoomed in past the native resolution, the
native pixels are enlarged). The pyramid keeps whole-planet maps fast: resampling the 8k mosaic
itself takes a second, its 1k level a few milliseconds.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import geoviews as gv
import holoviews as hv
import numpy as np
import pandas as pd

from lookalike.explorer.projection import POLAR_EDGE_LAT, POLAR_IMAGE_PIXELS, MapProjection
from lookalike.indexer import pixel_cache
from lookalike.indexer.thumbnails import SourceImage
from lookalike.indexer.tiling import UTM_LAT_RANGE, ZONE_WIDTH_DEG, Zone

MIN_LEVEL_PIXELS = 1024  # the coarsest pyramid level is about this wide
JPEG_QUALITY = 75
LABEL_FONT = "8pt"
LABEL_MIN_PX = 40  # zone labels ("31N", about 22 px wide at 8pt) at least this far apart
_pyramids: dict[tuple, list[Level]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Level:
    """One pyramid level: RGB or RGBA pixels (row 0 at the top) over ``bounds`` (x0, y0, x1, y1)."""

    pixels: np.ndarray
    bounds: tuple[float, float, float, float]

    @property
    def pixel_size(self) -> float:
        return (self.bounds[2] - self.bounds[0]) / self.pixels.shape[1]


def halve(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) -> (H // 2, W // 2, C): the mean of each 2 x 2 block, rounded half to
    even (as ``np.round``), an odd last row or column dropped. Integer sums of strided views: a
    float mean over a reshaped array's axes took 1.9 s for an 8k basemap, this about 0.2 s."""
    h2, w2 = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    rows = np.add(rgb[0:h2:2, :w2], rgb[1:h2:2, :w2], dtype=np.uint16)
    total = np.add(rows[:, 0::2], rows[:, 1::2])
    # (total + 1 + (total // 4 odd)) // 4 is total / 4 rounded half to even
    total += 1 + ((total >> 2) & 1)
    total >>= 2
    return total.astype(np.uint8)


def pyramid(image: SourceImage, projection: MapProjection | None = None) -> list[Level]:
    """The image at full, 1/2, 1/4 ... resolution (finest first), built once per process and kept
    on disk between processes (``pixel_cache``) when the image is; in a polar ``projection``, the
    image resampled into that view first."""
    polar = projection is not None and projection.polar
    key = (image.name, image.bounds, image.shape, projection.name if polar else "global")
    levels = _pyramids.get(key)
    if levels is None:
        with _lock:
            levels = _pyramids.get(key)
            if levels is None:
                levels = _pyramids[key] = _cached_levels(image, projection if polar else None)
    return levels


def _cached_levels(image: SourceImage, projection: MapProjection | None) -> list[Level]:
    if image.cache_key is None:
        return _levels(image, projection)
    slot = dict(
        purpose="basemap pyramid",
        image=image.cache_key,
        # "view": the key the cached files were stored under
        view=projection.name if projection is not None else "global",
        radius=projection.radius if projection is not None else None,
    )
    key = dict(
        min_level_pixels=MIN_LEVEL_PIXELS,
        polar=[POLAR_IMAGE_PIXELS, POLAR_EDGE_LAT] if projection is not None else None,
    )
    cached = pixel_cache.load(slot, key)
    if cached is not None:
        bounds = cached["bounds"]
        # the global view's finest level is the image itself, which is not stored twice
        first = [] if projection is not None else [Level(image.rgb, image.bounds)]
        return first + [
            Level(cached[f"level{i}"], tuple(float(v) for v in bounds[i])) for i in range(len(bounds))
        ]
    levels = _levels(image, projection)
    stored = levels if projection is not None else levels[1:]
    pixel_cache.save(
        slot,
        key,
        {f"level{i}": level.pixels for i, level in enumerate(stored)}
        | dict(bounds=np.asarray([level.bounds for level in stored], np.float64).reshape(-1, 4)),
    )
    return levels


def _levels(image: SourceImage, projection: MapProjection | None) -> list[Level]:
    rgb = projection.projected_image(image) if projection is not None else image.rgb
    bounds = projection.extent if projection is not None else image.bounds
    return halved_levels(rgb, bounds, MIN_LEVEL_PIXELS)


def halved_levels(
    pixels: np.ndarray, bounds: tuple[float, float, float, float], min_width: int
) -> list[Level]:
    """``pixels`` over ``bounds``, then halved (``halve``) until under twice ``min_width`` wide."""
    levels = []
    while True:
        levels.append(Level(pixels, bounds))
        h, w = pixels.shape[:2]
        if w < 2 * min_width or h < 2:
            return levels
        h2, w2 = h // 2 * 2, w // 2 * 2  # an odd last row/column is dropped
        pixels = halve(pixels)
        x0, y0, x1, y1 = bounds  # the dropped row/column shrinks the covered area
        bounds = (x0, y1 - (y1 - y0) * h2 / h, x0 + (x1 - x0) * w2 / w, y1)


def level_for(levels: list[Level], pixel_size: float) -> Level:
    """The coarsest level with at least one pixel per ``pixel_size`` (levels finest first)."""
    level = levels[0]
    for candidate in levels[1:]:
        if candidate.pixel_size <= pixel_size:
            level = candidate
    return level


def view_window(
    level: Level, x0: float, y0: float, x1: float, y1: float, width: int, height: int
) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]] | None:
    """Where ``level`` falls in an output of ``width`` x ``height`` over the box (x0, y0, x1, y1):
    ((ox0, ox1, oy0, oy1) in output pixels, the same part as a box in level pixels), or None
    when it falls outside."""
    bx0, by0, bx1, by1 = level.bounds
    cx0, cx1, cy0, cy1 = max(x0, bx0), min(x1, bx1), max(y0, by0), min(y1, by1)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    ox0, ox1 = (int(round((v - x0) / (x1 - x0) * width)) for v in (cx0, cx1))
    oy0, oy1 = (int(round((y1 - v) / (y1 - y0) * height)) for v in (cy1, cy0))
    if ox1 <= ox0 or oy1 <= oy0:
        return None
    h, w = level.pixels.shape[:2]
    dx, dy = (bx1 - bx0) / w, (by1 - by0) / h
    return (ox0, ox1, oy0, oy1), ((cx0 - bx0) / dx, (by1 - cy1) / dy, (cx1 - bx0) / dx, (by1 - cy0) / dy)


def render_view(
    levels: list[Level], x0: float, y0: float, x1: float, y1: float, width: int, height: int
) -> np.ndarray:
    """RGB (height, width, 3) of the box (x0, y0, x1, y1) of the basemap, from the coarsest
    level with at least one pixel per output pixel (bilinear; outside the image: black)."""
    from PIL import Image

    level = level_for(levels, (x1 - x0) / width)
    out = np.zeros((height, width, 3), np.uint8)
    window = view_window(level, x0, y0, x1, y1, width, height)
    if window is None:
        return out
    (ox0, ox1, oy0, oy1), box = window
    part = Image.fromarray(level.pixels).resize((ox1 - ox0, oy1 - oy0), Image.BILINEAR, box=box)
    out[oy0:oy1, ox0:ox1] = np.asarray(part)
    return out


def view_jpeg(
    image: SourceImage,
    projection: MapProjection,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: int,
    height: int,
    quality: int = JPEG_QUALITY,
) -> bytes:
    """JPEG of a box of the basemap in a map view (what the browser fetches on pan and zoom)."""
    from PIL import Image

    rgb = render_view(pyramid(image, projection), x0, y0, x1, y1, width, height)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@lru_cache(maxsize=8)
def _grid_lines(lat_range: tuple[float, float]) -> hv.Path:
    """Zone meridians, the equator and the edges of the polar caps as one NaN-separated path:
    HoloViews handles a single path of 200 vertices in a millisecond, but 62 separate two-point
    paths in about a second."""
    meridians = np.arange(-180.0, 180.1, ZONE_WIDTH_DEG)
    segments = [[(lon, lat_range[0]), (lon, lat_range[1])] for lon in meridians]
    segments += [[(-180.0, lat), (180.0, lat)] for lat in (0.0, *lat_range)]
    gap = [[np.nan, np.nan]]
    vertices = np.concatenate([np.vstack([np.array(seg, float), gap]) for seg in segments])[:-1]
    return hv.Path([vertices], kdims=["lon", "lat"]).opts(color="white", alpha=0.25, line_width=1)


def zone_area(label: str, edge_lat: float = 90.0) -> tuple[float, float, float, float]:
    """(west, south, east, north) of a zone's tile centres; polar caps reach the pole, and the
    6-degree zones run from the equator to ``edge_lat`` at most."""
    zone = Zone.parse(label)
    west, east = zone.lon_range
    south, north = zone.lat_range
    return west, max(south, -edge_lat), east, min(north, edge_lat)


def zone_grid(
    zone_labels: list[str], selected: list[str], show: bool = True, lat_range=UTM_LAT_RANGE
) -> hv.Overlay:
    """Meridians every 6 degrees, the equator and the caps' edges, the selected zones shaded (the
    labels are ``zone_label_layer``, which follows the view)."""
    rects = [zone_area(label) for label in zone_labels if show and label in selected]
    grid = _grid_lines(tuple(lat_range)) if show else hv.Path([], kdims=["lon", "lat"])
    shaded = hv.Rectangles(rects, kdims=["lon", "lat", "lon2", "lat2"]).opts(
        fill_color="#4da3ff", fill_alpha=0.18, line_color="#4da3ff", line_width=2
    )
    return grid * shaded


def zone_grid_layer(
    zone_labels: list[str], selected: list[str], show: bool, projection: MapProjection
) -> hv.Overlay:
    """The zone grid of a map in ``projection`` (``zone_grid`` or ``polar_zone_grid``)."""
    if projection.polar:
        return polar_zone_grid(zone_labels, selected, show, projection)
    return zone_grid(zone_labels, selected, show)


@lru_cache(maxsize=4)
def _polar_grid_lines(sign: float) -> np.ndarray:
    edge, limit = sign * (POLAR_EDGE_LAT - 10.0), UTM_LAT_RANGE[1] if sign > 0 else UTM_LAT_RANGE[0]
    lats = np.linspace(edge, limit, 24)
    meridians = np.arange(-180.0, 180.0, ZONE_WIDTH_DEG)
    segments = [np.column_stack([np.full_like(lats, lon), lats]) for lon in meridians]
    circle = np.linspace(-180.0, 180.0, 361)
    segments += [np.column_stack([circle, np.full_like(circle, lat)]) for lat in (limit, sign * 60.0)]
    return np.concatenate([np.vstack([seg, [[np.nan, np.nan]]]) for seg in segments])[:-1]


def polar_zone_grid(
    zone_labels: list[str], selected: list[str], show: bool, projection: MapProjection
) -> hv.Overlay:
    """The zone grid of a polar view, as GeoViews elements in lon/lat that GeoViews projects:
    zone meridians down from the cap's edge, the edge itself, the selected zones shaded."""
    lonlat = projection.lonlat_crs
    if not show:
        return gv.Path([], crs=lonlat) * gv.Polygons([], crs=lonlat)
    grid = gv.Path([_polar_grid_lines(projection.sign)], crs=lonlat).opts(
        color="white", alpha=0.35, line_width=1
    )
    shapes = []
    for label in selected:
        if label not in zone_labels or Zone.parse(label).hemisphere != ("N" if projection.sign > 0 else "S"):
            continue
        west, south, east, north = zone_area(label, 89.999)
        lons = np.r_[np.linspace(west, east, 25), np.linspace(east, west, 25)]
        lats = np.r_[np.full(25, south), np.full(25, north)]
        shapes.append({"lon": lons, "lat": lats})
    shaded = gv.Polygons(shapes, kdims=["lon", "lat"], crs=lonlat).opts(
        fill_color="#4da3ff", fill_alpha=0.18, line_color="#4da3ff", line_width=2
    )
    return grid * shaded


def zone_label_positions(
    zone_labels: list[str],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    width_px: float,
    height_px: float,
    min_px: float = LABEL_MIN_PX,
    lat_range=UTM_LAT_RANGE,
) -> list[tuple[float, float, str]]:
    """(lon, lat, label) of the zone labels to draw in this view, none closer than ``min_px``.

    Northern zones are labelled along the top of the view, southern ones along the bottom, each
    at the middle of its visible part. Zoomed out, only every n-th zone is labelled (n from the
    zones' width on screen, counted along the sorted ``zone_labels`` so the choice does not change
    while panning).
    """
    x0, x1 = float(min(x_range)), float(max(x_range))
    y0, y1 = float(min(y_range)), float(max(y_range))
    if not (x1 > x0 and y1 > y0 and width_px > 0 and height_px > 0):  # NaN too: not drawn yet
        return []
    deg_per_px = (x1 - x0) / width_px
    min_deg = min_px * deg_per_px
    step = max(1, math.ceil(min_px / (ZONE_WIDTH_DEG / deg_per_px)))
    pad = 14 * (y1 - y0) / height_px  # a label's height clear of the edge
    rows = {"N": min(y1, lat_range[1]) - pad, "S": max(y0, lat_range[0]) + pad}
    out = []
    for hemi, lat in rows.items():
        inside = (
            (max(y0, 0.0) <= lat <= min(y1, lat_range[1]))
            if hemi == "N"
            else (max(y0, lat_range[0]) <= lat <= min(y1, 0.0))
        )
        if not inside:
            continue
        row = []
        zones = sorted(
            (Zone.parse(label).number, label)
            for label in zone_labels
            if label and label[-1] == hemi and not label.startswith("UPS")
        )
        for number, label in zones[::step]:
            west = -180.0 + ZONE_WIDTH_DEG * (number - 1)
            left, right = max(west, x0), min(west + ZONE_WIDTH_DEG, x1)
            if right <= left:
                continue
            row.append(((left + right) / 2, lat, label))
        last = -math.inf
        for lon, lat_, label in sorted(row):  # a zone cut by the view's edge can come too close
            if lon - last >= min_deg:
                out.append((lon, lat_, label))
                last = lon
    # each polar cap in the middle of its visible part, clear of the zones' rows
    for label, (south, north) in (("UPSN", (lat_range[1], 90.0)), ("UPSS", (-90.0, lat_range[0]))):
        low, high = max(south, y0), min(north, y1)
        if label in zone_labels and high - low > pad:
            out.append(((x0 + x1) / 2, (low + high) / 2, label))
    return out


def polar_zone_label_positions(
    zone_labels: list[str],
    projection: MapProjection,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    width_px: float,
    height_px: float,
    min_px: float = LABEL_MIN_PX,
) -> list[tuple[float, float, str]]:
    """(x, y, label) in a polar view's plane of the zone labels to draw, none closer than
    ``min_px`` on screen.

    The zones of the view's hemisphere are labelled on their middle meridian, along the parallel
    through the middle of the view (or, while the middle of the view is in the cap, halfway
    between the view's edge and the cap), so zooming in anywhere shows the zones there. Labels
    are placed from the middle of the view outwards, and one too close to a label already placed
    is left out. The cap is labelled at the pole when the pole is in view.
    """
    x0, x1 = float(min(x_range)), float(max(x_range))
    y0, y1 = float(min(y_range)), float(max(y_range))
    if not (x1 > x0 and y1 > y0 and width_px > 0 and height_px > 0):
        return []
    hemi, sign = ("N", 1.0) if projection.sign > 0 else ("S", -1.0)
    limit = abs(UTM_LAT_RANGE[1] if sign > 0 else UTM_LAT_RANGE[0])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    centre_lat = abs(float(projection.inverse(cx, cy)[1]))
    in_cap = centre_lat >= limit
    ring = sign * ((POLAR_EDGE_LAT + limit) / 2 if in_cap else max(centre_lat, POLAR_EDGE_LAT - 5.0))
    px_x, px_y = width_px / (x1 - x0), height_px / (y1 - y0)
    candidates = []
    cap = "UPS" + hemi
    if cap in zone_labels and x0 <= 0.0 <= x1 and y0 <= 0.0 <= y1:
        candidates.append((0.0, 0.0, cap))
    for label in zone_labels:
        if label and label[-1] == hemi and not label.startswith("UPS"):
            x, y = projection.forward(-180.0 + ZONE_WIDTH_DEG * (Zone.parse(label).number - 0.5), ring)
            if x0 <= float(x) <= x1 and y0 <= float(y) <= y1:
                candidates.append((float(x), float(y), label))
    out = []
    for x, y, label in sorted(candidates, key=lambda c: math.hypot((c[0] - cx) * px_x, (c[1] - cy) * px_y)):
        if all(math.hypot((x - u) * px_x, (y - v) * px_y) >= min_px for u, v, _ in out):
            out.append((x, y, label))
    return out


def zone_label_layer(
    zone_labels: list[str],
    show: bool = True,
    x_range=None,
    y_range=None,
    width=None,
    height=None,
    initial=None,
    projection: MapProjection | None = None,
) -> hv.Labels:
    """The zone labels for the current view (``zone_label_positions``, or in a polar
    ``projection`` ``polar_zone_label_positions``); ``initial``, the plot's first (x range,
    y range), stands in until the browser reports its ranges."""

    def valid(r) -> bool:
        return r is not None and all(v is not None and np.isfinite(v) for v in r)

    if initial is not None:
        x_range = x_range if valid(x_range) else initial[0]
        y_range = y_range if valid(y_range) else initial[1]
    polar = projection is not None and projection.polar
    positions = []
    if show and valid(x_range) and valid(y_range):
        if polar:
            positions = polar_zone_label_positions(
                zone_labels, projection, x_range, y_range, width or 600, height or 600
            )
        else:
            positions = zone_label_positions(zone_labels, x_range, y_range, width or 800, height or 400)
    kdims = ["x", "y"] if polar else ["lon", "lat"]
    return hv.Labels(positions, kdims=kdims, vdims="zone", group="ZoneLabels").opts(
        text_color="white",
        text_font_size=LABEL_FONT,
        text_alpha=0.9,
        # legible on the bright polar caps and deserts too
        background_fill_color="black",
        background_fill_alpha=0.55,
        border_radius=2,
    )


def density_image(
    lon: np.ndarray,
    lat: np.ndarray,
    bounds: tuple[float, float, float, float],
    nx: int,
    ny: int,
    colors: tuple[str, str],
) -> dict:
    """Column data of a Bokeh ``image_rgba`` shading where the hits are: the count per cell,
    smoothed over its neighbours, from transparent ``colors[0]`` (few) to ``colors[1]`` (most)."""
    west, south, east, north = bounds
    counts, _, _ = np.histogram2d(
        np.asarray(lat, float), np.asarray(lon, float), bins=(ny, nx), range=((south, north), (west, east))
    )
    padded = np.pad(counts, 1)
    smooth = sum(
        padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx] * (2.0 if dx == dy == 0 else 1.0)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    level = np.sqrt(smooth / smooth.max()) if smooth.max() > 0 else smooth
    low, high = (np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)], float) for c in colors)
    rgb = low + level[..., None] * (high - low)
    alpha = np.where(level > 0, 40 + 100 * level, 0)  # the basemap stays readable underneath
    rgba = np.dstack([rgb, alpha]).round().astype(np.uint8)
    image = rgba.view(np.uint32).reshape(ny, nx)
    return {"image": [image], "x": [west], "y": [south], "dw": [east - west], "dh": [north - south]}


def hirise_rectangles(table: pd.DataFrame, projection: MapProjection | None = None) -> hv.Rectangles:
    """HiRISE footprints as rectangles with id and date, for rasterizing or hovering: in lon/lat,
    or in a polar ``projection`` each footprint of the view's cap as its box in the view's plane
    (around its corners and edge midpoints, since a parallel bends there; a footprint is a few
    kilometres across, so the box differs little from its shape)."""
    vdims = ["observation_id", "date"]
    if projection is None or not projection.polar:
        return hv.Rectangles(table, kdims=["west", "south", "east", "north"], vdims=vdims)
    west, south, east, north = (table[k].to_numpy(float) for k in ("west", "south", "east", "north"))
    x0, y0, x1, y1 = projection.extent
    corner_lat = abs(float(projection.inverse(x1, y1)[1]))  # the view reaches this far from its pole
    keep = projection.sign * np.where(projection.sign > 0, north, south) >= corner_lat
    west, south, east, north = west[keep], south[keep], east[keep], north[keep]
    mid_lon, mid_lat = (west + east) / 2, (south + north) / 2
    x, y = projection.forward(
        np.column_stack([west, mid_lon, east, east, east, mid_lon, west, west]),
        np.column_stack([south, south, south, mid_lat, north, north, north, mid_lat]),
    )
    boxes = pd.DataFrame({"x0": x.min(axis=1), "y0": y.min(axis=1), "x1": x.max(axis=1), "y1": y.max(axis=1)})
    for name in vdims:
        boxes[name] = table[name].to_numpy()[keep]
    return hv.Rectangles(boxes, kdims=["x0", "y0", "x1", "y1"], vdims=vdims)
