"""``lookalike bench index``: a whole ``lookalike index`` run against the encoder alone on the
same tiles, in one process, with the time of each stage.

1. The build, pipelined as ``lookalike index`` runs it (tiles cut on a background thread while
   the encoder works), into a temporary folder; its per-stage seconds (``read``: reading,
   warping and cutting tiles, or decoding images; ``prepare``: stacking them; ``encode``;
   ``save``: the resumable chunk files; ``hash``; ``commit``: the index files).
2. With ``serial`` the same build with the pipeline off (``prefetch=0``), the reference.
3. The encoder alone: the first ``encode_sample`` tiles of the same build, already in memory,
   through the same encoder and batch size (4 times over), before and after each build; each build's ratio is
   against the faster of the two passes around it (shared cores change speed over minutes).

``ratio`` = end-to-end tiles/s / encoder-only tiles/s. ``thumbnail_ms_stored`` /
``_rendered``: a hit's thumbnail looked up in the built index against resampled from the source
(the path of indexes without stored thumbnails), per thumbnail, on the same 200 tiles. Peak RSS
is the process's high-water mark (``ru_maxrss``) read after the builds (the encoder-only sample,
``encode_sample`` tiles, is held during them).
"""

from __future__ import annotations

import itertools
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.errors import OptionError
from lookalike.indexer.build import index_images, index_rasters
from lookalike.indexer.defaults import TILE_SIZE, TILE_STRIDE
from lookalike.indexer.encoding import Encoder
from lookalike.indexer.image_folders import load_image, read_labels
from lookalike.indexer.pipeline import StageTimes
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.store import open_index
from lookalike.indexer.tiling import TileGrid, Zone

PREFETCH = 2  # chunks made ahead in the pipelined build
ENCODE_REPEATS = 4  # passes over the encoder-only sample per timing


def peak_rss_mb() -> float:
    """The process's peak resident set so far, in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build(build, prefetch: int, work: Path) -> dict:
    times = StageTimes()
    t0 = time.perf_counter()
    out = build(work / f"index-{prefetch}", times, prefetch)
    with times.timing("commit"):
        index = open_index(out, verify=False)
    seconds = time.perf_counter() - t0
    return dict(
        index=index, tiles=index.n, seconds=seconds, tiles_per_s=index.n / seconds, stages=times.as_dict()
    )


def _thumbnail_times(index, n: int = 200) -> dict:
    """A hit's thumbnail looked up in the index against rendered from the source (the path of
    indexes without stored thumbnails), on the same tiles; the source is decoded beforehand."""
    from lookalike.indexer import thumbnails

    rows = np.linspace(0, index.n - 1, min(n, index.n)).astype(int)
    tiles = [index.tiles.iloc[r].to_dict() for r in rows]
    thumbnails.render_thumbnail(index, tiles[0])  # decode the source outside the timing
    for cached in (thumbnails._thumbnail_jpeg, thumbnails._chip_jpeg):
        cached.cache_clear()
    t0 = time.perf_counter()
    for tile in tiles:
        thumbnails.render_thumbnail(index, tile)
    rendered = (time.perf_counter() - t0) / len(tiles) * 1000
    t0 = time.perf_counter()
    for tile in tiles:
        thumbnails.thumbnail_jpeg(index, tile)
    stored = (time.perf_counter() - t0) / len(tiles) * 1000
    return dict(
        thumbnail_ms_stored=stored,
        thumbnail_ms_rendered=rendered,
        thumbnail_bytes_per_tile=index.manifest["files"]["thumbs"]["bytes"] / index.n,
    )


def _megapixels(source: RasterSource) -> float:
    import rasterio

    with rasterio.open(source.path) as src:
        return src.width * src.height / 1e6


def _encoder_rate(encoder: Encoder, images: list[np.ndarray], repeats: int = ENCODE_REPEATS) -> float:
    """Tiles/s of the encoder alone on ``images``, in chunks of 512 as a build encodes them,
    ``repeats`` times (a small sample is held, a longer pass timed)."""
    encoder.features(np.stack(images[: min(len(images), encoder.batch_size)]))  # warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        for start in range(0, len(images), 512):
            encoder.features(np.stack(images[start : start + 512]))
    return repeats * len(images) / (time.perf_counter() - t0)


def _image_folder_job(
    encoder: Encoder,
    images: str | Path,
    labels: str | Path | None,
    split: str | None,
    image_size: int,
    encode_sample: int,
) -> tuple[Callable, Callable[[], list[np.ndarray]], dict]:
    """The build of an image folder, its encoder-only sample and its description."""

    def build(out, times, prefetch):
        return index_images(
            images,
            labels,
            out,
            split=split,
            image_size=image_size,
            encoder=encoder,
            times=times,
            prefetch=prefetch,
        )

    def sample():
        rows = read_labels(Path(images), labels, split=split).head(encode_sample)
        return [load_image(Path(images) / p, image_size) for p in rows["path"]]

    what = dict(images=Path(images).name, labels=Path(labels).name, split=split, image_size=image_size)
    return build, sample, what


def _raster_job(
    encoder: Encoder,
    sources: list[RasterSource],
    size: int,
    stride: int,
    gsd: float | None,
    zone_list: list[Zone] | None,
    bbox: tuple[float, float, float, float] | None,
    encode_sample: int,
) -> tuple[Callable, Callable[[], list[np.ndarray]], dict]:
    """The build of raster sources, its encoder-only sample (their first tiles) and its description."""
    grid = TileGrid(size, stride, gsd or sources[0].native_gsd)

    def build(out, times, prefetch):
        return index_rasters(
            sources,
            out,
            size=size,
            stride=stride,
            gsd=gsd,
            zones=zone_list,
            bbox=bbox,
            encoder=encoder,
            times=times,
            prefetch=prefetch,
        )

    def sample():
        tiles = (pixels for source in sources for _, pixels in source.tiles(grid, zones=zone_list, bbox=bbox))
        return list(itertools.islice(tiles, encode_sample))

    what = dict(
        sources=[s.name for s in sources],
        source_megapixels=[_megapixels(s) for s in sources],
        tile_size=size,
        stride=stride,
        gsd=grid.gsd,
    )
    return build, sample, what


def _timed_builds(build: Callable, encoder: Encoder, held: list[np.ndarray], serial: bool) -> dict:
    """The pipelined build (and with ``serial`` the reference one) in a temporary folder, the
    encoder alone timed around each, the peak RSS after them and the thumbnail timings."""
    work = Path(tempfile.mkdtemp(prefix="lookalike-bench-index-"))
    # the encoder alone before and after each build: shared cores change speed from minute to
    # minute, so each build is compared with the encoder timed just around it (the faster of
    # its two neighbouring passes, so the ratio does not flatter the build)
    rates = [_encoder_rate(encoder, held)]
    try:
        pipelined = _build(build, PREFETCH, work)
        rates.append(_encoder_rate(encoder, held))
        reference = _build(build, 0, work) if serial else None
        if reference is not None:
            rates.append(_encoder_rate(encoder, held))
        rss = peak_rss_mb()
        thumbs = (
            _thumbnail_times(pipelined["index"]) if "thumbs" in pipelined["index"].manifest["files"] else {}
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dict(pipelined=pipelined, reference=reference, rates=rates, rss=rss, thumbs=thumbs)


def _report(what: dict, encoder: Encoder, batch_size: int, runs: dict) -> dict:
    """The benchmark's result: rates, ratios and stages of the builds in ``runs``."""
    pipelined, reference, rates = runs["pipelined"], runs["reference"], runs["rates"]
    encode_rate = max(rates[:2])
    result = dict(
        what,
        runtime=encoder.runtime,
        batch_size=batch_size,
        views=encoder.views,
        tiles=pipelined["tiles"],
        tiles_per_s=pipelined["tiles_per_s"],
        encode_tiles_per_s=encode_rate,
        ratio=pipelined["tiles_per_s"] / encode_rate,
        peak_rss_mb=runs["rss"],
        stages=pipelined["stages"],
        seconds=pipelined["seconds"],
        encode_passes_tiles_per_s=rates,
        **runs["thumbs"],
    )
    if reference is not None:
        serial_rate = max(rates[1:])
        result.update(
            serial_tiles_per_s=reference["tiles_per_s"],
            serial_encode_tiles_per_s=serial_rate,
            serial_ratio=reference["tiles_per_s"] / serial_rate,
            serial_stages=reference["stages"],
            speedup_over_serial=pipelined["tiles_per_s"] / reference["tiles_per_s"],
        )
    return result


def bench_index(
    sources: list[RasterSource] | None = None,
    *,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    split: str | None = None,
    image_size: int = 224,
    size: int = TILE_SIZE,
    stride: int = TILE_STRIDE,
    gsd: float | None = None,
    zones: list[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    runtime: str = "auto",
    batch_size: int = 64,
    serial: bool = True,
    encode_sample: int = 512,
    views: int | None = None,
) -> dict:
    """The benchmark on ``sources`` (rasters) or an image folder (``images`` + ``labels``)."""
    if bool(sources) == bool(images):
        raise OptionError("give raster sources, or --images ROOT --labels CSV (not both)")
    if encode_sample < 1:
        raise OptionError(f"--encode-sample must be at least 1, got {encode_sample}")
    encoder = Encoder(
        runtime=runtime,
        batch_size=batch_size,
        **({"views": views} if views else {}),
        **({"image_size": image_size} if images else {}),
    )
    zone_list = [Zone.parse(z) for z in zones] if zones else None
    if images:
        build, sample, what = _image_folder_job(encoder, images, labels, split, image_size, encode_sample)
    else:
        build, sample, what = _raster_job(encoder, sources, size, stride, gsd, zone_list, bbox, encode_sample)
    held = sample()
    return _report(what, encoder, batch_size, _timed_builds(build, encoder, held, serial))
