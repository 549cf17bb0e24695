"""Building an index: sources -> tiles -> features -> codes -> store, resumable.

Features are computed in chunks of ``CHUNK`` tiles and kept in a work folder inside the output
(``.work-<key>``, the key hashing sources, tiling and backbone) until the index is committed; an
interrupted build run again with the same arguments skips the chunks it already encoded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from indexer.encoding import Encoder
from indexer.errors import LookalikeError
from indexer.sources import RasterSource, load_image, read_labels
from indexer.store import MANIFEST, open_index, write_index
from indexer.tiling import TileGrid, TilePlace, Zone
from models.hashing import LinearHash, NetworkHash, load_hash_model, resolve_hash

CHUNK = 512


def tile_record(source: RasterSource, grid: TileGrid, place: TilePlace) -> dict:
    """The tile table row of one raster tile."""
    rec = dict(tile_id=f"{source.name}:{place.zone.label}:{grid.size}px{grid.gsd:.6g}m:{place.row}:{place.col}",
               source=source.name, zone=place.zone.label, lon=place.lon, lat=place.lat,
               time=source.acquired, gsd=np.float32(grid.gsd), size=np.int16(grid.size),
               row=np.int32(place.row), col=np.int32(place.col))
    for i in range(4):
        rec[f"lon{i}"] = np.float32(place.corners_lon[i])
        rec[f"lat{i}"] = np.float32(place.corners_lat[i])
    return rec


def _work_dir(out: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out / f".work-{digest}"


def _chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_chunks(records_and_images: Iterable[tuple[dict, np.ndarray]], encoder: Encoder,
                  work: Path, total: int | None = None, desc: str = "encoding",
                  progress: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Encode (record, image) pairs chunk by chunk, reusing chunks already in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    features, tables = [], []
    bar = tqdm(total=total, desc=desc, unit="tile", disable=not progress, smoothing=0.05)
    for i, chunk in enumerate(_chunked(records_and_images, CHUNK)):
        fpath, tpath = work / f"chunk-{i:06d}.npy", work / f"chunk-{i:06d}.parquet"
        table = pd.DataFrame([r for r, _ in chunk])
        if tpath.exists() and fpath.exists():
            done = pd.read_parquet(tpath)
            if list(done["tile_id"]) == list(table["tile_id"]):
                features.append(np.load(fpath))
                tables.append(done)
                bar.update(len(chunk))
                continue
        feats = encoder.features(np.stack([img for _, img in chunk]))
        np.save(work / ".chunk.npy", feats)
        (work / ".chunk.npy").replace(fpath)
        table.to_parquet(work / ".chunk.parquet", index=False)
        (work / ".chunk.parquet").replace(tpath)  # written last: marks the chunk complete
        features.append(feats)
        tables.append(table)
        bar.update(len(chunk))
    bar.close()
    if not tables:
        return np.zeros((0, encoder.dim), np.float32), pd.DataFrame()
    return np.concatenate(features), pd.concat(tables, ignore_index=True)


def _hash_for(out: Path, features: np.ndarray, bits: int | None, hash_path: str | None,
              append: bool, backbone: str) -> tuple[LinearHash | NetworkHash, bytes | None]:
    if append and (out / MANIFEST).exists():
        model = load_hash_model(open_index(out).hash_model_path)
        if hash_path and hash_path != "itq":
            given = resolve_hash(hash_path, features, bits, backbone)
            if given.to_bytes() != model.to_bytes():
                raise LookalikeError(f"--hash {hash_path} differs from the hash model of {out}; "
                                     "appended codes must use the index's own model")
        return model, None
    model = resolve_hash(hash_path, features, bits, backbone)
    if model.backbone and model.backbone != backbone:
        raise LookalikeError(f"hash model was trained on {model.backbone} features, "
                             f"but the encoder is {backbone}")
    return model, model.to_bytes()


def _commit(out: Path, work: Path, features: np.ndarray, table: pd.DataFrame, encoder: Encoder,
            bits: int | None, hash_path: str | None, append: bool, info: dict) -> Path:
    if len(table) == 0:
        raise LookalikeError("no usable tiles: every tile was outside the source, no-data, or blank")
    table = table.copy()
    table["time"] = (pd.to_datetime(table["time"], utc=True) if "time" in table
                     else pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns, UTC]"))
    model, model_bytes = _hash_for(out, features, bits, hash_path, append, encoder.name)
    if append and (out / MANIFEST).exists():
        old = open_index(out).manifest
        if old.get("backbone", {}).get("weights_sha256") != encoder.describe()["weights_sha256"]:
            raise LookalikeError(f"{out} was built with another backbone or weights; cannot append")
    codes = model.encode(features)
    info = dict(info, backbone=encoder.describe(),
                hash=dict(method=model.method, bits=model.bits, meta=model.meta))
    write_index(out, codes, table, bits=model.bits, hash_model=model_bytes, info=info, append=append)
    shutil.rmtree(work, ignore_errors=True)
    return out


def index_rasters(sources: list[RasterSource], out: str | Path, *, size: int = 128, stride: int = 64,
                  gsd: float | None = None, zones: list[Zone] | None = None,
                  bbox: tuple[float, float, float, float] | None = None, bits: int | None = None,
                  hash_path: str | None = None, encoder: Encoder | None = None,
                  min_valid: float = 0.5, append: bool = False, progress: bool = True) -> Path:
    """Tile, encode and index rasters. ``gsd`` defaults to the first source's native resolution."""
    out = Path(out)
    if (out / MANIFEST).exists() and not append:
        raise LookalikeError(f"{out} already holds an index; use --append to add to it or choose another --out")
    encoder = encoder or Encoder()
    grid = TileGrid(size, stride, gsd or sources[0].native_gsd)
    key = dict(sources=[s.describe() for s in sources], grid=grid, zones=zones, bbox=bbox,
               backbone=encoder.describe(), min_valid=min_valid)
    work = _work_dir(out, key)

    def stream():
        for source in sources:
            for place, pixels in source.tiles(grid, zones=zones, bbox=bbox, min_valid=min_valid):
                yield tile_record(source, grid, place), pixels

    features, table = encode_chunks(stream(), encoder, work, desc="tiling+encoding", progress=progress)
    info = dict(kind="raster", tiling=dict(size=size, stride=stride, gsd=grid.gsd),
                sources={s.name: s.describe() for s in sources})
    return _commit(out, work, features, table, encoder, bits, hash_path, append, info)


def index_images(root: str | Path, labels_csv: str | Path, out: str | Path, *,
                 split: str | None = None, image_size: int = 224, bits: int | None = None,
                 hash_path: str | None = None, encoder: Encoder | None = None,
                 append: bool = False, source: str | None = None, progress: bool = True) -> Path:
    """Index a folder of labelled image chips (every CSV column is kept in the tile table)."""
    out, root = Path(out), Path(root)
    table = read_labels(root, labels_csv, split=split)
    encoder = encoder or Encoder(image_size=image_size)
    source = source or root.name
    records = table.assign(tile_id=table["path"], source=source, zone="")
    key = dict(root=str(root.resolve()), labels=str(Path(labels_csv).resolve()), split=split,
               backbone=encoder.describe())
    pairs = ((rec, load_image(root / rec["path"], image_size)) for rec in records.to_dict("records"))
    features, tiles = encode_chunks(pairs, encoder, _work_dir(out, key), total=len(records),
                                    desc="encoding images", progress=progress)
    info = dict(kind="images", sources={source: dict(root=str(root.resolve()), image_size=image_size)})
    return _commit(out, _work_dir(out, key), features, tiles, encoder, bits, hash_path, append, info)
