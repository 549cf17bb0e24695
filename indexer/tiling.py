"""Tiling maths: 6-degree transverse-Mercator zones on any body, and a fixed tile grid per zone.

Earth uses the real UTM zones (EPSG:326zz north, 327zz south). Other bodies (Mars,
``IAU_2015:49900``) use the same 6-degree zoning: a transverse Mercator on the body's own
geographic CRS, central meridian ``-183 + 6 * zone``, false easting 500 km, false northing
10,000 km in the south, and scale factor 1 (PROJ reserves k = 0.9996 for ellipsoidal UTM).

Within a zone the grid is anchored at projected (0, 0): tile ``(row, col)`` has its top-left
corner at ``x = col * stride * gsd`` and ``y = -row * stride * gsd``. Tile ids are therefore
stable: the same place, tile size, stride and resolution always get the same id.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyproj
from pyproj.crs import ProjectedCRS
from pyproj.crs.coordinate_operation import TransverseMercatorConversion

from lookalike.errors import OptionError

ZONE_WIDTH_DEG = 6.0
FALSE_EASTING = 500_000.0
SOUTH_FALSE_NORTHING = 10_000_000.0
DEFAULT_LAT_RANGE = (-80.0, 84.0)  # UTM's own limits; polar caps need a polar projection
MAX_TILE_SIZE = 2048  # pixels a side


@dataclass(frozen=True)
class Zone:
    """One 6-degree zone and hemisphere, e.g. ``Zone(33, 'N')`` printed as ``33N``."""

    number: int
    hemisphere: str  # "N" or "S"

    def __post_init__(self) -> None:
        if not 1 <= self.number <= 60 or self.hemisphere not in ("N", "S"):
            raise OptionError(f"invalid zone {self.number}{self.hemisphere}")

    @property
    def label(self) -> str:
        return f"{self.number}{self.hemisphere}"

    @property
    def central_meridian(self) -> float:
        return -183.0 + ZONE_WIDTH_DEG * self.number

    @property
    def lon_range(self) -> tuple[float, float]:
        west = -180.0 + ZONE_WIDTH_DEG * (self.number - 1)
        return west, west + ZONE_WIDTH_DEG

    @classmethod
    def parse(cls, label: str) -> "Zone":
        label = label.strip().upper()
        try:
            return cls(int(label[:-1]), label[-1])
        except (ValueError, IndexError):
            raise OptionError(f"invalid zone label {label!r}; expected e.g. 33N or 7S") from None

    @classmethod
    def at(cls, lon: float, lat: float) -> "Zone":
        number = int(math.floor((wrap_lon(lon) + 180.0) / ZONE_WIDTH_DEG)) % 60 + 1
        return cls(number, "N" if lat >= 0 else "S")


def wrap_lon(lon):
    """Longitude into [-180, 180)."""
    return (np.asarray(lon, dtype=float) + 180.0) % 360.0 - 180.0


def is_earth(geographic: pyproj.CRS) -> bool:
    return abs(geographic.ellipsoid.semi_major_metre - 6_378_137.0) < 1_000.0


@lru_cache(maxsize=512)
def _zone_crs(geographic_wkt: str, number: int, hemisphere: str) -> pyproj.CRS:
    geographic = pyproj.CRS.from_wkt(geographic_wkt)
    if is_earth(geographic):
        return pyproj.CRS.from_epsg((32600 if hemisphere == "N" else 32700) + number)
    conversion = TransverseMercatorConversion(
        latitude_natural_origin=0.0,
        longitude_natural_origin=Zone(number, hemisphere).central_meridian,
        false_easting=FALSE_EASTING,
        false_northing=0.0 if hemisphere == "N" else SOUTH_FALSE_NORTHING,
        scale_factor_natural_origin=1.0,
    )
    return ProjectedCRS(conversion=conversion, geodetic_crs=geographic,
                        name=f"{geographic.name} / TM zone {number}{hemisphere}")


def zone_crs(geographic: pyproj.CRS, zone: Zone) -> pyproj.CRS:
    """Projected CRS of ``zone`` on the body of ``geographic`` (a geographic lon/lat CRS)."""
    return _zone_crs(geographic.to_wkt(), zone.number, zone.hemisphere)


@lru_cache(maxsize=512)
def _transformers(geographic_wkt: str, number: int, hemisphere: str):
    geographic = pyproj.CRS.from_wkt(geographic_wkt)
    projected = _zone_crs(geographic_wkt, number, hemisphere)
    forward = pyproj.Transformer.from_crs(geographic, projected, always_xy=True)
    inverse = pyproj.Transformer.from_crs(projected, geographic, always_xy=True)
    return forward, inverse


def to_zone(geographic: pyproj.CRS, zone: Zone, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat (degrees) to projected x/y (metres) of ``zone``."""
    forward, _ = _transformers(geographic.to_wkt(), zone.number, zone.hemisphere)
    return forward.transform(np.asarray(lon, float), np.asarray(lat, float))


def from_zone(geographic: pyproj.CRS, zone: Zone, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Projected x/y (metres) of ``zone`` to lon/lat (degrees)."""
    _, inverse = _transformers(geographic.to_wkt(), zone.number, zone.hemisphere)
    return inverse.transform(np.asarray(x, float), np.asarray(y, float))


@dataclass(frozen=True)
class TileGrid:
    """Tile size and stride in pixels, and ground sample distance in metres per pixel."""

    size: int = 128
    stride: int = 64
    gsd: float = 1.0

    def __post_init__(self) -> None:
        if not (self.size > 0 and self.stride > 0 and 0 < self.gsd < math.inf):
            raise OptionError("tile size, stride and gsd must be positive")
        if self.size > MAX_TILE_SIZE:
            raise OptionError(f"tile size must be at most {MAX_TILE_SIZE} pixels, got {self.size}")

    @property
    def step(self) -> float:
        return self.stride * self.gsd

    def origin(self, row: int, col: int) -> tuple[float, float]:
        """Projected top-left corner of tile (row, col)."""
        return col * self.step, -row * self.step

    def centre(self, row, col) -> tuple[np.ndarray, np.ndarray]:
        half = self.size * self.gsd / 2.0
        return np.asarray(col) * self.step + half, -np.asarray(row) * self.step - half

    def corners(self, row, col) -> tuple[np.ndarray, np.ndarray]:
        """Projected corners (..., 4) clockwise from top-left."""
        x0, y0 = np.asarray(col)[..., None] * self.step, -np.asarray(row)[..., None] * self.step
        extent = self.size * self.gsd
        dx = np.array([0.0, extent, extent, 0.0])
        dy = np.array([0.0, 0.0, -extent, -extent])
        return x0 + dx, y0 + dy

    def covering(self, xmin: float, ymin: float, xmax: float, ymax: float):
        """Row and column ranges of tiles that intersect a projected box."""
        extent = self.size * self.gsd
        col0 = math.floor((xmin - extent) / self.step) + 1
        col1 = math.ceil(xmax / self.step)
        row0 = math.floor(-ymax / self.step - (self.size / self.stride)) + 1
        row1 = math.ceil(-ymin / self.step)
        if max(abs(row0), abs(row1), abs(col0), abs(col1)) >= 2**31:  # tile records hold int32
            raise OptionError(f"tiles of {self.gsd:g} m per pixel are too small to number in a zone; "
                              "choose a coarser --gsd")
        return range(row0, max(row0, row1)), range(col0, max(col0, col1))


def zones_for_bounds(west: float, south: float, east: float, north: float,
                     lat_range: tuple[float, float] = DEFAULT_LAT_RANGE) -> list[Zone]:
    """Zones whose lon band and hemisphere intersect a lon/lat box (west > east crosses 180)."""
    south, north = max(south, lat_range[0]), min(north, lat_range[1])
    if south >= north:
        return []
    hemis = [h for h, ok in (("N", north > 0), ("S", south < 0)) if ok]
    if west <= east:
        spans = [(west, east)]
    else:
        spans = [(west, 180.0), (-180.0, east)]
    numbers: set[int] = set()
    for lo, hi in spans:
        first = int(math.floor((max(lo, -180.0) + 180.0) / ZONE_WIDTH_DEG)) + 1
        last = int(math.ceil((min(hi, 180.0) + 180.0) / ZONE_WIDTH_DEG))
        numbers.update(range(max(first, 1), min(last, 60) + 1))
    return [Zone(n, h) for h in hemis for n in sorted(numbers)]


def zone_box(geographic: pyproj.CRS, zone: Zone, west: float, south: float, east: float,
             north: float, lat_range: tuple[float, float] = DEFAULT_LAT_RANGE, densify: int = 64):
    """Projected bounding box of the part of a lon/lat box that lies in ``zone``, or None."""
    zw, ze = zone.lon_range
    west, east = max(west, zw), min(east, ze)
    if zone.hemisphere == "N":
        south, north = max(south, 0.0, lat_range[0]), min(north, lat_range[1])
    else:
        south, north = max(south, lat_range[0]), min(north, 0.0, lat_range[1])
    if west >= east or south >= north:
        return None
    t = np.linspace(0.0, 1.0, densify)
    lons = np.concatenate([west + (east - west) * t, np.full(densify, east),
                           east - (east - west) * t, np.full(densify, west)])
    lats = np.concatenate([np.full(densify, south), south + (north - south) * t,
                           np.full(densify, north), north - (north - south) * t])
    # the zone's widest extent in x is along the equator, which the box edges may not include
    if south < 0 < north:
        lons = np.concatenate([lons, west + (east - west) * t])
        lats = np.concatenate([lats, np.zeros(densify)])
    x, y = to_zone(geographic, zone, lons, lats)
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())


@dataclass(frozen=True)
class TilePlace:
    """Geometry of one tile: where it sits in its zone grid and on the body."""

    zone: Zone
    row: int
    col: int
    lon: float
    lat: float
    corners_lon: tuple[float, float, float, float]
    corners_lat: tuple[float, float, float, float]


def tile_places(geographic: pyproj.CRS, zone: Zone, grid: TileGrid, rows: range, cols: range,
                lat_range: tuple[float, float] = DEFAULT_LAT_RANGE,
                lon_range: tuple[float, float] | None = None) -> Iterator[TilePlace]:
    """Tiles of ``rows`` x ``cols`` whose centre falls inside the zone (and optional lon range).

    Keeping a tile only in the zone that holds its centre makes every place belong to one zone.
    """
    if len(rows) == 0 or len(cols) == 0:
        return
    rr, cc = np.meshgrid(np.asarray(rows), np.asarray(cols), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    cx, cy = grid.centre(rr, cc)
    lon, lat = from_zone(geographic, zone, cx, cy)
    west, east = zone.lon_range
    lat_lo, lat_hi = (0.0, lat_range[1]) if zone.hemisphere == "N" else (lat_range[0], 0.0)
    keep = (lon >= west) & (lon < east) & (lat >= max(lat_lo, lat_range[0])) & (lat < lat_hi)
    keep &= np.isfinite(lon) & np.isfinite(lat)
    if lon_range is not None:
        keep &= (lon >= lon_range[0]) & (lon <= lon_range[1])
    if not keep.any():
        return
    rr, cc, lon, lat = rr[keep], cc[keep], lon[keep], lat[keep]
    kx, ky = grid.corners(rr, cc)
    klon, klat = from_zone(geographic, zone, kx, ky)
    klon = wrap_lon(klon)
    for i in range(len(rr)):
        yield TilePlace(zone, int(rr[i]), int(cc[i]), float(lon[i]), float(lat[i]),
                        tuple(map(float, klon[i])), tuple(map(float, klat[i])))
