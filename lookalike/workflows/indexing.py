"""Building indexes from rasters or image folders, on this machine or a dask cluster, and
describing them: what ``lookalike index`` and ``lookalike info`` do, callable from Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.data.registry import DATASETS, fetch
from lookalike.errors import LookalikeError
from lookalike.indexer.ann import build_ann, calibrate
from lookalike.indexer.bodies import body_named, body_of_manifest
from lookalike.indexer.build import index_images, index_rasters, tidy_build
from lookalike.indexer.catalogue import catalogue_summary, place_index_at_observations
from lookalike.indexer.defaults import DEFAULT_VIEWS, TILE_SIZE, TILE_STRIDE
from lookalike.indexer.distributed import (
    EncoderSpec,
    connect,
    index_images_distributed,
    index_rasters_distributed,
)
from lookalike.indexer.encoding import Encoder
from lookalike.indexer.product_times import read_sidecar_times
from lookalike.indexer.product_times import time_from_name as time_from_name_of
from lookalike.indexer.shards import read_shards
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.store import MANIFEST, open_index, read_manifest, write_ann
from lookalike.indexer.tiling import Zone
from lookalike.models.defaults import DEFAULT_BACKBONE
from lookalike.workflows.landmarks import classify_chips


def raster_sources(
    refs: Sequence[str],
    *,
    name: str | None = None,
    crs: str | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    time: str | None = None,
    bands: tuple[int, ...] | None = None,
    stacks: Sequence[Sequence[str]] = (),
    body: str | None = None,
    time_from_name: str | None = None,
    times_csv: str | Path | None = None,
) -> list[RasterSource]:
    """Raster sources for file paths, registered mosaic names (``mars_8k``, fetched if need be)
    and ``stacks`` of band files (each one source). The acquisition time of each comes from
    ``time``, else the ``times_csv`` row of its file name, else ``time_from_name``, else the
    raster itself (tags, product name or label; ``RasterSource``)."""
    sidecar = read_sidecar_times(times_csv) if times_csv else {}

    def time_of(path: str) -> str | None:
        if time:
            return time
        found = sidecar.get(Path(path).name)
        if found is None and time_from_name:
            found = time_from_name_of(path, time_from_name)
        return None if found is None else found.isoformat()

    sources = []
    for ref in refs:
        if ref in DATASETS and not Path(ref).exists():
            ds = DATASETS[ref]
            sources.append(
                RasterSource(fetch(ref), name=ref, crs=ds.crs, bounds=ds.bounds, time=time, body=body)
            )
        else:
            sources.append(
                RasterSource(
                    ref, name=name, crs=crs, bounds=bounds, time=time_of(ref), bands=bands, body=body
                )
            )
    for files in stacks:
        sources.append(
            RasterSource(
                files[0],
                name=name if not refs and len(stacks) == 1 else None,
                crs=crs,
                bounds=bounds,
                time=time_of(files[0]),
                bands=bands,
                stack=tuple(files),
                body=body,
            )
        )
    return sources


@dataclass(frozen=True)
class BuildOptions:
    """Every option of ``build_index`` besides its inputs, with the defaults of ``lookalike
    index``. How rasters are read: ``name``, ``crs``, ``bounds``, ``bands``, ``time`` and
    ``stacks`` (band files read as one source each), ``body`` (overrides the body the sources' CRS
    names; for chips, the body they lie on), ``time_from_name`` and ``times_csv`` (times products
    do not carry; ``raster_sources``). Chips: ``split``, ``image_size``. Tiles: ``tile_size``,
    ``stride``, ``gsd``, ``zones``, ``bbox``, ``min_valid``. Codes: ``hash_path``, ``bits``,
    ``backbone``, ``weights``, ``batch_size``, ``runtime``, ``views`` (rotations/flips each tile's
    feature averages over, ``indexer.encoding.ORIENTATIONS``; default: the index's own when
    appending, else ``DEFAULT_VIEWS``).

    ``scheduler`` runs tiling and encoding on a dask cluster ('local' for one on this machine);
    ``shards`` writes that many index directories plus ``shards.json``. For image chips,
    ``footprints`` places them at HiRISE observations ('hirise' or a CSV) and ``classify`` fills
    the landmark catalogue with a classifier ('hirise', 'msl' or a file). ``ann`` ('hnsw', ...)
    stores an approximate index with the codes (``index_ann``); with no rasters or images it is
    added to the existing index at ``out``. An index that has one keeps it through appends.
    ``prefetch`` chunks of tiles or images are made ahead of the encoder on another thread
    (default: 2; see ``indexer.build``).
    """

    name: str | None = None
    crs: str | None = None
    bounds: tuple[float, float, float, float] | None = None
    bands: tuple[int, ...] | None = None
    time: str | None = None
    stacks: Sequence[Sequence[str]] | None = None
    body: str | None = None
    time_from_name: str | None = None
    times_csv: str | Path | None = None
    split: str | None = None
    image_size: int = 224
    tile_size: int = TILE_SIZE
    stride: int = TILE_STRIDE
    gsd: float | None = None
    zones: Sequence[str] | None = None
    bbox: tuple[float, float, float, float] | None = None
    min_valid: float = 0.5
    hash_path: str | None = None
    bits: int | None = None
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    batch_size: int = 64
    runtime: str = "auto"
    views: int | None = None
    append: bool = False
    scheduler: str | None = None
    shards: int | None = None
    footprints: str | None = None
    classify: str | None = None
    ann: str | None = None
    ann_params: dict | None = None
    prefetch: int | None = None

    def tiling(self) -> dict:
        """Keyword arguments of ``index_rasters`` for the tile grid."""
        zones = [Zone.parse(z) for z in self.zones] if self.zones else None
        return dict(
            size=self.tile_size,
            stride=self.stride,
            gsd=self.gsd,
            zones=zones,
            bbox=self.bbox,
            min_valid=self.min_valid,
        )

    def codes(self) -> dict:
        """Keyword arguments every build takes for its codes and output."""
        return dict(bits=self.bits, hash_path=self.hash_path, append=self.append, shards=self.shards)

    def encoder(self, views: int, images: bool) -> dict:
        """Keyword arguments of ``Encoder`` / ``EncoderSpec``."""
        return dict(
            backbone=self.backbone,
            weights=self.weights,
            batch_size=self.batch_size,
            runtime=self.runtime,
            views=views,
            image_size=self.image_size if images else None,
        )


def build_index(
    out: str | Path,
    *,
    rasters: Sequence[str] = (),
    images: str | Path | None = None,
    labels: str | Path | None = None,
    progress: bool = True,
    **options,
) -> Path:
    """Build (or ``append`` to) an index from ``rasters`` (paths or mosaic names) and stacks of
    band files, or from an image folder (``images`` + ``labels``); returns its path. ``options``
    are the fields of ``BuildOptions``."""
    o = BuildOptions(**options)
    if o.prefetch is not None and o.prefetch < 0:
        raise LookalikeError(f"--prefetch must be 0 or more chunks, got {o.prefetch}")
    if o.ann and o.shards:
        raise LookalikeError("--ann works on one index, not with --shards")
    if o.ann and not rasters and not o.stacks and not images:
        index_ann(out, o.ann, o.ann_params, progress=progress)
        return Path(out)
    _check_inputs(list(rasters) + list(o.stacks or []), images, labels, o.shards, o.footprints, o.classify)
    body = body_named(o.body).key if o.body else None
    views = o.views
    if views is None:
        views = open_index(out).views if o.append and (Path(out) / MANIFEST).exists() else DEFAULT_VIEWS
    if images:
        path = _build_images(out, images, labels, o, views, body, progress)
    else:
        sources = raster_sources(
            rasters,
            name=o.name,
            crs=o.crs,
            bounds=o.bounds,
            time=o.time,
            bands=o.bands,
            stacks=o.stacks or (),
            body=body,
            time_from_name=o.time_from_name,
            times_csv=o.times_csv,
        )
        path = _build_rasters(out, sources, o, views, progress)
    if images and not o.shards:
        catalogue_chips(path, images, footprints=o.footprints, classify=o.classify, progress=progress)
        tidy_build(Path(path))
    if not o.shards and (o.ann or _uncalibrated(path)):
        index_ann(path, o.ann, o.ann_params, progress=progress)
    return Path(path)


def _ahead(o: BuildOptions, progress: bool) -> dict:
    return dict(progress=progress) if o.prefetch is None else dict(progress=progress, prefetch=o.prefetch)


def _build_rasters(
    out: str | Path, sources: list[RasterSource], o: BuildOptions, views: int, progress: bool
) -> Path:
    """Tile, encode and index ``sources`` here or on ``o.scheduler``'s cluster."""
    if o.scheduler:
        with connect(o.scheduler) as client:
            spec = EncoderSpec(**o.encoder(views, images=False))
            return index_rasters_distributed(client, sources, out, encoder=spec, **o.tiling(), **o.codes())
    encoder = Encoder(**o.encoder(views, images=False))
    return index_rasters(sources, out, encoder=encoder, **o.tiling(), **o.codes(), **_ahead(o, progress))


def _build_images(
    out: str | Path,
    images: str | Path,
    labels: str | Path | None,
    o: BuildOptions,
    views: int,
    body: str | None,
    progress: bool,
) -> Path:
    """Encode and index an image folder here or on ``o.scheduler``'s cluster."""
    chips = dict(split=o.split, image_size=o.image_size, body=body, **o.codes())
    if o.scheduler:
        with connect(o.scheduler) as client:
            spec = EncoderSpec(**o.encoder(views, images=True))
            return index_images_distributed(client, images, labels, out, encoder=spec, **chips)
    # placing and classifying come after the commit: the build's work folder stays until they
    # finish, so that the same command run again after a kill finishes them
    keep_work = bool(o.footprints or o.classify) and not o.shards
    encoder = Encoder(**o.encoder(views, images=True))
    return index_images(
        images, labels, out, encoder=encoder, keep_work=keep_work, **chips, **_ahead(o, progress)
    )


def _check_inputs(
    rasters: Sequence[str],
    images: str | Path | None,
    labels: str | Path | None,
    shards: int | None,
    footprints: str | None,
    classify: str | None,
) -> None:
    """Reject a build given both or neither of rasters and images, images without labels, or
    footprints / classify where they do not apply."""
    if bool(rasters) == bool(images):
        raise LookalikeError("give raster files / dataset names, or --images ROOT --labels CSV (not both)")
    if images and not labels:
        raise LookalikeError("--images needs --labels CSV")
    if shards and (footprints or classify):
        raise LookalikeError("--footprints and --classify work on one index, not with --shards")
    if (footprints or classify) and not images:
        raise LookalikeError(
            "--footprints and --classify are for image chips (--images); find "
            "landmarks in rasters with `lookalike landmarks SCENE --index DIR`"
        )


def _uncalibrated(path: str | Path) -> bool:
    info = read_manifest(path).get("ann")
    return info is not None and info.get("calibration") is None


def index_ann(
    path: str | Path,
    method: str | None = None,
    params: dict | None = None,
    k: int = 1000,
    progress: bool = True,
) -> dict:
    """Store an approximate index of ``method`` with the index at ``path`` (replacing any), or,
    with ``method`` None, measure again the one it has (an append extended it). Its recall@k
    and speed against the scan, on the index's own tiles, go into the manifest
    (``indexer.ann.calibrate``): ``search(method="auto")`` uses it only where they met the bar."""
    index = open_index(path)
    if method is None:
        ann = index.ann()
        if ann is None:
            raise LookalikeError(f"{path} has no approximate index; say which to build (--ann hnsw)")
    else:
        ann = build_ann(np.asarray(index.codes), method, progress=progress, **(params or {}))
    calibration = calibrate(ann, k=k)
    write_ann(path, ann, calibration)
    return calibration


def catalogue_chips(
    path: str | Path,
    images: str | Path,
    *,
    footprints: str | None = None,
    classify: str | None = None,
    progress: bool = True,
) -> None:
    """Place the chips of an image-folder index at their HiRISE observations (``footprints``:
    'hirise' or a CSV) and classify them into its landmark catalogue (``classify``: a model)."""
    if footprints:
        unplaced = place_index_at_observations(path, None if footprints == "hirise" else footprints)
        if unplaced:
            print(f"{unplaced} image(s) have no known HiRISE observation: they carry no footprint")
    if classify:
        classify_chips(path, images, classify, progress=progress)


def index_summary(path: str | Path, verify: bool = True) -> dict:
    """What ``lookalike info`` prints: counts, code, sources, bytes per tile, landmarks."""
    index = open_index(path, verify=verify)
    m = index.manifest
    n = max(index.n, 1)
    body = body_of_manifest(m)
    summary = dict(
        path=str(index.path),
        count=index.n,
        bits=index.bits,
        kind=m.get("kind"),
        body=body.key if body else None,
        backbone=m.get("backbone", {}).get("name"),
        hash=m.get("hash", {}).get("method"),
        sources=sorted(m.get("sources", {})),
        zones=index.filter_columns().zone_count() if "zone" in index.table else 0,
        bytes_per_tile=dict(
            codes=m["files"]["codes"]["bytes"] / n,
            tile_table=m["files"]["tiles"]["bytes"] / n,
            **{
                role: m["files"][role]["bytes"] / n
                for role in ("columns", "ids", "rowsums", "cells")
                if role in m["files"]
            },
        ),
        created=m.get("created"),
        updated=m.get("updated"),
        verified=verify,
    )
    if index.landmarks is not None:
        summary["landmarks"] = catalogue_summary(index.tiles, index.landmarks)
        summary["bytes_per_tile"]["landmarks"] = m["files"]["landmarks"]["bytes"] / n
    if index.ann_info is not None:
        summary["ann"] = index.ann_info
        summary["bytes_per_tile"]["ann"] = m["files"]["ann"]["bytes"] / n
    return summary


def shards_summary(path: str | Path) -> dict:
    """A sharded index: total count, code length and each shard's rows."""
    shards, bits = read_shards(path)
    return dict(
        path=str(path),
        count=sum(s.count for s in shards),
        bits=bits,
        shards=[dict(path=s.path, offset=s.offset, count=s.count) for s in shards],
    )
