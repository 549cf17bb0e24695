"""Where pixels come from: georeferenced rasters (GeoTIFF/COG or a global mosaic). Folders of
labelled image chips are read by ``indexer.image_folders``.

Band handling for rasters: 1 band is grey and is repeated to RGB; 2 bands are grey + alpha (the
alpha is used as the valid mask); 3 bands are RGB; 4 or more use bands 1-3 unless ``bands`` picks
others (e.g. ``(4, 3, 2)`` for a false-colour composite). Integer or float data other than uint8
are stretched to 0-255 per band between the 2nd and 98th percentiles of a decimated read of the
whole raster, so every tile of a scene shares one stretch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import rasterio
from pyproj.exceptions import CRSError, ProjError
from rasterio.crs import CRS as RioCRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import CRSError as RioCRSError
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.transform import from_bounds
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from lookalike.data.times import utc_timestamp
from lookalike.errors import OptionError, SourceError
from lookalike.indexer.bodies import body_named, body_of_crs, reference_geographic
from lookalike.indexer.product_times import product_time
from lookalike.indexer.resample import MAX_GRID_ERROR, cell_scales, control_grid, grid_error, resample
from lookalike.indexer.stacks import stack_name, stack_vrt
from lookalike.indexer.tiling import (
    DEFAULT_LAT_RANGE,
    TileGrid,
    TilePlace,
    Zone,
    from_zone,
    tile_places,
    wrap_lon,
    zone_box,
    zone_crs,
    zones_for_bounds,
)

# the finest tile resolution a raster is cut at, as a fraction of its own: finer tiles are only
# interpolated pixels, and their number grows with the square (a typo in --gsd would never end)
MAX_UPSAMPLING = 16
BLOCK_COLS = 32  # tile columns resampled in one window (with band_rows tile rows)
WHOLE_READ_BYTES = 256 << 20  # a raster without random access up to this size is decoded once
SEQUENTIAL_DRIVERS = ("JPEG", "PNG", "GIF", "WEBP")
MIN_DECIMATION = 3  # smaller factors cost more to read (GDAL averaging) than the kernel saves
CONTROL_STEPS = (32, 8, 1)  # output pixels between exact positions; the first exact enough
_TIME_TAGS = (
    "ACQUISITIONDATETIME",
    "ACQUISITION_DATE",
    "ACQUISITIONDATE",
    "DATE_ACQUIRED",
    "TIFFTAG_DATETIME",
)


class _WindowReader:
    """Windows of a raster's bands and of its valid share, for the resampler.

    A small raster in a format without random access (a JPEG or PNG mosaic, which GDAL decodes
    from the top) is decoded once, whole, and windows at full resolution are cut from memory;
    other rasters (GeoTIFF, COG) are read window by window.
    """

    def __init__(self, src, meta: dict, whole: bool = True):
        self.dataset = src
        self._meta = meta
        self._bands = list(meta["bands"])
        if meta["alpha"]:
            self._alpha = next(
                (i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha), src.count
            )
        self._all_valid = not meta["alpha"] and src.mask_flag_enums[self._bands[0] - 1] == [
            MaskFlags.all_valid
        ]
        nbytes = src.width * src.height * (len(self._bands) + 1) * np.dtype(meta["dtype"]).itemsize
        self._whole = whole and src.driver in SEQUENTIAL_DRIVERS and nbytes <= WHOLE_READ_BYTES
        self._image: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def read(
        self, window: Window, shape: tuple[int, int], resampling: Resampling
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Bands (C, *shape) of ``window`` read at ``shape`` and the valid share of each pixel
        in [0, 1] (None when the raster has no invalid pixels)."""
        if self._whole and shape == (window.height, window.width):
            if self._image is None:
                self._image = self.dataset.read(self._bands)
                self._mask = (
                    None
                    if self._all_valid
                    else self._read_mask(None, self._image.shape[1:], Resampling.nearest)
                )
            rows, cols = window.toslices()
            return self._image[:, rows, cols], None if self._mask is None else self._mask[rows, cols]
        image = self.dataset.read(
            self._bands, window=window, out_shape=(len(self._bands), *shape), resampling=resampling
        )
        return image, None if self._all_valid else self._read_mask(window, shape, resampling)

    def _read_mask(self, window: Window | None, shape: tuple[int, int], resampling) -> np.ndarray:
        if self._meta["alpha"]:
            # any opacity makes a pixel valid, as in GDAL's warper
            alpha = self.dataset.read(self._alpha, window=window, out_shape=shape, resampling=resampling)
            return (alpha > 0).astype(np.float32)
        masks = self.dataset.read_masks(self._bands[0], window=window, out_shape=shape, resampling=resampling)
        return masks.astype(np.float32) / 255.0


@dataclass
class RasterSource:
    """A raster on disk, georeferenced by its own metadata or by ``crs`` + ``bounds`` overrides.

    ``bounds`` (west, south, east, north in CRS units) places a raster that carries no transform,
    such as a JPEG world mosaic. ``stack``: separate band files read as one raster, in that order
    (``path`` is then the first). ``body`` overrides the body the CRS lies on (``indexer.bodies``).
    Without ``time``, the acquisition time comes from the raster's tags, else from the product's
    name or label (``indexer.product_times``).
    """

    path: str
    name: str | None = None
    crs: str | None = None
    bounds: tuple[float, float, float, float] | None = None
    time: str | None = None
    bands: tuple[int, ...] | None = None
    stack: tuple[str, ...] | None = None
    body: str | None = None
    _meta: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.stack:
            self.stack = tuple(str(p) for p in self.stack)
            self._vrt = stack_vrt(self.stack)
            self.path = self.stack[0]
        self.path = str(self.path)
        if self.name is None:
            self.name = stack_name(self.stack) if self.stack else Path(self.path).stem
        with self._open() as src:
            try:
                self._meta = self._describe(src)
            except (RasterioError, UnicodeDecodeError) as exc:
                raise SourceError(
                    f"cannot read raster {self.path}: its metadata is damaged ({exc})"
                ) from None

    # -------------------------------------------------------------- opening and georeferencing
    def _open(self):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return rasterio.open(self._vrt if self.stack else self.path)
        except RasterioIOError as exc:
            raise SourceError(f"cannot read raster {self.path}: {exc}") from None
        except (RasterioError, RioCRSError, UnicodeDecodeError) as exc:  # a damaged header
            raise SourceError(f"cannot read raster {self.path}: its header is damaged ({exc})") from None

    def _describe(self, src) -> dict:
        """What tiling needs to know of the open raster ``src``, checked on the way."""
        if src.count < 1:
            raise SourceError(f"{self.path} has no bands")
        if np.dtype(src.dtypes[0]).kind not in "uifb":
            raise SourceError(f"{self.path} holds {src.dtypes[0]} pixels; only real numbers can be tiled")
        crs, transform = self._crs(src), self._transform(src)
        pcrs = pyproj.CRS(crs.to_wkt())
        if pcrs.geodetic_crs is None:
            raise SourceError(f"{self.path}: CRS {crs} has no geodetic datum to tile against")
        body = body_named(self.body) if self.body else body_of_crs(pcrs)
        # positions in the body's reference (WGS 84 on Earth), through PROJ's best transformation
        geographic = reference_geographic(pcrs, body)
        bands = self._bands(src)
        extent = self._extent(src, crs, pcrs, transform, geographic)
        time, time_source = self._acquisition_time(src)
        return dict(
            body=body.key if body else None,
            time_source=time_source,
            crs=crs,
            transform=transform,
            geographic=geographic,
            bands=bands,
            # a real alpha band (GDAL colour interpretation) is the valid mask; otherwise
            # the warp adds one, so pixels outside the raster count as invalid
            alpha=src.count == 2 or ColorInterp.alpha in src.colorinterp,
            time=time,
            dtype=src.dtypes[0],
            count=src.count,
            nodata=src.nodata,
            shape=(src.height, src.width),
            geographic_crs=pcrs.is_geographic,
            lonlat=pcrs.is_geographic and pcrs.equals(geographic, ignore_axis_order=True),
            **extent,
        )

    def _crs(self, src) -> RioCRS:
        """The ``crs`` override, else the raster's own CRS."""
        try:
            crs = RioCRS.from_user_input(pyproj.CRS(self.crs).to_wkt()) if self.crs else src.crs
        except (CRSError, RioCRSError) as exc:
            raise SourceError(f"cannot use the CRS {self.crs!r} for {self.path} ({exc})") from None
        if crs is None:
            raise SourceError(
                f"{self.path} has no CRS: pass crs (CLI: --crs, e.g. EPSG:4326 or "
                "IAU_2015:49900) and, if it has no transform either, --bounds"
            )
        return crs

    def _transform(self, src) -> rasterio.Affine:
        """The geotransform that places ``bounds`` over the raster, else the raster's own."""
        if self.bounds is None:
            if src.transform.is_identity:
                raise SourceError(f"{self.path} has no geotransform: pass --bounds WEST,SOUTH,EAST,NORTH")
            return src.transform
        b = tuple(self.bounds)
        if len(b) != 4 or not all(math.isfinite(v) for v in b) or not (b[0] < b[2] and b[1] < b[3]):
            raise SourceError(
                f"bounds {self.bounds} of {self.path} are not west,south,east,north "
                "with west < east and south < north"
            )
        return from_bounds(*b, src.width, src.height)

    def _bands(self, src) -> tuple[int, ...]:
        """The three bands (1-based) read as R, G, B."""
        bands = self.bands or ((1, 1, 1) if src.count <= 2 else (1, 2, 3))
        if len(bands) == 1:
            bands = tuple(bands) * 3  # one band is grey
        if len(bands) != 3:
            raise SourceError(f"bands {tuple(bands)} of {self.path}: give 3 bands (R,G,B) or 1 (grey)")
        if max(bands) > src.count or min(bands) < 1:
            raise SourceError(f"{self.path} has {src.count} bands; cannot use bands {bands}")
        return bands

    def _extent(self, src, crs: RioCRS, pcrs: pyproj.CRS, transform, geographic: pyproj.CRS) -> dict:
        """The raster's lon/lat bounds, ground sample distance, centre longitude and whether it
        wraps once around the body."""
        left, bottom, right, top = rasterio.transform.array_bounds(src.height, src.width, transform)
        to_geo = pyproj.Transformer.from_crs(pcrs, geographic, always_xy=True)
        try:
            west, south, east, north = to_geo.transform_bounds(left, bottom, right, top, densify_pts=51)
        except ProjError as exc:
            raise SourceError(f"{self.path}: its extent cannot be placed in lon/lat ({exc})") from None
        if not all(math.isfinite(v) for v in (west, south, east, north)):
            raise SourceError(
                f"{self.path}: its extent lies outside its CRS {crs} (check the CRS "
                "and the geotransform or --bounds)"
            )
        if pcrs.is_geographic:
            gsd = abs(transform.a) * np.pi / 180.0 * pcrs.ellipsoid.semi_major_metre
        else:
            gsd = abs(transform.a) * pcrs.axis_info[0].unit_conversion_factor
        # a lon/lat raster once around the body: windows across its edge wrap to the other side
        wraps = (
            pcrs.is_geographic
            and transform.b == 0
            and transform.d == 0
            and abs(abs(right - left) - 360.0) <= abs(transform.a) / 2
        )
        return dict(
            lonlat_bounds=(west, south, east, north),
            gsd=float(gsd),
            centre_lon=(left + right) / 2.0,
            wraps=wraps,
        )

    def _acquisition_time(self, src) -> tuple[pd.Timestamp | None, str | None]:
        """(time, where it came from): the option, the raster's tags, the product's name or label."""
        if self.time:
            return parse_time(self.time), "given"
        tags = src.tags()
        tagged = next((tags[t] for t in _TIME_TAGS if tags.get(t)), None)
        if tagged:
            return parse_time(tagged), "raster tags"
        label = str(src.tags(ns="json:ISIS3")) if "json:ISIS3" in (src.tag_namespaces() or []) else ""
        return product_time(self.path, label)

    @property
    def body_key(self) -> str | None:
        """The body the raster lies on (``mars``, ``earth``, ...), None when its CRS does not tell."""
        return self._meta["body"]

    @property
    def geographic(self) -> pyproj.CRS:
        return self._meta["geographic"]

    @property
    def native_gsd(self) -> float:
        """Ground sample distance (metres/pixel) of the raster along its first axis."""
        return self._meta["gsd"]

    @property
    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        return self._meta["lonlat_bounds"]

    @property
    def acquired(self) -> pd.Timestamp | None:
        return self._meta["time"]

    def describe(self) -> dict:
        """JSON-able description, enough to reopen the source for thumbnails."""
        return dict(
            path=str(Path(self.path).resolve()),
            crs=self._meta["crs"].to_wkt(),
            bounds=list(self.bounds) if self.bounds else None,
            bands=list(self._meta["bands"]),
            gsd=self.native_gsd,
            time=None if self.acquired is None else self.acquired.isoformat(),
            time_source=self._meta["time_source"],
            body=self.body_key,
            stack=[str(Path(p).resolve()) for p in self.stack] if self.stack else None,
        )

    @classmethod
    def from_description(cls, name: str, desc: dict) -> RasterSource:
        """Reopen a source from the description an index manifest keeps of it."""
        return cls(
            desc["path"],
            name=name,
            crs=desc.get("crs"),
            bounds=tuple(desc["bounds"]) if desc.get("bounds") else None,
            time=desc.get("time"),
            bands=tuple(desc["bands"]) if desc.get("bands") else None,
            stack=tuple(desc["stack"]) if desc.get("stack") else None,
            body=desc.get("body"),
        )

    # -------------------------------------------------------------- tiles
    def _stretch(self, src) -> tuple[np.ndarray, np.ndarray] | None:
        if self._meta["dtype"] == "uint8":
            return None
        scale = max(1, max(src.width, src.height) // 1024)
        sample = src.read(
            list(self._meta["bands"]),
            out_shape=(len(self._meta["bands"]), max(1, src.height // scale), max(1, src.width // scale)),
            masked=True,
        )
        finite = [v[np.isfinite(v)] for v in (b.compressed() for b in sample)]
        lo = np.array([np.percentile(v, 2) if v.size else 0 for v in finite])
        hi = np.array([np.percentile(v, 98) if v.size else 1 for v in finite])
        if len(set(self._meta["bands"])) > 1:  # colour (reflectance bands): one stretch keeps its balance
            lo, hi = np.full_like(lo, lo.min()), np.full_like(hi, hi.max())
        return lo, np.maximum(hi, lo + 1e-9)

    def tiles(
        self,
        grid: TileGrid,
        zones: list[Zone] | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        lat_range: tuple[float, float] = DEFAULT_LAT_RANGE,
        min_valid: float = 0.5,
        band_rows: int = 8,
    ) -> Iterator[tuple[TilePlace, np.ndarray]]:
        """Yield (place, RGB uint8 pixels of shape (size, size, 3)) for every usable tile.

        Tiles are cut per zone from windows of ``band_rows`` x ``BLOCK_COLS`` tiles, each
        resampled from the raster into the zone's grid (``indexer.resample``), so memory stays
        bounded for rasters of any size. Tiles with less than ``min_valid`` valid pixels, or of
        one constant colour, are skipped.
        """
        if grid.gsd * MAX_UPSAMPLING < self.native_gsd:
            raise OptionError(
                f"tiles of {grid.gsd:g} m per pixel would be more than {MAX_UPSAMPLING} "
                f"times finer than {self.name} ({self.native_gsd:g} m per pixel); "
                "choose a coarser --gsd"
            )
        self.check_holds_a_tile(grid, min_valid)
        west, south, east, north = self.lonlat_bounds
        lon_range = None
        if bbox is not None:
            west, south = max(west, bbox[0]), max(south, bbox[1])
            east, north = min(east, bbox[2]), min(north, bbox[3])
            lon_range = (bbox[0], bbox[2])
        wanted = set(z.label for z in zones) if zones else None
        try:
            with self._open() as src:
                stretch = self._stretch(src)
                reader = _WindowReader(src, self._meta)
                for zone in zones_for_bounds(west, south, east, north, lat_range):
                    if wanted is not None and zone.label not in wanted:
                        continue
                    box = zone_box(self.geographic, zone, west, south, east, north, lat_range)
                    if box is None:
                        continue
                    rows, cols = grid.covering(*box)
                    yield from self._zone_tiles(
                        reader, zone, grid, rows, cols, lat_range, lon_range, min_valid, band_rows, stretch
                    )
        except RasterioError as exc:  # a truncated or damaged file: its header read, its pixels not
            detail = exc.__cause__ or exc  # rasterio chains GDAL's own message
            raise SourceError(
                f"cannot read raster {self.path} (a damaged or truncated file?): {detail}"
            ) from None

    def check_holds_a_tile(self, grid: TileGrid, min_valid: float) -> None:
        """A raster too small to fill ``min_valid`` of one tile at the grid's resolution is an
        error, not an index with no tiles."""
        scale = self.native_gsd / grid.gsd
        width, height = self._meta["shape"][1] * scale, self._meta["shape"][0] * scale
        if width * height < max(min_valid, 1e-9) * grid.size**2 or min(width, height) < 1:
            raise SourceError(
                f"{self.name} is smaller than one tile: {self._meta['shape'][1]}x"
                f"{self._meta['shape'][0]} px at {self.native_gsd:g} m/px cover "
                f"{width:.0f}x{height:.0f} px of {grid.gsd:g} m, less than "
                f"{min_valid:.0%} of a {grid.size} px tile (try a smaller --tile-size "
                "or a coarser --gsd)"
            )

    def _zone_tiles(
        self, reader, zone, grid, rows, cols, lat_range, lon_range, min_valid, band_rows, stretch
    ):
        places = list(tile_places(self.geographic, zone, grid, rows, cols, lat_range, lon_range))
        # blocks of band_rows x BLOCK_COLS tiles, each resampled in one window that holds just
        # its tiles: a zone's bounding box is mostly outside the zone at high latitudes
        blocks: dict[tuple[int, int], list[TilePlace]] = {}
        for p in places:
            blocks.setdefault(
                ((p.row - rows.start) // band_rows, (p.col - cols.start) // BLOCK_COLS), []
            ).append(p)
        for key in sorted(blocks):
            block = blocks[key]
            row0, col0 = min(p.row for p in block), min(p.col for p in block)
            row1, col1 = max(p.row for p in block), max(p.col for p in block)
            x0, y0 = grid.origin(row0, col0)
            width = (col1 - col0) * grid.stride + grid.size
            height = (row1 - row0) * grid.stride + grid.size
            # each output row only as wide as the tiles that cross it
            spans = np.tile(np.array([width, 0]), (height, 1))
            for p in block:
                oy, ox = (p.row - row0) * grid.stride, (p.col - col0) * grid.stride
                rows_of = slice(oy, oy + grid.size)
                spans[rows_of, 0] = np.minimum(spans[rows_of, 0], ox)
                spans[rows_of, 1] = np.maximum(spans[rows_of, 1], ox + grid.size)
            pixels, valid = self._window(reader, zone, x0, y0, grid.gsd, width, height, spans)
            for p in block:
                oy, ox = (p.row - row0) * grid.stride, (p.col - col0) * grid.stride
                tile_valid = valid[oy : oy + grid.size, ox : ox + grid.size]
                share = np.count_nonzero(tile_valid) / tile_valid.size
                if share < min_valid or share == 0:
                    continue
                rgb = to_uint8(pixels[:, oy : oy + grid.size, ox : ox + grid.size], stretch)
                held = rgb if share == 1 else rgb[tile_valid]
                if held.min() == held.max():  # one constant colour: blank fill, not imagery
                    continue
                yield p, rgb

    def _window(
        self,
        reader: _WindowReader,
        zone: Zone,
        x0: float,
        y0: float,
        gsd: float,
        width: int,
        height: int,
        spans: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raster bands (C, height, width) in the raster's dtype and their valid mask, resampled
        onto ``zone``'s grid with top-left corner (x0, y0): through a control grid where it can
        follow the projection, through GDAL's warper where PROJ cannot place every pixel.
        ``spans``: the columns [start, stop) each output row needs (see ``resample``)."""
        resampled = self._resampled(reader, zone, x0, y0, gsd, width, height, spans)
        if resampled is not None:
            return resampled
        return self._warped(reader.dataset, zone, x0, y0, gsd, width, height)

    def _to_source(self, zone: Zone, x0: float, y0: float, gsd: float):
        """(output column, row) of a grid window -> continuous (column, row) in the raster."""
        if self._meta["lonlat"]:  # the raster is in the body's own lon/lat

            def to_crs(x, y):
                return from_zone(self.geographic, zone, x, y)
        else:
            to_crs = _zone_to_source(self.geographic.to_wkt(), self._meta["crs"].to_wkt(), zone).transform
        inverse = ~self._meta["transform"]
        unwrap = self._meta["geographic_crs"]
        centre = self._meta["centre_lon"]

        def to_source(cols, rows):
            x, y = to_crs(x0 + cols * gsd, y0 - rows * gsd)
            if unwrap:  # one run of longitudes around the zone, on the raster's side of 180
                lon0 = zone.central_meridian
                x = lon0 + wrap_lon(x - lon0)
                x = x + 360.0 * np.round((centre - lon0) / 360.0)
            return inverse @ (x, y)

        return to_source

    def _resampled(self, reader: _WindowReader, zone, x0, y0, gsd, width, height, spans=None):
        src = reader.dataset
        to_source = self._to_source(zone, x0, y0, gsd)
        period = float(src.width) if self._meta["wraps"] else None
        for step in CONTROL_STEPS:
            gx, gy, u, v = control_grid(to_source, width, height, step)
            if step == 1 or grid_error(to_source, gx, gy, u, v, period) <= MAX_GRID_ERROR:
                break  # (at a step of one pixel, every position is exact)
        if not (np.isfinite(u).all() and np.isfinite(v).all()):
            return None  # PROJ could not place some pixels in the raster's CRS
        bands = list(self._meta["bands"])
        # decimate while reading (GDAL picks overviews) so the kernel filters over a few pixels
        fu, fv = (
            int(f) if f >= MIN_DECIMATION else 1
            for f in (scale.min() for scale in cell_scales(gx, gy, u, v, period))
        )
        r0 = max(0, math.floor(v.min() - 2 * fv - 2))
        r1 = min(src.height, math.ceil(v.max() + 2 * fv + 2))
        c0, c1 = math.floor(u.min() - 2 * fu - 2), math.ceil(u.max() + 2 * fu + 2)
        wrap = period is not None and (c0 < 0 or c1 > src.width)
        if wrap:  # the window crosses the raster's edge (or goes round a pole): whole rows
            c0, c1 = 0, src.width
        c0, c1 = max(0, c0), min(src.width, c1)
        if r1 <= r0 or c1 <= c0:  # wholly outside the raster
            return (
                np.zeros((len(bands), height, width), np.dtype(self._meta["dtype"])),
                np.zeros((height, width), bool),
            )
        window = Window(c0, r0, c1 - c0, r1 - r0)
        shape = (max(1, math.ceil((r1 - r0) / fv)), max(1, math.ceil((c1 - c0) / fu)))
        resampling = Resampling.average if max(fu, fv) > 1 else Resampling.nearest
        image, mask = reader.read(window, shape, resampling)
        sx, sy = (c1 - c0) / shape[1], (r1 - r0) / shape[0]
        out, valid = resample(
            image, mask, gx, gy, (u - c0) / sx, (v - r0) / sy, width, height, wrap=wrap, spans=spans
        )
        return np.moveaxis(out, -1, 0), valid  # bands first, as GDAL gives them; no copy

    def _warped(self, src, zone, x0, y0, gsd, width, height):
        transform = rasterio.transform.from_origin(x0, y0, gsd, gsd)
        dst_crs = RioCRS.from_wkt(zone_crs(self.geographic, zone).to_wkt())
        with WarpedVRT(
            src,
            src_crs=self._meta["crs"],
            src_transform=self._meta["transform"],
            crs=dst_crs,
            transform=transform,
            width=width,
            height=height,
            add_alpha=not self._meta["alpha"],
            resampling=Resampling.bilinear,
            **_warp_options(zone),
        ) as vrt:
            # GDAL derives band masks from an alpha band only for 2- or 4-band datasets, so read
            # the alpha band itself (the raster's own or the one the warp adds)
            alpha_band = next((i + 1 for i, c in enumerate(vrt.colorinterp) if c == ColorInterp.alpha), None)
            pixels = vrt.read(list(self._meta["bands"]))
            valid = (vrt.read(alpha_band) if alpha_band else vrt.read_masks(1)) > 0
        return pixels, valid

    def read_tile(self, zone: Zone, grid: TileGrid, row: int, col: int) -> np.ndarray:
        """RGB pixels of one tile (for thumbnails), read straight from the raster."""
        x0, y0 = grid.origin(row, col)
        with self._open() as src:
            pixels, _ = self._window(
                _WindowReader(src, self._meta, whole=False), zone, x0, y0, grid.gsd, grid.size, grid.size
            )
            return to_uint8(pixels, self._stretch(src))


@lru_cache(maxsize=256)
def _zone_to_source(geographic_wkt: str, source_wkt: str, zone: Zone) -> pyproj.Transformer:
    geographic = pyproj.CRS.from_wkt(geographic_wkt)
    return pyproj.Transformer.from_crs(
        zone_crs(geographic, zone), pyproj.CRS.from_wkt(source_wkt), always_xy=True
    )


def _warp_options(zone: Zone) -> dict:
    """GDAL finds the source pixels a warp needs from the edges of the output; around a pole,
    whose whole row of source pixels lies inside a polar output, it must sample the whole grid."""
    return {"SAMPLE_GRID": "YES"} if zone.polar else {}


def to_uint8(bands: np.ndarray, stretch: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """(C, H, W) raster bands -> (H, W, 3) uint8."""
    if stretch is not None:
        lo, hi = stretch
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and infinite pixels: 0 and 255
            scaled = (bands.astype(np.float32) - lo[:, None, None]) / (hi - lo)[:, None, None]
            bands = np.nan_to_num(np.clip(scaled * 255.0 + 0.5, 0, 255), nan=0.0).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(bands.astype(np.uint8, copy=False), 0, -1))


def parse_time(value) -> pd.Timestamp | None:
    """A source's acquisition time (UTC) from ISO text or TIFF's ``YYYY:MM:DD HH:MM:SS``; None if empty."""
    return utc_timestamp(value, "acquisition time", SourceError)
