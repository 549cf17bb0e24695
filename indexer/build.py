"""Building an index: sources -> tiles -> features -> codes -> store, resumable.

Features are computed in chunks of ``CHUNK`` tiles and kept in a work folder inside the output
(``.work-<key>``, the key hashing sources, tiling and backbone) until the index is committed; an
interrupted build run again with the same arguments skips the chunks it already encoded. The
manifest records the key (``build``), so a build interrupted after its commit but before its
work folder was removed is recognised when run again: it tidies up and is done (``finished``).
``indexer.distributed`` runs the same plan on a dask cluster: it fills the same chunk files and
commits through ``commit``, so both paths give the same index.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lookalike.errors import IndexCorruptError, LookalikeError
from lookalike.fileio import save_npy
from lookalike.indexer.defaults import TILE_SIZE, TILE_STRIDE
from lookalike.indexer.encoding import Encoder
from lookalike.indexer.image_folders import load_image, read_labels
from lookalike.indexer.pipeline import StageTimes, prefetch_chunks
from lookalike.indexer.shards import SHARD_MANIFEST, write_shards
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.store import MANIFEST, open_index, read_manifest, remove_stale, write_index
from lookalike.indexer.thumbstore import iter_thumbnails, jpeg_thumbnails, write_thumbnails
from lookalike.indexer.tiling import TileGrid, TilePlace, Zone
from lookalike.models.hashing import (
    HashModel,
    fitted_on_features,
    load_hash_model,
    named_hash,
    resolve_hash,
)

CHUNK = 512


def tile_record(source: RasterSource, grid: TileGrid, place: TilePlace) -> dict:
    """The tile table row of one raster tile."""
    rec = dict(
        tile_id=f"{source.name}:{place.zone.label}:{grid.size}px{grid.gsd:.6g}m:{place.row}:{place.col}",
        source=source.name,
        zone=place.zone.label,
        lon=place.lon,
        lat=place.lat,
        time=source.acquired,
        gsd=np.float32(grid.gsd),
        size=np.int16(grid.size),
        row=np.int32(place.row),
        col=np.int32(place.col),
    )
    for i in range(4):
        rec[f"lon{i}"] = np.float32(place.corners_lon[i])
        rec[f"lat{i}"] = np.float32(place.corners_lat[i])
    return rec


def _work_dir(out: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out / f".work-{digest}"


def chunk_files(work: Path, i: int) -> tuple[Path, Path]:
    """Features and tile table of chunk ``i`` in a work folder."""
    return work / f"chunk-{i:06d}.npy", work / f"chunk-{i:06d}.parquet"


def load_chunk(work: Path, i: int, tile_ids: list) -> tuple[np.ndarray, pd.DataFrame] | None:
    """Chunk ``i`` when it was finished before for exactly these tile ids, else None."""
    fpath, tpath = chunk_files(work, i)
    if not (tpath.exists() and fpath.exists()):
        return None
    done = pd.read_parquet(tpath)
    if list(done["tile_id"]) != list(tile_ids):
        return None
    return np.load(fpath), done


def save_chunk(work: Path, i: int, features: np.ndarray, table: pd.DataFrame) -> None:
    """Keep a finished chunk; the table is written last and marks the chunk complete."""
    work.mkdir(parents=True, exist_ok=True)
    fpath, tpath = chunk_files(work, i)
    save_npy(work / ".chunk.npy", features)
    (work / ".chunk.npy").replace(fpath)
    table.to_parquet(work / ".chunk.parquet", index=False)
    (work / ".chunk.parquet").replace(tpath)


def join_chunks(
    features: list[np.ndarray], tables: list[pd.DataFrame], dim: int, dtype=np.float32
) -> tuple[np.ndarray, pd.DataFrame]:
    if not tables:
        return np.zeros((0, dim), dtype), pd.DataFrame()
    return np.concatenate(features), pd.concat(tables, ignore_index=True)


def encode_chunks(
    records_and_images: Iterable[tuple[dict, np.ndarray]],
    encoder: Encoder,
    work: Path,
    total: int | None = None,
    desc: str = "encoding",
    progress: bool = True,
    hash_model: HashModel | None = None,
    times: StageTimes | None = None,
    prefetch: int = 2,
    thumbs: list[Path] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Encode (record, image) pairs chunk by chunk, reusing chunks already in ``work``.

    The pairs are made ``prefetch`` chunks ahead on a background thread while the current chunk
    is encoded (0: one after the other). With ``hash_model`` each chunk is hashed as soon as it
    is encoded and only its codes are kept in memory, so memory does not grow with the source
    by 4 bytes per feature per tile; without it the features are returned (the default recipe and
    PCA-ITQ are fitted on all of them). ``times`` collects the seconds of each stage. With ``thumbs`` (a
    list) each chunk's JPEG thumbnails are written beside it in ``work`` and the files listed.
    """
    work.mkdir(parents=True, exist_ok=True)
    times = times if times is not None else StageTimes()

    def with_thumbnails(chunk: list) -> tuple[list, list[bytes] | None]:
        if thumbs is None:
            return chunk, None
        with times.timing("thumbnails"):
            return chunk, jpeg_thumbnails(img for _, img in chunk)

    if prefetch:  # thumbnails are made on the background thread too
        chunks = prefetch_chunks(records_and_images, CHUNK, prefetch, times, "read", then=with_thumbnails)
    else:
        chunks = map(with_thumbnails, _timed_chunks(records_and_images, CHUNK, times, "read"))
    kept, tables = [], []
    # closed on errors too, so that an error message starts a line of its own
    with tqdm(total=total, desc=desc, unit="tile", disable=not progress, smoothing=0.05) as bar:
        for i, (chunk, thumbnails) in enumerate(chunks):
            with times.timing("prepare"):
                table = pd.DataFrame([r for r, _ in chunk])
                done = load_chunk(work, i, list(table["tile_id"]))
                batch = None if done is not None else np.stack([img for _, img in chunk])
            if done is None:
                with times.timing("encode"):
                    feats = encoder.features(batch)
                with times.timing("save"):
                    save_chunk(work, i, feats, table)
                done = feats, table
            if thumbs is not None:
                thumbs.append(work / f"chunk-{i:06d}.thumbs")
                write_thumbnails(thumbs[-1], thumbnails)
            if hash_model is not None:
                with times.timing("hash"):
                    kept.append(hash_model.encode(done[0]))
            else:
                kept.append(done[0])
            tables.append(done[1])
            bar.update(len(chunk))
    if hash_model is not None:
        return join_chunks(kept, tables, hash_model.bits // 8, np.uint8)
    return join_chunks(kept, tables, encoder.dim)


def _timed_chunks(items: Iterable, size: int, times: StageTimes, stage: str) -> Iterator[list]:
    iterator = iter(items)
    while True:
        t0 = time.perf_counter()
        chunk = list(itertools.islice(iterator, size))
        times.add(stage, time.perf_counter() - t0)
        if not chunk:
            return
        yield chunk


def fixed_hash(
    out: Path, bits: int | None, hash_path: str | None, append: bool, backbone: str
) -> tuple[HashModel, bytes | None] | None:
    """The hash model of a build when it does not depend on the features: the index's own on
    ``--append`` or a model file (with its bytes for a new index); None for the default recipe
    and PCA-ITQ, which are fitted on them. Raises when the model cannot be used here."""
    if append and (out / MANIFEST).exists():
        model = load_hash_model(open_index(out).hash_model_path)
        if hash_path and not fitted_on_features(hash_path):
            given = named_hash(hash_path, bits)
            if given.to_bytes() != model.to_bytes():
                raise LookalikeError(
                    f"--hash {hash_path} differs from the hash model of {out}; "
                    "appended codes must use the index's own model"
                )
        return model, None
    if fitted_on_features(hash_path):
        return None
    model = named_hash(hash_path, bits)
    if model.backbone and model.backbone != backbone:
        raise LookalikeError(
            f"hash model was trained on {model.backbone} features, but the encoder is {backbone}"
        )
    return model, model.to_bytes()


def _hash_for(
    out: Path, features: np.ndarray, bits: int | None, hash_path: str | None, append: bool, backbone: str
) -> tuple[HashModel, bytes | None]:
    fixed = fixed_hash(out, bits, hash_path, append, backbone)
    if fixed is not None:
        return fixed
    model = resolve_hash(hash_path, features, bits, backbone)
    return model, model.to_bytes()


def check_out(out: Path, append: bool, shards: int | None = None, *, leftovers: bool = False) -> None:
    """Refuse to overwrite an index, and combinations the store cannot do. With ``leftovers``,
    an index beside a work folder is not refused yet: it may be this build's own, committed
    just before it was interrupted (``finished`` tells, once the build's key is known)."""

    if shards is not None and shards < 1:
        raise LookalikeError(f"--shards must be at least 1, got {shards}")
    if shards is not None and append:
        raise LookalikeError("--shards cannot be combined with --append (shard a new index instead)")
    if (out / SHARD_MANIFEST).exists():
        raise LookalikeError(f"{out} already holds a sharded index; choose another --out")
    if (out / MANIFEST).exists() and not append and not (leftovers and any(out.glob(".work-*"))):
        raise LookalikeError(
            f"{out} already holds an index; use --append to add to it or choose another --out"
        )


def finished(out: Path, work: Path, tidy: bool = True) -> bool:
    """Whether this very build (``work``'s key) committed the index at ``out`` and was
    interrupted before removing its work folder. Then, with ``tidy``, the work folder and files
    of older generations are removed, and running the command again is done (without it the
    folder stays as the mark of a build whose later steps have not finished)."""
    if not work.is_dir() or not (out / MANIFEST).is_file():
        return False
    try:
        if read_manifest(out).get("build") != work.name:
            return False
    except LookalikeError:
        return False
    if tidy:
        tidy_build(out)
    return True


def tidy_build(out: Path) -> None:
    """Remove the work folder of the build that committed the index at ``out`` (kept until the
    steps after the commit finished) and files of older generations."""
    out = Path(out)
    remove_stale(out)
    key = read_manifest(out).get("build")
    if key and key.startswith(".work-"):
        shutil.rmtree(out / key, ignore_errors=True)


def lean_tiles(table: pd.DataFrame) -> pd.DataFrame:
    """The tile table with its few distinct strings (source, zone) as categoricals: one byte
    per tile in memory instead of a string each, same values and columns."""
    table = table.copy()
    for column in ("source", "zone"):
        if column in table and not isinstance(table[column].dtype, pd.CategoricalDtype):
            table[column] = table[column].astype("category")
    return table


def commit(
    out: Path,
    work: Path,
    features: np.ndarray,
    table: pd.DataFrame,
    backbone: dict,
    bits: int | None,
    hash_path: str | None,
    append: bool,
    info: dict,
    shards: int | None = None,
    hashed: tuple | None = None,
    keep_work: bool = False,
    thumbs: list[Path] | None = None,
    times: StageTimes | None = None,
) -> Path:
    """Hash the features and write the index (or ``shards`` indexes); ``backbone`` is
    ``Encoder.describe()`` of the encoder that made the features. With ``hashed`` (the model
    and its bytes, from ``fixed_hash``) ``features`` are already that model's codes. ``thumbs``:
    the chunks' thumbnail files (``encode_chunks``), joined into the index's. Fitting and
    applying a hash model here is timed as the stage ``hash`` of ``times``."""
    if len(table) == 0:
        raise LookalikeError("no usable tiles: every tile was outside the source, no-data, or blank")
    table = table.copy()
    table["time"] = (
        pd.to_datetime(table["time"], utc=True)
        if "time" in table
        else pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns, UTC]")
    )
    with (times if times is not None else StageTimes()).timing("hash"):
        model, model_bytes = hashed or _hash_for(out, features, bits, hash_path, append, backbone["name"])
        check_backbone(out, append, backbone)
        codes = features if hashed else model.encode(features)
    table = lean_tiles(table)
    info = dict(
        info,
        backbone=backbone,
        hash=dict(method=model.method, bits=model.bits, meta=model.meta),
        build=work.name,
    )
    try:
        if shards is not None:
            write_shards(out, codes, table, shards, bits=model.bits, hash_model=model_bytes, info=info)
        else:
            write_index(
                out,
                codes,
                table,
                bits=model.bits,
                hash_model=model_bytes,
                info=info,
                append=append,
                thumbs=iter_thumbnails(thumbs) if thumbs else None,
            )
    except IndexCorruptError:
        raise  # the index must be repaired first; the features are kept for the run after
    except LookalikeError:
        # the store refused (the index holds these tiles already, other bits): the same command
        # is refused again, so the features kept for resuming it would only take up space
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not keep_work:  # with it, the caller tidies up after its own later steps (``tidy_build``)
        shutil.rmtree(work, ignore_errors=True)
    return out


def check_backbone(out: Path, append: bool, backbone: dict) -> None:
    """Appended codes must come from the backbone and weights the index was built with."""
    if append and (out / MANIFEST).exists():
        old = open_index(out)
        if old.manifest.get("backbone", {}).get("weights_sha256") != backbone["weights_sha256"]:
            raise LookalikeError(f"{out} was built with another backbone or weights; cannot append")
        if old.views != backbone.get("views", 1):
            raise LookalikeError(
                f"{out} averages each tile's features over {old.views} view(s), this "
                f"build over {backbone.get('views', 1)}; append with --views {old.views}"
            )


def raster_plan(
    sources: list[RasterSource],
    out: Path,
    *,
    size: int,
    stride: int,
    gsd: float | None,
    zones: list[Zone] | None,
    bbox: tuple[float, float, float, float] | None,
    backbone: dict,
    min_valid: float,
) -> tuple[TileGrid, Path, dict]:
    """The tile grid, work folder and manifest info of a raster build."""
    grid = TileGrid(size, stride, gsd or sources[0].native_gsd)
    for source in sources:  # before any work: a source too small for a tile is an error
        source.check_holds_a_tile(grid, min_valid)
    key = dict(
        sources=[s.describe() for s in sources],
        grid=grid,
        zones=zones,
        bbox=bbox,
        backbone=backbone,
        min_valid=min_valid,
    )
    info = dict(
        kind="raster",
        tiling=dict(size=size, stride=stride, gsd=grid.gsd),
        sources={s.name: s.describe() for s in sources},
        body=collection_body({s.name: s.body_key for s in sources}, out),
    )
    return grid, _work_dir(out, key), info


def collection_body(bodies: dict[str, str | None], out: Path) -> str | None:
    """The one body an index's sources (name -> body) lie on, that of the index at ``out`` when
    there is one: an index is a collection on one body."""
    known = {name: body for name, body in bodies.items() if body}
    if (out / MANIFEST).is_file():
        existing = read_manifest(out).get("body")
        if existing:
            known = {f"the index at {out}": existing, **known}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{name} on {body}" for name, body in known.items())
        raise LookalikeError(
            f"an index holds sources of one body, not several ({listed}); index each body apart"
        )
    return next(iter(known.values()), None)


def image_plan(
    root: Path,
    labels_csv: str | Path,
    out: Path,
    *,
    split: str | None,
    image_size: int,
    backbone: dict,
    source: str | None,
    body: str | None = None,
) -> tuple[pd.DataFrame, Path, dict]:
    """The tile records, work folder and manifest info of an image-folder build."""
    table = read_labels(root, labels_csv, split=split)
    source = source or root.name
    records = table.assign(tile_id=table["path"], source=source, zone="")
    key = dict(
        root=str(root.resolve()), labels=str(Path(labels_csv).resolve()), split=split, backbone=backbone
    )
    info = dict(kind="images", sources={source: dict(root=str(root.resolve()), image_size=image_size)})
    if body:
        info["body"] = collection_body({source: body}, out)
    return records, _work_dir(out, key), info


def index_rasters(
    sources: list[RasterSource],
    out: str | Path,
    *,
    size: int = TILE_SIZE,
    stride: int = TILE_STRIDE,
    gsd: float | None = None,
    zones: list[Zone] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    bits: int | None = None,
    hash_path: str | None = None,
    encoder: Encoder | None = None,
    min_valid: float = 0.5,
    append: bool = False,
    progress: bool = True,
    shards: int | None = None,
    times: StageTimes | None = None,
    prefetch: int = 2,
) -> Path:
    """Tile, encode and index rasters. ``gsd`` defaults to the first source's native resolution;
    ``shards`` writes that many indexes plus a shard manifest (``indexer.distributed``).
    Tiles are cut ``prefetch`` chunks ahead of the encoder on another thread (0: serially);
    ``times`` collects the seconds of each stage (``indexer.pipeline.StageTimes``)."""
    out = Path(out)
    check_out(out, append, shards, leftovers=True)
    encoder = encoder or Encoder()
    grid, work, info = raster_plan(
        sources,
        out,
        size=size,
        stride=stride,
        gsd=gsd,
        zones=zones,
        bbox=bbox,
        backbone=encoder.describe(),
        min_valid=min_valid,
    )
    if finished(out, work):
        return out
    check_out(out, append, shards)
    # a model known before encoding (a file, or the index's own on --append) hashes each chunk
    # at once, so memory stays flat; the default recipe and PCA-ITQ are fitted on all features
    hashed = fixed_hash(out, bits, hash_path, append, encoder.describe()["name"])
    check_backbone(out, append, encoder.describe())

    def stream():
        for source in sources:
            for place, pixels in source.tiles(grid, zones=zones, bbox=bbox, min_valid=min_valid):
                yield tile_record(source, grid, place), pixels

    thumbs: list[Path] = []
    features, table = encode_chunks(
        stream(),
        encoder,
        work,
        desc="tiling+encoding",
        progress=progress,
        hash_model=hashed[0] if hashed else None,
        times=times,
        prefetch=prefetch,
        thumbs=thumbs,
    )
    return commit(
        out,
        work,
        features,
        table,
        encoder.describe(),
        bits,
        hash_path,
        append,
        info,
        shards,
        hashed=hashed,
        thumbs=thumbs,
        times=times,
    )


def index_images(
    root: str | Path,
    labels_csv: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    image_size: int = 224,
    bits: int | None = None,
    hash_path: str | None = None,
    encoder: Encoder | None = None,
    append: bool = False,
    source: str | None = None,
    progress: bool = True,
    shards: int | None = None,
    times: StageTimes | None = None,
    prefetch: int = 2,
    keep_work: bool = False,
    body: str | None = None,
) -> Path:
    """Index a folder of labelled image chips (every CSV column is kept in the tile table).
    Images are decoded and resized ``prefetch`` chunks ahead of the encoder on another thread
    of lower priority (0: one after the other; ``lookalike bench index --images`` times both).
    ``keep_work`` keeps the work folder after the commit, as the mark that steps after it
    (placing, classifying) are still to finish: run again, the build is recognised as done and
    those steps run again; ``tidy_build`` removes it. ``body``: the body the chips lie on, if
    any (``indexer.bodies``)."""
    out, root = Path(out), Path(root)
    check_out(out, append, shards, leftovers=True)
    encoder = encoder or Encoder(image_size=image_size)
    records, work, info = image_plan(
        root,
        labels_csv,
        out,
        split=split,
        image_size=image_size,
        backbone=encoder.describe(),
        source=source,
        body=body,
    )
    if finished(out, work, tidy=not keep_work):
        return out
    check_out(out, append, shards)
    hashed = fixed_hash(out, bits, hash_path, append, encoder.describe()["name"])
    check_backbone(out, append, encoder.describe())
    pairs = ((rec, load_image(root / rec["path"], image_size)) for rec in records.to_dict("records"))
    thumbs: list[Path] = []
    features, tiles = encode_chunks(
        pairs,
        encoder,
        work,
        total=len(records),
        desc="encoding images",
        progress=progress,
        hash_model=hashed[0] if hashed else None,
        times=times,
        prefetch=prefetch,
        thumbs=thumbs,
    )
    return commit(
        out,
        work,
        features,
        tiles,
        encoder.describe(),
        bits,
        hash_path,
        append,
        info,
        shards,
        hashed=hashed,
        keep_work=keep_work,
        thumbs=thumbs,
        times=times,
    )
