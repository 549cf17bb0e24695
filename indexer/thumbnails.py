"""Fast tile pixels for thumbnails and basemaps: each source raster is decoded once per process.

``RasterSource.read_tile`` reopens and warps the raster for every tile (~0.25 s on the 8k
mosaics), far too slow for a page of a thousand thumbnails. Here a source is read once into memory
as an RGB array on the body's lon/lat grid (plate carree), and a tile is resampled from it with
numpy: project the tile's pixel centres from its zone to lon/lat, then sample bilinearly. That
takes about a millisecond per thumbnail and needs no file access after the first call.

Everything here is safe to call from several threads: images are loaded under a lock, are never
written after loading, and the encoded-thumbnail cache is an ``lru_cache``.
"""

from __future__ import annotations

import io
import json
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyproj
import rasterio
from rasterio.crs import CRS as RioCRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from indexer.errors import LookalikeError, SourceError
from indexer.sources import RasterSource, to_uint8
from indexer.tiling import TileGrid, Zone, from_zone

MAX_PIXELS = 1 << 26  # ~67 Mpx (200 MB RGB); larger rasters are decimated on load
THUMB_SIZE = 96


@dataclass(frozen=True)
class SourceImage:
    """A source raster decoded into memory: ``rgb`` (H, W, 3) uint8 on a regular lon/lat grid.

    ``bounds`` are (west, south, east, north) in degrees of the body's geographic CRS; row 0 is
    the northern edge. ``valid`` marks pixels that hold data.
    """

    name: str
    rgb: np.ndarray
    valid: np.ndarray
    bounds: tuple[float, float, float, float]
    geographic: pyproj.CRS

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Degrees per pixel along lon and lat."""
        west, south, east, north = self.bounds
        h, w = self.shape
        return (east - west) / w, (north - south) / h

    def sample(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Bilinear RGB at lon/lat points (any shape); points outside the image are black."""
        west, south, east, north = self.bounds
        h, w = self.shape
        dx, dy = self.pixel_size
        lon = np.asarray(lon, np.float64)
        if east - west >= 359.999:  # a global mosaic wraps around in longitude
            lon = (lon - west) % 360.0 + west
        fx = (lon - west) / dx - 0.5
        fy = (north - np.asarray(lat, np.float64)) / dy - 0.5
        inside = (fx > -1) & (fx < w) & (fy > -1) & (fy < h)
        x0 = np.clip(np.floor(fx).astype(np.int64), 0, w - 1)
        y0 = np.clip(np.floor(fy).astype(np.int64), 0, h - 1)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        tx = np.clip(fx - x0, 0.0, 1.0)[..., None]
        ty = np.clip(fy - y0, 0.0, 1.0)[..., None]
        img = self.rgb
        top = img[y0, x0] * (1 - tx) + img[y0, x1] * tx
        bottom = img[y1, x0] * (1 - tx) + img[y1, x1] * tx
        out = (top * (1 - ty) + bottom * ty + 0.5).astype(np.uint8)
        out[~(inside & self.valid[y0, x0])] = 0
        return out

    def tile(self, zone: Zone | str, grid: TileGrid, row: int, col: int,
             out_size: int | None = None) -> np.ndarray:
        """RGB pixels (out_size, out_size, 3) of tile (row, col) of ``zone``'s grid."""
        zone = Zone.parse(zone) if isinstance(zone, str) else zone
        n = int(out_size or grid.size)
        x0, y0 = grid.origin(row, col)
        step = grid.size * grid.gsd / n
        centres = (np.arange(n) + 0.5) * step
        x, y = np.meshgrid(x0 + centres, y0 - centres)
        lon, lat = from_zone(self.geographic, zone, x, y)
        return self.sample(lon, lat)


_images: dict[tuple, SourceImage] = {}
_lock = threading.Lock()


def _key(name: str, desc: dict) -> tuple:
    return name, json.dumps(desc, sort_keys=True, default=str)


def source_image(name: str, desc: dict, max_pixels: int = MAX_PIXELS) -> SourceImage:
    """The in-memory image of the source an index manifest describes, loaded once per process.

    Raises ``SourceError`` with the path when the raster is missing or unreadable.
    """
    key = _key(name, desc)
    image = _images.get(key)
    if image is not None:
        return image
    with _lock:  # one thread decodes; the others wait and reuse its result
        image = _images.get(key)
        if image is None:
            image = _load(name, desc, max_pixels)
            _images[key] = image
    return image


def _load(name: str, desc: dict, max_pixels: int) -> SourceImage:
    source = RasterSource.from_description(name, desc)
    meta = source._meta
    geographic = source.geographic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with source._open() as src:
            stretch = source._stretch(src)
            scale = max(1.0, np.sqrt(src.width * src.height / max_pixels))
            bands = list(meta["bands"])
            if pyproj.CRS(meta["crs"].to_wkt()).is_geographic:
                # plate carree already: read (and decimate) straight from the file
                h, w = int(src.height / scale), int(src.width / scale)
                pixels = src.read(bands, out_shape=(len(bands), h, w), resampling=Resampling.bilinear)
                valid = src.read_masks(1, out_shape=(h, w)) > 0
                left, bottom, right, top = rasterio.transform.array_bounds(
                    src.height, src.width, meta["transform"])
                bounds = (left, bottom, right, top)
            else:
                # projected rasters are warped once onto the body's lon/lat grid
                west, south, east, north = source.lonlat_bounds
                w = int(src.width / scale)
                h = max(1, int(round(w * (north - south) / max(east - west, 1e-9))))
                transform = rasterio.transform.from_bounds(west, south, east, north, w, h)
                with WarpedVRT(src, src_crs=meta["crs"], src_transform=meta["transform"],
                               crs=RioCRS.from_wkt(geographic.to_wkt()), transform=transform,
                               width=w, height=h, add_alpha=not meta["alpha"],
                               resampling=Resampling.bilinear) as vrt:
                    pixels = vrt.read(bands)
                    valid = vrt.read_masks(1) > 0
                bounds = (west, south, east, north)
    rgb = to_uint8(pixels, stretch)
    rgb.setflags(write=False)
    valid.setflags(write=False)
    return SourceImage(name, rgb, valid, tuple(float(b) for b in bounds), geographic)


def index_source_image(index, source: str | None = None) -> SourceImage:
    """The in-memory image of one of an index's sources (the first when ``source`` is None)."""
    sources = index.manifest.get("sources") or {}
    if not sources:
        raise LookalikeError(f"index {index.path} records no raster sources")
    name = source or next(iter(sources))
    if name not in sources:
        raise LookalikeError(f"index {index.path} has no source {name!r}")
    return source_image(name, sources[name])


def index_grid(index) -> TileGrid:
    tiling = index.manifest.get("tiling") or {}
    if not tiling:
        raise LookalikeError(f"index {index.path} has no tiling (not a raster index)")
    return TileGrid(int(tiling["size"]), int(tiling["stride"]), float(tiling["gsd"]))


@lru_cache(maxsize=20_000)
def _thumbnail_jpeg(name: str, desc_json: str, zone: str, size: int, stride: int, gsd: float,
                    row: int, col: int, out_size: int, quality: int) -> bytes:
    from PIL import Image

    image = source_image(name, json.loads(desc_json))
    pixels = image.tile(zone, TileGrid(size, stride, gsd), row, col, out_size)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def thumbnail_jpeg(index, tile: dict, out_size: int = THUMB_SIZE, quality: int = 85) -> bytes:
    """JPEG bytes of one tile row (a mapping with source, zone, row, col), cached per process."""
    sources = index.manifest.get("sources") or {}
    desc = sources.get(tile["source"])
    if desc is None:
        raise SourceError(f"index {index.path} does not describe source {tile['source']!r}")
    grid = index_grid(index)
    return _thumbnail_jpeg(tile["source"], json.dumps(desc, sort_keys=True, default=str),
                           str(tile["zone"]), grid.size, grid.stride, grid.gsd, int(tile["row"]),
                           int(tile["col"]), int(out_size), int(quality))
