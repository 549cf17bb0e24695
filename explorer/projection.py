"""Map views of a body: the whole planet in plate carrée, and each polar cap in polar stereographic.

A view is a cartopy projection on the body's own sphere (GeoViews elements carry it), plus the
pure functions the explorer needs around it: lon/lat to view coordinates and back, the view's
extent, the basemap resampled into the view, and a shape drawn in the view turned into lon/lat
polygons that the search filters understand.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cartopy.crs as ccrs
import numpy as np
import pyproj

from lookalike.indexer.export import pole_ring
from lookalike.indexer.thumbnails import SourceImage
from lookalike.indexer.tiling import holds_pole, polar_plane

VIEWS = {"global": "Whole planet", "north": "North pole", "south": "South pole"}
POLAR_EDGE_LAT = 55.0  # a polar view reaches down to this latitude at its edges' midpoints
POLAR_IMAGE_PIXELS = 2048  # the basemap of a polar view, a side


@dataclass(frozen=True)
class MapProjection:
    """One view of a body of ``radius`` metres: 'global' (lon/lat degrees) or 'north' / 'south'
    (polar stereographic metres, true scale at the pole)."""

    view: str = "global"
    radius: float = 3_396_190.0

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"unknown map view {self.view!r}; choose from {', '.join(VIEWS)}")

    @classmethod
    def of(cls, view: str, geographic: pyproj.CRS) -> "MapProjection":
        return cls(view, float(geographic.ellipsoid.semi_major_metre))

    @property
    def polar(self) -> bool:
        return self.view != "global"

    @property
    def sign(self) -> float:
        return -1.0 if self.view == "south" else 1.0

    @cached_property
    def globe(self) -> ccrs.Globe:
        return ccrs.Globe(semimajor_axis=self.radius, semiminor_axis=self.radius, ellipse=None)

    @cached_property
    def crs(self) -> ccrs.CRS:
        """The cartopy projection of the view."""
        if self.view == "north":
            return ccrs.NorthPolarStereo(globe=self.globe)
        if self.view == "south":
            return ccrs.SouthPolarStereo(globe=self.globe)
        return ccrs.PlateCarree(globe=self.globe)

    @cached_property
    def lonlat_crs(self) -> ccrs.CRS:
        """Lon/lat degrees on the same sphere: what data elements are declared in."""
        return ccrs.PlateCarree(globe=self.globe)

    def forward(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat degrees to view coordinates (the spherical formulas cartopy also uses): in a
        polar view, the unit-sphere polar plane of the tiler scaled to the body's diameter."""
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
        if not self.polar:
            return lon, lat
        x, y = polar_plane(lon, lat, 1 if self.view == "north" else 2)
        return 2.0 * self.radius * x, 2.0 * self.radius * y

    def inverse(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """View coordinates to lon/lat degrees."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        if not self.polar:
            return x, y
        rho = np.hypot(x, y)
        lat = self.sign * (90.0 - 2.0 * np.degrees(np.arctan(rho / (2.0 * self.radius))))
        lon = np.degrees(np.arctan2(x, -self.sign * y))
        return lon, lat

    def visible(self, lat) -> np.ndarray:
        """Whether places at ``lat`` belong on this view (a polar view shows its own hemisphere)."""
        lat = np.asarray(lat, float)
        return np.ones(lat.shape, bool) if not self.polar else self.sign * lat > 0

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the whole view."""
        if not self.polar:
            return -180.0, -90.0, 180.0, 90.0
        half = float(self.forward(90.0, self.sign * POLAR_EDGE_LAT)[0])
        return -half, -half, half, half

    @property
    def axis_names(self) -> tuple[str, str]:
        return ("lon", "lat") if not self.polar else ("x", "y")

    def view_image(self, image: SourceImage, pixels: int = POLAR_IMAGE_PIXELS) -> np.ndarray:
        """The basemap resampled into this polar view: (pixels, pixels, 3) uint8, row 0 at the
        top (bilinear from the lon/lat image; places the image does not cover are black)."""
        x0, y0, x1, y1 = self.extent
        step = (x1 - x0) / pixels
        xs = x0 + step * (np.arange(pixels) + 0.5)
        ys = y1 - step * (np.arange(pixels) + 0.5)
        out = np.empty((pixels, pixels, 3), np.uint8)
        for start in range(0, pixels, 256):  # in bands: bounded memory for the float work
            gx, gy = np.meshgrid(xs, ys[start:start + 256])
            lon, lat = self.inverse(gx, gy)
            out[start:start + 256] = image.sample(lon, lat)
        return out

    def ring_to_lonlat(self, x, y, densify: int = 16) -> list[list[tuple[float, float]]]:
        """A closed shape drawn in the view, as lon/lat polygons for the search filters.

        Each edge is densified (straight in the view, curved on the planet). A shape around the
        pole is closed along the antimeridian and the pole's latitude, one across 180 degrees is
        cut in two there, as GeoJSON would; in the global view the shape is returned as is.
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
        for clip, offset in ((box(-180.0, -90.0, 180.0, 90.0), 0.0), (box(180.0, -90.0, 540.0, 90.0), -360.0)):
            piece = ring.intersection(clip)
            for p in getattr(piece, "geoms", [piece]):
                if not p.is_empty and p.area > 0:
                    coords = np.asarray(p.exterior.coords)[:-1]
                    parts.append(_as_points(coords + [offset, 0.0]))
        return parts


def _as_points(ring: np.ndarray) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in ring]
