"""Large rasters read as grayscale scenes (for finding landmarks), and pixel boxes on the body.

``RasterScene`` gives the strip-reading interface of ``models.saliency.ArrayScene`` over a
raster or a window of it, so the saliency detector can walk scenes of any size, at the raster's
own pixel size or coarser (``factor``: a classifier sees the ground at the scale it learned).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from lookalike.data.registry import DATASETS, fetch
from lookalike.errors import SourceError
from lookalike.indexer.sources import RasterSource


# ------------------------------------------------------------------ rasters
class RasterScene:
    """A raster (or a window of it) read as grayscale strips: the ``ArrayScene`` interface.

    Bands: 1 is grey; 2 grey + alpha; 3 RGB and 4 RGB + alpha are reduced to luminance (Rec. 601);
    other counts need ``band`` (1-based). Pixels under the raster's nodata mask or alpha = 0 are
    invalid. ``factor`` > 1 reads the raster averaged over ``factor`` x ``factor`` of its pixels:
    every size, offset and the transform are then in those coarser pixels (``window`` stays in
    the raster's own).
    """

    def __init__(
        self,
        source,
        window: tuple[int, int, int, int] | None = None,
        band: int | None = None,
        factor: float = 1.0,
    ):
        meta = source._meta  # the raster's georeferencing, overrides (crs, bounds) applied
        self.source = source
        self.src = source._open()
        count = int(meta["count"])
        alpha = next((i + 1 for i, c in enumerate(self.src.colorinterp) if c.name == "alpha"), None)
        if band is not None:
            if not 1 <= band <= count:
                self.close()
                raise SourceError(f"{source.path} has {count} band(s); cannot use band {band}")
            self.bands, self.alpha = (int(band),), alpha
        elif count in (1, 2):
            self.bands, self.alpha = (1,), (2 if count == 2 else None)
        elif count in (3, 4):
            self.bands, self.alpha = (1, 2, 3), (4 if count == 4 else alpha)
        else:
            self.close()
            raise SourceError(
                f"{source.path} has {count} bands; landmarks need a grayscale (1), "
                "grey + alpha (2), RGB (3) or RGBA (4) raster, or a band to use "
                "(CLI: --band B)"
            )
        height, width = self.src.height, self.src.width
        if window is None:
            window = (0, 0, width, height)
        x0, y0, x1, y1 = (int(v) for v in window)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            self.close()
            raise SourceError(
                f"window {x0},{y0},{x1},{y1} is not inside the raster {source.path} "
                f"({width} x {height} pixels; give x0,y0,x1,y1 with x0 < x1, y0 < y1)"
            )
        if not factor >= 1.0:
            self.close()
            raise SourceError(f"a scene is read at its own pixel size or coarser, not {factor:g}x finer")
        f = self.factor = float(factor)
        self._window = (x0, y0, x1, y1)
        self.offset = (int(x0 / f), int(y0 / f))
        self.raster_shape = (max(1, round(height / f)), max(1, round(width / f)))
        self.shape = (max(1, round((y1 - y0) / f)), max(1, round((x1 - x0) / f)))
        self.transform = meta["transform"] @ Affine.scale(f)
        self.crs = meta["crs"]
        self.stretch: tuple[float, float] | None = None
        if meta["dtype"] != "uint8":
            self.stretch = self._percentiles()

    def close(self) -> None:
        self.src.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _percentiles(self) -> tuple[float, float]:
        """2nd and 98th percentiles of a decimated read of the window (one stretch per scene)."""

        ox, oy, x1, y1 = self._window
        h, w = y1 - oy, x1 - ox
        scale = max(1, max(h, w) // 1024)
        win = Window(ox, oy, w, h)
        shape = (max(1, h // scale), max(1, w // scale))
        data = self.src.read(
            list(self.bands), window=win, out_shape=(len(self.bands),) + shape, masked=True
        ).astype(np.float64)
        gray = _luminance(data.filled(np.nan))
        vals = gray[np.isfinite(gray)]
        if not vals.size:
            return 0.0, 1.0
        lo, hi = np.percentile(vals, [2, 98])
        return float(lo), float(max(hi, lo + 1e-9))

    def read(self, y0: int, y1: int, x0: int, x1: int):
        """Grey values (float32, or uint8 for a 1-band uint8 raster) and the valid mask."""

        ox, oy = self.offset
        if self.factor == 1.0:
            win, sized = Window(ox + x0, oy + y0, x1 - x0, y1 - y0), {}
        else:
            win, sized = self._native_window(ox + x0, oy + y0, ox + x1, oy + y1)
        data = self.src.read(list(self.bands), window=win, resampling=Resampling.average, **sized)
        if self.alpha:
            valid = self.src.read(self.alpha, window=win, **sized) > 0
        else:
            valid = self.src.read_masks(self.bands[0], window=win, **sized) > 0
        gray = data[0] if len(self.bands) == 1 else _luminance(data)
        if gray.dtype.kind == "f":
            valid &= np.isfinite(gray)
        return gray, valid

    def _native_window(self, x0: int, y0: int, x1: int, y1: int) -> tuple[Window, dict]:
        """The raster window under scene pixels [x0, x1) x [y0, y1) and the ``out_shape`` that
        reads it at the scene's pixel size (clipped to the raster)."""
        f = self.factor
        height, width = self.src.height, self.src.width
        c0, r0 = min(x0 * f, width - 1), min(y0 * f, height - 1)
        c1, r1 = min(x1 * f, width), min(y1 * f, height)
        return Window(c0, r0, c1 - c0, r1 - r0), dict(out_shape=(max(1, y1 - y0), max(1, x1 - x0)))

    def to_uint8(self, gray: np.ndarray) -> np.ndarray:
        if self.stretch is None:
            return np.clip(np.rint(gray), 0, 255).astype(np.uint8) if gray.dtype != np.uint8 else gray
        lo, hi = self.stretch
        g = (np.nan_to_num(gray.astype(np.float32), nan=lo) - lo) / (hi - lo)
        return np.clip(g * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _luminance(bands: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) float32: grey as is, RGB by Rec. 601 weights."""
    if bands.shape[0] == 1:
        return bands[0].astype(np.float32)
    out = bands[0].astype(np.float32)
    out *= 0.299
    out += 0.587 * bands[1].astype(np.float32)
    out += 0.114 * bands[2].astype(np.float32)
    return out


def open_scene(
    ref: str | Path,
    *,
    name: str | None = None,
    crs: str | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    time: str | None = None,
):
    """A ``RasterSource`` for a file path or a registered mosaic name (``mars_8k``)."""

    ref = str(ref)
    if ref in DATASETS and not Path(ref).exists():
        ds = DATASETS[ref]
        return RasterSource(
            fetch(ref), name=name or ref, crs=crs or ds.crs, bounds=bounds or ds.bounds, time=time
        )
    if not Path(ref).exists():
        raise SourceError(
            f"raster {ref} does not exist (give a GeoTIFF/COG or a registered "
            f"mosaic: {', '.join(sorted(DATASETS))})"
        )
    return RasterSource(ref, name=name, crs=crs, bounds=bounds, time=time)


# ------------------------------------------------------------------ geography
def _to_geographic(crs, geographic: pyproj.CRS) -> pyproj.Transformer:
    """From a raster's CRS (rasterio's or anything pyproj reads) to the body's lon/lat."""
    return pyproj.Transformer.from_crs(
        pyproj.CRS(crs.to_wkt() if hasattr(crs, "to_wkt") else crs), geographic, always_xy=True
    )


def ground_scale_m(source: RasterSource) -> float:
    """Metres of ground per pixel of a raster at its centre: the geometric mean of a pixel's two
    sides, measured on the body's ellipsoid (or sphere). Unlike ``RasterSource.native_gsd`` (the
    first axis's nominal size: at the equator for a lon/lat raster), this is the ground a pixel
    covers where the scene is."""
    meta = source._meta
    transform, geographic = meta["transform"], source.geographic
    to_geo = _to_geographic(meta["crs"], geographic)
    cy, cx = (n / 2.0 for n in meta["shape"])
    xs, ys = transform * (np.array([cx, cx + 1.0, cx]), np.array([cy, cy, cy + 1.0]))
    lon, lat = to_geo.transform(xs, ys)
    ellipsoid = geographic.ellipsoid
    geod = pyproj.Geod(a=ellipsoid.semi_major_metre, b=ellipsoid.semi_minor_metre)
    _, _, across = geod.inv(lon[[0, 0]], lat[[0, 0]], lon[1:], lat[1:])
    return float(np.sqrt(abs(across[0] * across[1])))


def pixel_boxes_to_lonlat(boxes: np.ndarray, transform, crs, geographic, densify: int = 8) -> np.ndarray:
    """Pixel boxes (M, >=4) -> (M, 6) lon_min, lat_min, lon_max, lat_max, lon, lat.

    Each box's outline (densified, for projected CRSs) goes through the raster's transform and
    CRS to the body's geographic lon/lat, east-positive in [-180, 180]; ``lon``/``lat`` is the
    box centre. A box across the antimeridian has ``lon_min > lon_max``.
    """

    boxes = np.asarray(boxes, float).reshape(-1, boxes.shape[-1] if np.ndim(boxes) == 2 else 4)
    out = np.zeros((len(boxes), 6))
    if not len(boxes):
        return out
    to_geo = _to_geographic(crs, geographic)
    sign = -1.0 if geographic.axis_info and any(a.direction == "west" for a in geographic.axis_info) else 1.0
    t = np.linspace(0.0, 1.0, densify + 1)
    for i, (x0, y0, x1, y1) in enumerate(boxes[:, :4]):
        px = np.concatenate(
            [
                x0 + (x1 - x0) * t,
                np.full_like(t, x1),
                x1 - (x1 - x0) * t,
                np.full_like(t, x0),
                [(x0 + x1) / 2.0],
            ]
        )
        py = np.concatenate(
            [
                np.full_like(t, y0),
                y0 + (y1 - y0) * t,
                np.full_like(t, y1),
                y1 - (y1 - y0) * t,
                [(y0 + y1) / 2.0],
            ]
        )
        xs, ys = transform * (px, py)
        lon, lat = to_geo.transform(np.asarray(xs), np.asarray(ys))
        lon = sign * np.asarray(lon, float)
        lat = np.asarray(lat, float)
        centre = ((lon[-1] + 180.0) % 360.0) - 180.0
        delta = ((lon[:-1] - centre + 180.0) % 360.0) - 180.0  # unwrapped about the centre
        lo, hi = centre + delta.min(), centre + delta.max()
        out[i] = (
            lo + 360.0 if lo < -180.0 else lo,
            lat[:-1].min(),
            hi - 360.0 if hi > 180.0 else hi,
            lat[:-1].max(),
            centre,
            lat[-1],
        )
    return out


class RasterCrops:
    """Whole-raster reads of a ``RasterScene`` (crops may extend past its window)."""

    def __init__(self, scene: RasterScene):
        self.scene = scene

    def read(self, y0: int, y1: int, x0: int, x1: int):
        ox, oy = self.scene.offset
        return self.scene.read(y0 - oy, y1 - oy, x0 - ox, x1 - ox)

    def to_uint8(self, gray: np.ndarray) -> np.ndarray:
        return self.scene.to_uint8(gray)
