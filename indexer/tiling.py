"""Tiling maths: the UTM/UPS zones on any body, and a fixed tile grid per zone.

Between 80 S and 84 N the zones are 6 degrees of longitude wide, one per hemisphere. Earth
uses the real UTM zones (EPSG:326zz north, 327zz south). Other bodies (Mars,
``IAU_2015:49900``) use the same 6-degree zoning: a transverse Mercator on the body's own
geographic CRS, central meridian ``-183 + 6 * zone``, false easting 500 km, false northing
10,000 km in the south, and scale factor 1 (PROJ reserves k = 0.9996 for ellipsoidal UTM).

Poleward of those limits each cap is one polar stereographic zone, ``UPSN`` and ``UPSS``: on
Earth the Universal Polar Stereographic system (EPSG:32661 and 32761), on other bodies the same
projection on their own sphere (latitude of origin +-90, central meridian 0, scale 0.994, false
easting and northing 2,000 km).

Within a zone the grid is anchored at projected (0, 0): tile ``(row, col)`` has its top-left
corner at ``x = col * stride * gsd`` and ``y = -row * stride * gsd``. Tile ids are therefore
stable: the same place, tile size, stride and resolution always get the same id.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyproj
from pyproj.crs import ProjectedCRS
from pyproj.crs.coordinate_operation import PolarStereographicAConversion, TransverseMercatorConversion

from lookalike.errors import OptionError
from lookalike.indexer.defaults import TILE_SIZE, TILE_STRIDE

ZONE_WIDTH_DEG = 6.0
FALSE_EASTING = 500_000.0
SOUTH_FALSE_NORTHING = 10_000_000.0
UTM_LAT_RANGE = (-80.0, 84.0)  # the 6-degree zones; the caps beyond are polar zones
DEFAULT_LAT_RANGE = (-90.0, 90.0)
POLAR = 0  # the zone number of a polar cap
POLAR_SCALE = 0.994
POLAR_FALSE_ORIGIN = 2_000_000.0
MAX_TILE_SIZE = 2048  # pixels a side
POLAR_PLANE_LAT = 60.0  # footprints poleward of this are compared in a polar plane


@dataclass(frozen=True)
class Zone:
    """One 6-degree zone and hemisphere, e.g. ``Zone(33, 'N')`` printed as ``33N``, or a polar
    cap, ``Zone(0, 'N')`` printed as ``UPSN``."""

    number: int
    hemisphere: str  # "N" or "S"

    def __post_init__(self) -> None:
        if not (1 <= self.number <= 60 or self.number == POLAR) or self.hemisphere not in ("N", "S"):
            raise OptionError(f"invalid zone {self.number}{self.hemisphere}")

    @property
    def polar(self) -> bool:
        return self.number == POLAR

    @property
    def label(self) -> str:
        return f"UPS{self.hemisphere}" if self.polar else f"{self.number}{self.hemisphere}"

    @property
    def central_meridian(self) -> float:
        return 0.0 if self.polar else -183.0 + ZONE_WIDTH_DEG * self.number

    @property
    def lon_range(self) -> tuple[float, float]:
        if self.polar:
            return -180.0, 180.0
        west = -180.0 + ZONE_WIDTH_DEG * (self.number - 1)
        return west, west + ZONE_WIDTH_DEG

    @property
    def lat_range(self) -> tuple[float, float]:
        """Latitudes of the zone's tile centres: [south, north)."""
        south, north = UTM_LAT_RANGE
        if self.polar:
            return (north, 90.0 + 1e-9) if self.hemisphere == "N" else (-90.0, south)
        return (0.0, north) if self.hemisphere == "N" else (south, 0.0)

    @classmethod
    def parse(cls, label: str) -> Zone:
        label = label.strip().upper().replace(" ", "")
        if label in ("UPSN", "UPSS"):
            return cls(POLAR, label[-1])
        try:
            number = int(label[:-1])
            if number == POLAR:
                raise ValueError
            return cls(number, label[-1])
        except (ValueError, IndexError, OptionError):
            raise OptionError(
                f"invalid zone label {label!r}; expected e.g. 33N, 7S, or UPSN / UPSS for a polar cap"
            ) from None

    @property
    def sort_key(self) -> tuple[str, int]:
        """Northern zones first, west to east, each hemisphere's polar cap after its zones."""
        return self.hemisphere, 61 if self.polar else self.number

    @classmethod
    def at(cls, lon: float, lat: float) -> Zone:
        hemisphere = "N" if lat >= 0 else "S"
        if not UTM_LAT_RANGE[0] <= lat < UTM_LAT_RANGE[1]:
            return cls(POLAR, hemisphere)
        number = int(math.floor((wrap_lon(lon) + 180.0) / ZONE_WIDTH_DEG)) % 60 + 1
        return cls(number, hemisphere)


def wrap_lon(lon):
    """Longitude into [-180, 180)."""
    return (np.asarray(lon, dtype=float) + 180.0) % 360.0 - 180.0


def footprint_plane(lon, lat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A plane where small footprints are close to their true shape: (x, y, plane) per point.

    Plane 0 is lon/lat itself; poleward of 60 degrees, where longitudes converge, points go to a
    polar stereographic plane on the unit sphere (1 north, 2 south), in which a footprint that
    holds the pole is still a plain quadrilateral. Footprints and the points tested against them
    must be put in the plane of the footprint's centre.
    """
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    north, south = lat > POLAR_PLANE_LAT, lat < -POLAR_PLANE_LAT
    plane = np.where(north, 1, np.where(south, 2, 0))
    return (*polar_plane(lon, lat, plane), plane)


def polar_plane(lon, lat, plane) -> tuple[np.ndarray, np.ndarray]:
    """Points in ``plane`` (0: lon/lat, 1: north polar, 2: south polar; see ``footprint_plane``)."""
    lon, lat, plane = np.broadcast_arrays(np.asarray(lon, float), np.asarray(lat, float), plane)
    with np.errstate(over="ignore", invalid="ignore"):
        rho = np.tan(np.radians(90.0 - np.where(plane == 2, -lat, lat)) / 2.0)
    rad = np.radians(lon)
    x = np.where(plane == 0, lon, rho * np.sin(rad))
    y = np.where(plane == 0, lat, np.where(plane == 1, -rho * np.cos(rad), rho * np.cos(rad)))
    return x, y


def holds_pole(corners_lon) -> np.ndarray:
    """Whether each footprint ring (..., n) of longitudes winds once around a pole."""
    lons = np.asarray(corners_lon, float)
    steps = np.diff(np.concatenate([lons, lons[..., :1]], axis=-1), axis=-1)
    steps = (steps + 180.0) % 360.0 - 180.0
    return np.abs(steps.sum(axis=-1)) > 180.0


def is_earth(geographic: pyproj.CRS) -> bool:
    return abs(geographic.ellipsoid.semi_major_metre - 6_378_137.0) < 1_000.0


@lru_cache(maxsize=64)
def _parsed(wkt: str) -> pyproj.CRS:
    return pyproj.CRS.from_wkt(wkt)


@lru_cache(maxsize=512)
def _zone_crs(geographic_wkt: str, number: int, hemisphere: str) -> pyproj.CRS:
    geographic = _parsed(geographic_wkt)
    if number == POLAR:
        if is_earth(geographic):
            return pyproj.CRS.from_epsg(32661 if hemisphere == "N" else 32761)
        polar = PolarStereographicAConversion(
            latitude_natural_origin=90.0 if hemisphere == "N" else -90.0,
            longitude_natural_origin=0.0,
            false_easting=POLAR_FALSE_ORIGIN,
            false_northing=POLAR_FALSE_ORIGIN,
            scale_factor_natural_origin=POLAR_SCALE,
        )
        return ProjectedCRS(
            conversion=polar,
            geodetic_crs=geographic,
            name=f"{geographic.name} / polar stereographic {hemisphere}",
        )
    if is_earth(geographic):
        return pyproj.CRS.from_epsg((32600 if hemisphere == "N" else 32700) + number)
    conversion = TransverseMercatorConversion(
        latitude_natural_origin=0.0,
        longitude_natural_origin=Zone(number, hemisphere).central_meridian,
        false_easting=FALSE_EASTING,
        false_northing=0.0 if hemisphere == "N" else SOUTH_FALSE_NORTHING,
        scale_factor_natural_origin=1.0,
    )
    return ProjectedCRS(
        conversion=conversion,
        geodetic_crs=geographic,
        name=f"{geographic.name} / TM zone {number}{hemisphere}",
    )


def zone_crs(geographic: pyproj.CRS, zone: Zone) -> pyproj.CRS:
    """Projected CRS of ``zone`` on the body of ``geographic`` (a geographic lon/lat CRS)."""
    return _zone_crs(geographic.to_wkt(), zone.number, zone.hemisphere)


@lru_cache(maxsize=64)
def _zones_share_datum(geographic_wkt: str) -> bool:
    """Whether every zone of this lon/lat CRS only projects it (same datum, degrees): zones of
    other bodies are built on it; Earth's are the WGS 84 UTM/UPS zones."""
    geographic = _parsed(geographic_wkt)
    if not (geographic.axis_info and geographic.axis_info[0].unit_name == "degree"):
        return False
    zone = _zone_crs(geographic_wkt, 1, "N")
    return zone.geodetic_crs.equals(geographic, ignore_axis_order=True)


@lru_cache(maxsize=512)
def _transformers(geographic_wkt: str, number: int, hemisphere: str):
    projected = _zone_crs(geographic_wkt, number, hemisphere)
    if _zones_share_datum(geographic_wkt):
        # the zone only projects the body's own lon/lat: the conversion itself, without the
        # ~8 ms search PROJ makes for operations between two CRSs (122 zones make a second)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # to_proj4 warns that a CRS loses its metadata
            step = " ".join(p for p in projected.to_proj4().split() if p not in ("+type=crs", "+no_defs"))
        forward = pyproj.Transformer.from_pipeline(
            f"+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad +step {step}"
        )
        inverse = pyproj.Transformer.from_pipeline(
            f"+proj=pipeline +step +inv {step} +step +proj=unitconvert +xy_in=rad +xy_out=deg"
        )
        return forward, inverse
    geographic = _parsed(geographic_wkt)
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

    size: int = TILE_SIZE
    stride: int = TILE_STRIDE
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
            raise OptionError(
                f"tiles of {self.gsd:g} m per pixel are too small to number in a zone; choose a coarser --gsd"
            )
        return range(row0, max(row0, row1)), range(col0, max(col0, col1))


def zones_for_bounds(
    west: float, south: float, east: float, north: float, lat_range: tuple[float, float] = DEFAULT_LAT_RANGE
) -> list[Zone]:
    """Zones whose lon band and latitudes intersect a lon/lat box (west > east crosses 180):
    the 6-degree zones first, then the polar caps."""
    south, north = max(south, lat_range[0]), min(north, lat_range[1])
    if south >= north:
        return []
    zones: list[Zone] = []
    utm_south, utm_north = max(south, UTM_LAT_RANGE[0]), min(north, UTM_LAT_RANGE[1])
    if utm_south < utm_north:
        hemis = [h for h, ok in (("N", utm_north > 0), ("S", utm_south < 0)) if ok]
        if west <= east:
            spans = [(west, east)]
        else:
            spans = [(west, 180.0), (-180.0, east)]
        numbers: set[int] = set()
        for lo, hi in spans:
            first = int(math.floor((max(lo, -180.0) + 180.0) / ZONE_WIDTH_DEG)) + 1
            last = int(math.ceil((min(hi, 180.0) + 180.0) / ZONE_WIDTH_DEG))
            numbers.update(range(max(first, 1), min(last, 60) + 1))
        zones = [Zone(n, h) for h in hemis for n in sorted(numbers)]
    if north > UTM_LAT_RANGE[1]:
        zones.append(Zone(POLAR, "N"))
    if south < UTM_LAT_RANGE[0]:
        zones.append(Zone(POLAR, "S"))
    return zones


def zone_box(
    geographic: pyproj.CRS,
    zone: Zone,
    west: float,
    south: float,
    east: float,
    north: float,
    lat_range: tuple[float, float] = DEFAULT_LAT_RANGE,
    densify: int = 64,
):
    """Projected bounding box of the part of a lon/lat box that lies in ``zone``, or None."""
    zone_south, zone_north = zone.lat_range
    south, north = max(south, zone_south, lat_range[0]), min(north, zone_north, lat_range[1])
    if zone.polar:
        if west > east:  # across 180: one run of longitudes
            east += 360.0
        densify = max(densify, 721)  # a cap's edge is a circle: its extremes need dense points
    else:
        zw, ze = zone.lon_range
        west, east = max(west, zw), min(east, ze)
    if west >= east or south >= north:
        return None
    t = np.linspace(0.0, 1.0, densify)
    lons = np.concatenate(
        [west + (east - west) * t, np.full(densify, east), east - (east - west) * t, np.full(densify, west)]
    )
    lats = np.concatenate(
        [
            np.full(densify, south),
            south + (north - south) * t,
            np.full(densify, north),
            north - (north - south) * t,
        ]
    )
    # the zone's widest extent in x is along the equator, which the box edges may not include
    if south < 0 < north:
        lons = np.concatenate([lons, west + (east - west) * t])
        lats = np.concatenate([lats, np.zeros(densify)])
    x, y = to_zone(geographic, zone, wrap_lon(lons), lats)
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


def tile_places(
    geographic: pyproj.CRS,
    zone: Zone,
    grid: TileGrid,
    rows: range,
    cols: range,
    lat_range: tuple[float, float] = DEFAULT_LAT_RANGE,
    lon_range: tuple[float, float] | None = None,
) -> Iterator[TilePlace]:
    """Tiles of ``rows`` x ``cols`` whose centre falls inside the zone (and optional lon range).

    Keeping a tile only in the zone that holds its centre makes every place belong to one zone.
    """
    if len(rows) == 0 or len(cols) == 0:
        return
    rr, cc = np.meshgrid(np.asarray(rows), np.asarray(cols), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    cx, cy = grid.centre(rr, cc)
    lon, lat = from_zone(geographic, zone, cx, cy)
    if zone.polar:
        lon = wrap_lon(lon)
    west, east = zone.lon_range
    zone_south, zone_north = zone.lat_range
    south, north = max(zone_south, lat_range[0]), min(zone_north, lat_range[1])
    # a tile centred on the pole itself belongs to its cap
    below_north = (lat < north) if north < 90.0 else (lat <= 90.0)
    keep = (lon >= west) & (lon < east) & (lat >= south) & below_north
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
        yield TilePlace(
            zone,
            int(rr[i]),
            int(cc[i]),
            float(lon[i]),
            float(lat[i]),
            tuple(map(float, klon[i])),
            tuple(map(float, klat[i])),
        )
