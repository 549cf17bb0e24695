"""Separate band files read as one raster (Sentinel-2 and Landsat ship one file per band).

The files are stacked, in the order given, into a GDAL VRT held in memory: band ``i`` of the stack
is band 1 of file ``i``, resampled onto the first file's grid when a file is coarser or finer
(Landsat's 15 m pan beside its 30 m bands). Files are opened by content, whatever their extension
says (Sentinel-2 bands named ``.jp2`` can be GeoTIFFs).
"""

from __future__ import annotations

import warnings
from html import escape
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from lookalike.errors import SourceError

_GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def _band_file(path: str) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return dict(
                    path=str(Path(path).resolve()),
                    width=src.width,
                    height=src.height,
                    crs=src.crs,
                    bounds=src.bounds,
                    transform=src.transform,
                    dtype=src.dtypes[0],
                    nodata=src.nodata,
                    count=src.count,
                )
    except (RasterioError, OSError) as exc:
        raise SourceError(f"cannot read band file {path}: {exc}") from None


def _check_same_ground(first: dict, other: dict) -> None:
    if first["crs"] != other["crs"]:
        raise SourceError(
            f"band files of one stack must share a CRS: {Path(first['path']).name} is in "
            f"{first['crs']}, {Path(other['path']).name} in {other['crs']}"
        )
    tolerance = max(abs(first["transform"].a), abs(other["transform"].a))  # one coarse pixel
    off = max(abs(a - b) for a, b in zip(first["bounds"], other["bounds"]))
    if off > tolerance:
        raise SourceError(
            f"band files of one stack must cover the same ground: "
            f"{Path(other['path']).name} is {off:g} CRS units off "
            f"{Path(first['path']).name}"
        )
    if other["dtype"] != first["dtype"]:
        raise SourceError(
            f"band files of one stack must share a data type: {Path(first['path']).name} "
            f"holds {first['dtype']}, {Path(other['path']).name} {other['dtype']}"
        )


def stack_vrt(paths: list[str] | tuple[str, ...]) -> str:
    """The VRT (XML text, which rasterio opens as a path) stacking band 1 of each file."""
    if len(paths) < 2:
        raise SourceError("a stack needs two or more band files (FILE,FILE[,...])")
    files = [_band_file(p) for p in paths]
    first = files[0]
    for other in files[1:]:
        _check_same_ground(first, other)
    gdal_type = _GDAL_TYPES.get(first["dtype"])
    if gdal_type is None:
        raise SourceError(f"{first['path']} holds {first['dtype']} pixels, which a stack cannot hold")
    bands = []
    for i, f in enumerate(files, start=1):
        nodata = "" if f["nodata"] is None else f"<NoDataValue>{f['nodata']!r}</NoDataValue>"
        bands.append(
            f'<VRTRasterBand dataType="{gdal_type}" band="{i}">{nodata}'
            f'<SimpleSource resampling="bilinear"><SourceFilename relativeToVRT="0">{escape(f["path"])}'
            f"</SourceFilename><SourceBand>1</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{f["width"]}" ySize="{f["height"]}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{first["width"]}" ySize="{first["height"]}"/>'
            f"</SimpleSource></VRTRasterBand>"
        )
    crs = "" if first["crs"] is None else f"<SRS>{escape(first['crs'].to_wkt())}</SRS>"
    geo = ", ".join(repr(v) for v in first["transform"].to_gdal())
    return (
        f'<VRTDataset rasterXSize="{first["width"]}" rasterYSize="{first["height"]}">{crs}'
        f"<GeoTransform>{geo}</GeoTransform>{''.join(bands)}</VRTDataset>"
    )


def stack_name(paths: list[str] | tuple[str, ...]) -> str:
    """A source name for a stack: the file stems' common start and their differing ends,
    ``s2_B04.jp2,s2_B03.jp2,s2_B02.jp2`` -> ``s2_B04+B03+B02``."""
    stems = [Path(p).stem for p in paths]
    common = stems[0]
    for stem in stems[1:]:
        while not stem.startswith(common):
            common = common[:-1]
    cut = max(common.rfind("_"), common.rfind("-"), common.rfind("."))
    common = common[: cut + 1] if cut >= 0 else common
    return common + "+".join(s[len(common) :] for s in stems)
