"""Map projections of a body: the whole planet in plate carrée, and each polar cap in polar
stereographic.

A projection is a cartopy projection on the body's own sphere (GeoViews elements carry it), plus
what the map needs to know about it: lon/lat to map coordinates and back, its extent and aspect,
the first window shown, the basemap resampled into it, tile footprints and regions as shapes in
it, and a shape drawn on it turned into lon/lat polygons that the search filters understand. The
map (``map_view``) and its drawing layers (``drawing``) have one code path for every projection:
what differs between the planet and a pole is answered here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import cartopy.crs as ccrs
import numpy as np
import pandas as pd
import pyproj

from lookalike.indexer.export import pole_ring
from lookalike.indexer.thumbnails import SourceImage
from lookalike.indexer.tiling import holds_pole, polar_plane

PROJECTIONS = {"global": "Whole planet", "north": "North pole", "south": "South pole"}
POLAR_EDGE_LAT = 55.0  # a polar map reaches down to this latitude at its edges' midpoints
POLAR_IMAGE_PIXELS = 2048  # the basemap of a polar map, a side
POLAR_MAP_PX = 600  # a polar map's side on screen (the whole planet's map is the page's width)
POLAR_DENSITY_CELLS = 160  # cells of the hit density grid a side, over a polar map's square
# the hit density grid of a planet-wide map has at most this many cells per tile (and at least
# MIN_DENSITY_CELLS): it is sent as a 4-byte-per-cell image with every search
DENSITY_CELLS_PER_TILE, MIN_DENSITY_CELLS = 16, 4096
FOCUS_TILES = 2.5  # a focused tile is panned to with this many of its sizes either side


@dataclass(frozen=True)
class MapProjection:
    """One projection of a body of ``radius`` metres, by ``name``: 'global' (lon/lat degrees) or
    'north' / 'south' (polar stereographic metres, true scale at the pole)."""

    name: str = "global"
    radius: float = 3_396_190.0

    def __post_init__(self) -> None:
        if self.name not in PROJECTIONS:
            raise ValueError(f"unknown map projection {self.name!r}; choose from {', '.join(PROJECTIONS)}")

    @classmethod
    def of(cls, name: str, geographic: pyproj.CRS) -> MapProjection:
        return cls(name, float(geographic.ellipsoid.semi_major_metre))

    @property
    def polar(self) -> bool:
        return self.name != "global"

    @property
    def lonlat(self) -> bool:
        """Whether map coordinates are lon/lat degrees (the whole planet): the drawing layers
        then hold the state's regions themselves."""
        return not self.polar

    @property
    def sign(self) -> float:
        return -1.0 if self.name == "south" else 1.0

    @property
    def aspect(self) -> float:
        """Width over height of the map: the planet 2:1, a polar cap square."""
        return 1.0 if self.polar else 2.0

    @cached_property
    def globe(self) -> ccrs.Globe:
        return ccrs.Globe(semimajor_axis=self.radius, semiminor_axis=self.radius, ellipse=None)

    @cached_property
    def crs(self) -> ccrs.CRS:
        """The cartopy projection."""
        if self.name == "north":
            return ccrs.NorthPolarStereo(globe=self.globe)
        if self.name == "south":
            return ccrs.SouthPolarStereo(globe=self.globe)
        return ccrs.PlateCarree(globe=self.globe)

    @cached_property
    def lonlat_crs(self) -> ccrs.CRS:
        """Lon/lat degrees on the same sphere: what data elements are declared in."""
        return ccrs.PlateCarree(globe=self.globe)

    def forward(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat degrees to map coordinates (the spherical formulas cartopy also uses): in a
        polar map, the unit-sphere polar plane of the tiler scaled to the body's diameter."""
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
        if not self.polar:
            return lon, lat
        x, y = polar_plane(lon, lat, 1 if self.name == "north" else 2)
        return 2.0 * self.radius * x, 2.0 * self.radius * y

    def inverse(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates to lon/lat degrees."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        if not self.polar:
            return x, y
        rho = np.hypot(x, y)
        lat = self.sign * (90.0 - 2.0 * np.degrees(np.arctan(rho / (2.0 * self.radius))))
        lon = np.degrees(np.arctan2(x, -self.sign * y))
        return lon, lat

    def visible(self, lat) -> np.ndarray:
        """Whether places at ``lat`` belong on this map (a polar map shows its own hemisphere)."""
        lat = np.asarray(lat, float)
        return np.ones(lat.shape, bool) if not self.polar else self.sign * lat > 0

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the whole map."""
        if not self.polar:
            return -180.0, -90.0, 180.0, 90.0
        half = float(self.forward(90.0, self.sign * POLAR_EDGE_LAT)[0])
        return -half, -half, half, half

    def basemap_bounds(
        self, image_bounds: tuple[float, float, float, float]
    ) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) the basemap covers in the map: the source image's own bounds, or a
        polar map's square (the image resampled into it)."""
        return self.extent if self.polar else tuple(image_bounds)

    def first_window(
        self, tiles: pd.DataFrame, image_bounds: tuple[float, float, float, float]
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """x and y ranges a new map shows: a polar cap whole; the whole planet, or the indexed
        area where it covers much less."""
        if self.polar:
            x0, y0, x1, y1 = self.extent
            return (x0, x1), (y0, y1)
        return indexed_window(tiles, image_bounds, self.aspect)

    def overlay_options(self, xlim: tuple[float, float], ylim: tuple[float, float]) -> dict:
        """HoloViews options of the map's overlay that depend on the projection."""
        if not self.polar:
            # the first window is set on the figure (``MapView``), not as xlim/ylim: HoloViews
            # renders a plot with limits and range streams a second time as the page is made
            return dict(aspect=self.aspect, xlabel="longitude (°E)", ylabel="latitude (°N)")
        # a square the height of the global map, not the page's width; GeoViews needs the
        # limits, or it shows the projection's whole domain
        return dict(
            aspect=self.aspect,
            max_height=POLAR_MAP_PX,
            max_width=POLAR_MAP_PX,
            xlim=xlim,
            ylim=ylim,
            projection=self.crs,
            global_extent=False,
            xaxis=None,
            yaxis=None,
        )

    @property
    def detail_px(self) -> tuple[int, int]:
        """(width, height) in screen pixels assumed for the first window's detail basemap."""
        return round(POLAR_MAP_PX * self.aspect), POLAR_MAP_PX

    def density_cells(self, tiles: pd.DataFrame) -> tuple[tuple[float, float, float, float], int, int]:
        """Bounds, columns and rows of the hit density grid: about a tile a cell over the
        index's tiles, or over a polar map's square."""
        if self.polar:
            return self.extent, POLAR_DENSITY_CELLS, POLAR_DENSITY_CELLS
        return density_grid(tiles)

    def focus_window(self, corner_lons, corner_lats) -> tuple[float, float, float, float]:
        """(cx, cy, half width, half height) of a window a few tiles wide around a footprint
        (corners in lon/lat, unwrapped around its centre), at the map's aspect."""
        xs, ys = self.forward(corner_lons, corner_lats)
        x0, x1, y0, y1 = float(np.min(xs)), float(np.max(xs)), float(np.min(ys)), float(np.max(ys))
        half = max(x1 - x0, (y1 - y0) * self.aspect, 1.0) * FOCUS_TILES
        return (x0 + x1) / 2, (y0 + y1) / 2, half, half / self.aspect

    def footprint_rings(
        self, corner_lons: np.ndarray, corner_lats: np.ndarray, centre_lons: np.ndarray
    ) -> list[np.ndarray]:
        """Closed rings (n + 1, 2) in map coordinates of tile footprints ((n, 4) corners): in a
        polar map the corners go straight into the plane, so a tile around the pole stays whole."""
        if not self.polar:
            return footprint_rings(corner_lons, corner_lats, centre_lons)
        return [
            np.column_stack(self.forward(np.r_[lo, lo[:1]], np.r_[la, la[:1]]))
            for lo, la in zip(np.asarray(corner_lons, float), np.asarray(corner_lats, float))
        ]

    # glyphs of lon/lat boxes (landmarks, the typed bbox): quads on the planet, patches at a pole
    @property
    def box_glyph(self) -> tuple[str, dict[str, str]]:
        """The Bokeh glyph method and its fields for boxes given by ``box_columns``."""
        if self.polar:
            return "patches", {"xs": "xs", "ys": "ys"}
        return "quad", {"left": "left", "right": "right", "bottom": "bottom", "top": "top"}

    def box_columns(self, west, south, east, north) -> dict:
        """Column data of lon/lat boxes for ``box_glyph``: a box across 180° runs past the edge;
        in a polar map each box is the quadrilateral of its corners."""
        west, south, north = (np.asarray(v, float) for v in (west, south, north))
        east = np.asarray(east, float)
        east = np.where(east < west, east + 360.0, east)
        if not self.polar:
            return {"left": west, "right": east, "bottom": south, "top": north}
        x, y = self.forward(
            np.column_stack([west, east, east, west]), np.column_stack([south, south, north, north])
        )
        return {"xs": list(x), "ys": list(y)}

    def region_rings(self, boxes: list, polygons: list | None = None) -> dict:
        """Column data ``xs``, ``ys`` of lon/lat boxes and polygons as rings in the map (a box's
        edges densified, as its parallels bend in a polar map)."""
        rings = []
        t = np.linspace(0.0, 1.0, 33)
        for west, south, east, north in boxes:
            east = east + 360.0 if east < west else east
            lons = np.r_[
                west + (east - west) * t, np.full(33, east), east - (east - west) * t, np.full(33, west)
            ]
            lats = np.r_[
                np.full(33, south),
                south + (north - south) * t,
                np.full(33, north),
                north - (north - south) * t,
            ]
            rings.append((lons, lats))
        rings += [
            (np.array([p[0] for p in poly], float), np.array([p[1] for p in poly], float))
            for poly in polygons or []
            if len(poly) >= 3
        ]
        projected = [self.forward(lons, lats) for lons, lats in rings if self.visible(lats).all()]
        return {"xs": [x for x, _ in projected], "ys": [y for _, y in projected]}

    def projected_image(self, image: SourceImage, pixels: int = POLAR_IMAGE_PIXELS) -> np.ndarray:
        """The basemap resampled into this polar projection: (pixels, pixels, 3) uint8, row 0 at the
        top (bilinear from the lon/lat image; places the image does not cover are black)."""
        x0, y0, x1, y1 = self.extent
        step = (x1 - x0) / pixels
        xs = x0 + step * (np.arange(pixels) + 0.5)
        ys = y1 - step * (np.arange(pixels) + 0.5)
        out = np.empty((pixels, pixels, 3), np.uint8)
        for start in range(0, pixels, 256):  # in bands: bounded memory for the float work
            gx, gy = np.meshgrid(xs, ys[start : start + 256])
            lon, lat = self.inverse(gx, gy)
            out[start : start + 256] = image.sample(lon, lat)
        return out

    def ring_to_lonlat(self, x, y, densify: int = 16) -> list[list[tuple[float, float]]]:
        """A closed shape drawn on the map, as lon/lat polygons for the search filters.

        Each edge is densified (straight on the map, curved on the planet). A shape around the
        pole is closed along the antimeridian and the pole's latitude, one across 180 degrees is
        cut in two there, as GeoJSON would; on the whole planet's map the shape is returned as is.
        """
        x, y = np.asarray(x, float), np.asarray(y, float)
        if not self.polar:
            return [list(zip(x.tolist(), y.tolist()))]
        t = np.linspace(0.0, 1.0, densify, endpoint=False)
        x2, y2 = np.roll(x, -1), np.roll(y, -1)
        dense_x = (x[:, None] + (x2 - x)[:, None] * t).ravel()
        dense_y = (y[:, None] + (y2 - y)[:, None] * t).ravel()
        lon, lat = self.inverse(dense_x, dense_y)
        if holds_pole(lon):
            return [_as_points(pole_ring(lon, lat))]
        unwrapped = np.degrees(np.unwrap(np.radians(lon)))
        shift = 360.0 * np.floor((unwrapped.min() + 180.0) / 360.0)
        unwrapped -= shift
        if unwrapped.max() <= 180.0:
            return [_as_points(np.column_stack([unwrapped, lat]))]
        import shapely
        from shapely.geometry import box

        ring = shapely.Polygon(np.column_stack([unwrapped, lat])).buffer(0)
        parts = []
        for clip, offset in (
            (box(-180.0, -90.0, 180.0, 90.0), 0.0),
            (box(180.0, -90.0, 540.0, 90.0), -360.0),
        ):
            piece = ring.intersection(clip)
            for p in getattr(piece, "geoms", [piece]):
                if not p.is_empty and p.area > 0:
                    coords = np.asarray(p.exterior.coords)[:-1]
                    parts.append(_as_points(coords + [offset, 0.0]))
        return parts


def indexed_window(
    tiles: pd.DataFrame, bounds: tuple[float, float, float, float], aspect: float = 2.0
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Lon/lat ranges of a first window: the whole planet, or the indexed area when it covers
    much less."""
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
    cy = min(max(cy, south + half_h), north - half_h)  # keep the window on the planet
    return (cx - half_w, cx + half_w), (cy - half_h, cy + half_h)


def density_grid(
    tiles: pd.DataFrame, max_bins: int = 512
) -> tuple[tuple[float, float, float, float], int, int]:
    """(west, south, east, north) and the columns and rows of the hit density grid of an index:
    cells about one tile across, over the tiles' centres; coarser where that would make many
    more cells than tiles (scenes far apart: a mostly empty image sent with every search)."""
    if len(tiles) == 0:
        return (0.0, 0.0, 1.0, 1.0), 1, 1
    lon, lat = tiles["lon"].to_numpy(float), tiles["lat"].to_numpy(float)
    corners = np.column_stack([tiles[f"lon{i}"].to_numpy(float) for i in range(4)])
    spans = (corners - lon[:, None] + 180.0) % 360.0 - 180.0
    cell = float(np.nanmedian(spans.max(axis=1) - spans.min(axis=1)))
    cell = cell if np.isfinite(cell) and cell > 0 else 1.0
    west, east = float(np.nanmin(lon)) - cell, float(np.nanmax(lon)) + cell
    south, north = float(np.nanmin(lat)) - cell, float(np.nanmax(lat)) + cell
    nx = int(min(max_bins, max(1, math.ceil((east - west) / cell))))
    ny = int(min(max_bins, max(1, math.ceil((north - south) / cell))))
    shrink = math.sqrt(nx * ny / max(MIN_DENSITY_CELLS, DENSITY_CELLS_PER_TILE * len(tiles)))
    if shrink > 1.0:
        nx, ny = max(1, int(nx / shrink)), max(1, int(ny / shrink))
    return (west, south, east, north), nx, ny


def footprint_rings(
    corner_lons: np.ndarray, corner_lats: np.ndarray, centre_lons: np.ndarray
) -> list[np.ndarray]:
    """Closed lon/lat rings of tile footprints ((n, 4) corner longitudes and latitudes, n centre
    longitudes), unwrapped around each centre; a footprint around a pole runs along the map's
    edges and the pole's latitude."""
    rings = []
    for lons, lats, centre in zip(
        np.asarray(corner_lons, float), np.asarray(corner_lats, float), np.asarray(centre_lons, float)
    ):
        if holds_pole(lons):
            ring = pole_ring(lons, lats)
            rings.append(np.vstack([ring, ring[:1]]))
            continue
        lons = (lons - centre + 180.0) % 360.0 - 180.0 + centre
        rings.append(np.column_stack([np.append(lons, lons[0]), np.append(lats, lats[0])]))
    return rings


def _as_points(ring: np.ndarray) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in ring]
