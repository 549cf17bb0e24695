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
import math
import threading
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from rasterio.crs import CRS as RioCRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from lookalike.data.registry import DATASETS, fetch
from lookalike.errors import LookalikeError, SourceError
from lookalike.indexer import pixel_cache
from lookalike.indexer.resample import control_positions
from lookalike.indexer.sources import RasterSource, to_uint8
from lookalike.indexer.thumbstore import QUALITY, THUMB_SIZE
from lookalike.indexer.tiling import TileGrid, Zone, from_zone

# how projected rasters are laid on the lon/lat grid (part of the pixel cache's key)
GRID = "equal ground size across and along at the middle latitude"
MAX_PIXELS = 1 << 26  # ~67 Mpx (200 MB RGB); larger rasters are decimated on load
CACHED_PIXELS = 1 << 22  # decoded images of at least this many pixels are kept on disk (pixel_cache)


@dataclass(frozen=True)
class SourceImage:
    """A source raster decoded into memory: ``rgb`` (H, W, 3) uint8 on a regular lon/lat grid.

    ``bounds`` are (west, south, east, north) in degrees of the body's geographic CRS; row 0 is
    the northern edge. ``valid`` marks pixels that hold data. ``cache_key`` names the image in
    ``pixel_cache`` when it is kept there (pictures made from it are cached under it too).
    """

    name: str
    rgb: np.ndarray
    valid: np.ndarray
    bounds: tuple[float, float, float, float]
    geographic: pyproj.CRS
    cache_key: dict | None = field(default=None, compare=False)

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
        tx = np.clip(fx - x0, 0.0, 1.0).astype(np.float32)[..., None]
        ty = np.clip(fy - y0, 0.0, 1.0).astype(np.float32)[..., None]
        flat = self.rgb.reshape(-1, 3)  # gathers on flat indices, in float32: ~2x faster
        row0, row1 = y0 * w, y1 * w
        top = flat.take(row0 + x0, axis=0) * (1 - tx) + flat.take(row0 + x1, axis=0) * tx
        bottom = flat.take(row1 + x0, axis=0) * (1 - tx) + flat.take(row1 + x1, axis=0) * tx
        out = (top * (1 - ty) + bottom * ty + 0.5).astype(np.uint8)
        out[~(inside & self.valid.reshape(-1).take(row0 + x0))] = 0
        return out

    def tile(
        self, zone: Zone | str, grid: TileGrid, row: int, col: int, out_size: int | None = None
    ) -> np.ndarray:
        """RGB pixels (out_size, out_size, 3) of tile (row, col) of ``zone``'s grid."""
        zone = Zone.parse(zone) if isinstance(zone, str) else zone
        n = int(out_size or grid.size)
        x0, y0 = grid.origin(row, col)
        step = grid.size * grid.gsd / n
        centres = (np.arange(n) + 0.5) * step
        if n <= 2 * CONTROL_STEP:
            x, y = np.meshgrid(x0 + centres, y0 - centres)
            lon, lat = from_zone(self.geographic, zone, x, y)
            return self.sample(lon, lat)
        # project a coarse grid of control points and interpolate between them: the projection
        # is smooth at this scale (well under a source pixel of error, even near the poles)
        # and this is several times faster than projecting every pixel
        control = control_positions(n, CONTROL_STEP)
        cx, cy = np.meshgrid(x0 + centres[control], y0 - centres[control])
        clon, clat = from_zone(self.geographic, zone, cx, cy)
        mid = clon[len(control) // 2, len(control) // 2]
        clon = (clon - mid + 180.0) % 360.0 - 180.0 + mid  # continuous across 180 degrees
        lon = _interp2(clon, control, n)
        lat = _interp2(clat, control, n)
        return self.sample(lon, lat)


CONTROL_STEP = 8  # output pixels between projected control points of a tile


def _interp2(values: np.ndarray, control: np.ndarray, n: int) -> np.ndarray:
    """Bilinear interpolation of ``values`` given at rows/cols ``control`` to an n x n grid."""
    weights = _interp_matrix(tuple(int(c) for c in control), n)
    return weights @ values @ weights.T


@lru_cache(maxsize=16)
def _interp_matrix(control: tuple[int, ...], n: int) -> np.ndarray:
    """(n, len(control)) linear-interpolation weights from the control positions to 0..n-1."""
    eye = np.eye(len(control))
    out = np.stack([np.interp(np.arange(n), control, eye[j]) for j in range(len(control))], axis=1)
    out.setflags(write=False)
    return out


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
    geographic = source.geographic
    # the decoded image is kept on disk between processes: decoding a large source takes seconds
    slot = dict(purpose="source image", name=name, desc=_key(name, desc)[1], max_pixels=max_pixels, grid=GRID)
    stat = Path(source.path).stat()
    key = dict(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    cached = pixel_cache.load(slot, key)
    if cached is not None:
        bounds = tuple(float(b) for b in cached["bounds"])
        return SourceImage(name, cached["rgb"], cached["valid"], bounds, geographic, cache_key=slot | key)
    rgb, valid, bounds = _decode(source, geographic, max_pixels)
    if valid.size >= CACHED_PIXELS:
        pixel_cache.save(slot, key, dict(rgb=rgb, valid=valid, bounds=np.asarray(bounds, np.float64)))
    return SourceImage(
        name, rgb, valid, bounds, geographic, cache_key=slot | key if valid.size >= CACHED_PIXELS else None
    )


def lonlat_grid_shape(
    width: int, bounds: tuple[float, float, float, float], max_pixels: int
) -> tuple[int, int]:
    """Columns and rows of a lon/lat grid over ``bounds`` (west, south, east, north) as fine as a
    projected raster ``width`` pixels across: that many columns, and rows of the same ground size
    at the box's middle latitude (rows as many degrees as columns would be 1/cos(lat) coarser
    on the ground), both reduced alike to at most ``max_pixels``."""
    west, south, east, north = bounds
    shrink = max(math.cos(math.radians((south + north) / 2.0)), 1e-3)
    rows = width * (north - south) / (max(east - west, 1e-9) * shrink)
    scale = max(1.0, math.sqrt(width * rows / max_pixels))
    return max(1, int(width / scale)), max(1, int(round(rows / scale)))


def _decode(
    source: RasterSource, geographic: pyproj.CRS, max_pixels: int
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    meta = source._meta
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
                    src.height, src.width, meta["transform"]
                )
                bounds = (left, bottom, right, top)
            else:
                # projected rasters are warped once onto the body's lon/lat grid
                west, south, east, north = source.lonlat_bounds
                w, h = lonlat_grid_shape(src.width, source.lonlat_bounds, max_pixels)
                transform = rasterio.transform.from_bounds(west, south, east, north, w, h)
                with WarpedVRT(
                    src,
                    src_crs=meta["crs"],
                    src_transform=meta["transform"],
                    crs=RioCRS.from_wkt(geographic.to_wkt()),
                    transform=transform,
                    width=w,
                    height=h,
                    add_alpha=not meta["alpha"],
                    resampling=Resampling.bilinear,
                ) as vrt:
                    pixels = vrt.read(bands)
                    valid = vrt.read_masks(1) > 0
                bounds = (west, south, east, north)
    rgb = to_uint8(pixels, stretch)
    rgb.setflags(write=False)
    valid.setflags(write=False)
    return rgb, valid, tuple(float(b) for b in bounds)


def index_source_image(index, source: str | None = None) -> SourceImage:
    """The in-memory image of one of an index's sources (the first when ``source`` is None)."""
    sources = index.manifest.get("sources") or {}
    if not sources:
        raise LookalikeError(f"index {index.path} records no raster sources")
    name = source or next(iter(sources))
    if name not in sources:
        raise LookalikeError(f"index {index.path} has no source {name!r}")
    return source_image(name, sources[name])


def basemap_image(index) -> SourceImage:
    """The picture under an index's map: its first raster source, or for image chips placed on
    a planet (``manifest['basemap']``, a registered mosaic) that mosaic from the data cache."""
    name = index.manifest.get("basemap")
    if not name:
        return index_source_image(index)

    if name not in DATASETS:
        raise LookalikeError(f"index {index.path} asks for an unknown basemap {name!r}")
    ds = DATASETS[name]
    source = RasterSource(fetch(name, download=False), name=name, crs=ds.crs, bounds=ds.bounds)
    return source_image(name, source.describe())


def index_grid(index) -> TileGrid:
    tiling = index.manifest.get("tiling") or {}
    if not tiling:
        raise LookalikeError(f"index {index.path} has no tiling (not a raster index)")
    return TileGrid(int(tiling["size"]), int(tiling["stride"]), float(tiling["gsd"]))


@lru_cache(maxsize=20_000)
def _thumbnail_jpeg(
    name: str,
    desc_json: str,
    zone: str,
    size: int,
    stride: int,
    gsd: float,
    row: int,
    col: int,
    out_size: int,
    quality: int,
) -> bytes:
    from PIL import Image

    image = source_image(name, json.loads(desc_json))
    pixels = image.tile(zone, TileGrid(size, stride, gsd), row, col, out_size)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@lru_cache(maxsize=20_000)
def _chip_jpeg(path: str, out_size: int, quality: int) -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = image.convert("RGB").resize((out_size, out_size), Image.BILINEAR)
    except (OSError, UnidentifiedImageError) as exc:
        raise SourceError(f"cannot read image chip {path}: {exc}") from None
    buffer = io.BytesIO()
    pixels.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def has_stored_thumbnails(index) -> bool:
    """Whether the index holds thumbnails made at index time (so showing one is a lookup)."""
    return "thumbs" in index.manifest["files"]


def warm_zones(index, source: str | None = None) -> int:
    """Create the zone-to-lon/lat transformers of every zone of ``index`` in the calling thread.

    pyproj builds a transformer lazily in every thread that uses it (tens of milliseconds for a
    zone of another body), so a thread that will render thumbnails calls this once, up front.
    Returns the number of zones.
    """
    if index.manifest.get("kind") == "images" or has_stored_thumbnails(index):
        return 0  # chips are pictures of their own, stored thumbnails need no rendering
    image = index_source_image(index, source)
    zones = index.zones()
    for label in zones:
        from_zone(image.geographic, Zone.parse(str(label)), np.zeros(1), np.zeros(1))
    return len(zones)


def thumbnail_jpeg(index, tile: dict, out_size: int = THUMB_SIZE, quality: int = QUALITY) -> bytes:
    """JPEG bytes of one tile row (a mapping with tile_id, source, zone, row, col): the one made
    at index time when the index has them (a lookup), else rendered from the source and cached
    per process."""
    if has_stored_thumbnails(index) and out_size == THUMB_SIZE:
        return index.thumbnail(index.row_of(str(tile["tile_id"])))
    return render_thumbnail(index, tile, out_size, quality)


def render_thumbnail(index, tile: dict, out_size: int = THUMB_SIZE, quality: int = QUALITY) -> bytes:
    """JPEG bytes of one tile row resampled from its source (the path of indexes without stored
    thumbnails), cached per process."""
    sources = index.manifest.get("sources") or {}
    desc = sources.get(tile["source"])
    if desc is None:
        raise SourceError(f"index {index.path} does not describe source {tile['source']!r}")
    if "root" in desc:  # an image chip: the picture itself
        return _chip_jpeg(str(Path(desc["root"]) / str(tile["path"])), int(out_size), int(quality))
    grid = index_grid(index)
    return _thumbnail_jpeg(
        tile["source"],
        json.dumps(desc, sort_keys=True, default=str),
        str(tile["zone"]),
        grid.size,
        grid.stride,
        grid.gsd,
        int(tile["row"]),
        int(tile["col"]),
        int(out_size),
        int(quality),
    )
