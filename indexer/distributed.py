"""Beyond one machine, on dask.distributed: a distributed build and a sharded, fanned-out search.

Build. The single-machine build (``indexer.build``) streams usable tiles in order, encodes them in
chunks of ``build.CHUNK`` and commits. Here the same plan runs on a cluster in two kinds of task:

* a *scan* per (source, zone): the worker opens the source itself, cuts that zone's tiles exactly
  as ``RasterSource.tiles`` does and keeps the pixels in its memory; only the tile records travel;
* an *encode* per chunk: the client, knowing every tile's place in the single-machine order,
  hands each chunk of ``CHUNK`` tiles (slices of one or more scans) to a worker, which encodes it
  with an encoder built once per worker process and returns the features.

Chunks are the same tiles, in the same batches, as on one machine, so the features and hence the
codes are identical (the CNN's float result depends on batch composition and thread count, which
is why chunks, not zones, are encoded). Finished chunks land in the same work folder files, so an
interrupted build resumes from them whichever way it is run again; the client commits through
``build.commit``. Scans run a bounded number ahead of the encoding, so pixels held on workers
stay bounded too.

Search. ``write_shards`` splits an index into N ordinary index directories of contiguous rows and
a checksummed ``shards.json``. ``ShardedSearch`` opens each shard once on a worker (memory-mapped,
cached in the worker process) and answers a query by fanning it out: every shard returns its own
top-k, the client merges them by (distance, global row), which is exactly the order one index
over all rows gives.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lookalike.errors import IndexCorruptError, LookalikeError
from lookalike.fileio import sha256_file
from lookalike.indexer import build
from lookalike.indexer.dask_tasks import cached_per_process, clean_errors, task_result, wait_any
from lookalike.indexer.defaults import DEFAULT_VIEWS
from lookalike.indexer.encoding import Encoder
from lookalike.indexer.image_folders import load_image
from lookalike.indexer.search import (
    Filters,
    Query,
    check_code_length,
    check_k,
    combine_examples,
    encode_image_like_index,
    filter_mask,
    ranked_rows,
    ranked_rows_index,
    tile_at,
)
from lookalike.indexer.shards import Shard, read_shards, shards_of_dirs
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.store import MANIFEST, Index, open_index
from lookalike.indexer.tiling import DEFAULT_LAT_RANGE, TileGrid, Zone, zones_for_bounds
from lookalike.models.defaults import DEFAULT_BACKBONE

# per worker process: built once, reused by every task that runs there
_ENCODERS: dict = {}
_SOURCES: dict = {}
_SHARDS: dict = {}
_SCAN_LOCK = threading.Lock()  # one scan at a time per process: each already uses every core


# ------------------------------------------------------------------ cluster
@contextmanager
def connect(scheduler: str, n_workers: int | None = None, timeout: str = "10s") -> Iterator:
    """A dask Client for ``scheduler`` (an address such as ``tcp://host:8786``), or for a
    LocalCluster of in-process workers when it is ``local`` (torch and numba release the GIL,
    so threads keep the cores busy without copying pixels between processes)."""
    from distributed import Client, LocalCluster

    if scheduler == "local":
        with (
            # no memory limit: in-process workers share one process, whose resident memory is
            # mostly pages of memory-mapped index files (reclaimable); counted against a limit
            # they paused the workers, and the searches with them, on a 100 M-tile index
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=False,
                dashboard_address=":0",
                memory_limit=0,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise LookalikeError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
    with client:
        yield client


def _collect_finished(encoding: dict, work: Path, done: dict, bar) -> None:
    """Save the chunks whose encoding finished (as a single-machine build would) and note them."""
    for fut in [f for f in encoding if f.done()]:
        i, table = encoding.pop(fut)
        features = task_result(fut)
        build.save_chunk(work, i, features, table)
        done[i] = features, table
        bar.update(len(table))


# ------------------------------------------------------------------ worker side
@dataclass(frozen=True)
class EncoderSpec:
    """How a worker builds its encoder (an ``indexer.encoding.Encoder``)."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    image_size: int | None = None
    batch_size: int = 64
    device: str | None = None
    runtime: str = "auto"
    views: int = DEFAULT_VIEWS


def worker_encoder(spec: EncoderSpec):
    """The encoder of this process for ``spec``, built on first use."""

    return cached_per_process(
        _ENCODERS,
        spec,
        lambda: Encoder(
            spec.backbone,
            spec.weights,
            image_size=spec.image_size,
            batch_size=spec.batch_size,
            device=spec.device,
            runtime=spec.runtime,
            views=spec.views,
        ),
    )


@clean_errors
def _describe_encoder(spec: EncoderSpec) -> dict:
    return worker_encoder(spec).describe()


def _worker_source(name: str, desc: dict) -> RasterSource:
    return cached_per_process(
        _SOURCES, (name, json.dumps(desc, sort_keys=True)), lambda: RasterSource.from_description(name, desc)
    )


@clean_errors
def _scan_unit(name: str, desc: dict, grid: TileGrid, zone: Zone, bbox, min_valid: float):
    """Records and pixels of one zone of one source, in ``RasterSource.tiles`` order."""
    source = _worker_source(name, desc)
    records, pixels = [], []
    for place, rgb in source.tiles(grid, zones=[zone], bbox=bbox, min_valid=min_valid):
        records.append(build.tile_record(source, grid, place))
        pixels.append(rgb)
    stack = np.stack(pixels) if pixels else np.zeros((0, grid.size, grid.size, 3), np.uint8)
    return records, stack


def _records_of(unit) -> list[dict]:
    return unit[0]


@clean_errors
def _encode_pieces(spec: EncoderSpec, bounds: list[tuple[int, int]], *units) -> np.ndarray:
    images = np.concatenate([unit[1][lo:hi] for unit, (lo, hi) in zip(units, bounds)])
    return worker_encoder(spec).features(images)


@clean_errors
def _encode_images(spec: EncoderSpec, root: str, paths: list[str], image_size: int) -> np.ndarray:
    images = np.stack([load_image(Path(root) / p, image_size) for p in paths])
    return worker_encoder(spec).features(images)


# ------------------------------------------------------------------ distributed build
def _zones_of(source: RasterSource, zones: list[Zone] | None, bbox) -> list[Zone]:
    """The zones ``RasterSource.tiles`` visits, in its order."""
    west, south, east, north = source.lonlat_bounds
    if bbox is not None:
        west, south = max(west, bbox[0]), max(south, bbox[1])
        east, north = min(east, bbox[2]), min(north, bbox[3])
    wanted = {z.label for z in zones} if zones else None
    return [
        z
        for z in zones_for_bounds(west, south, east, north, DEFAULT_LAT_RANGE)
        if wanted is None or z.label in wanted
    ]


@dataclass
class _Scans:
    """The scans of the (source, zone) units of a distributed raster build, submitted in the
    single-machine order, and the records that have come back: each unit's first global row."""

    client: object
    units: list[tuple[RasterSource, Zone]]
    scans: dict[int, object] = field(default_factory=dict)  # unit -> future of (records, pixels)
    record_futures: dict[int, object] = field(default_factory=dict)  # unit -> future of its records
    unit_rows: list[list[dict]] = field(default_factory=list)  # records of the units known so far
    starts: list[int] = field(default_factory=list)  # global row of each known unit's first tile
    known_rows: int = 0
    next_scan: int = 0
    first: int = 0  # first unit that may still hold rows of the next chunk

    @property
    def all_known(self) -> bool:
        """Whether the records of every unit have come back."""
        return len(self.unit_rows) == len(self.units)

    def release(self, consumed: int) -> None:
        """Drop the client's reference to the pixels of units whose rows are all planned
        (``consumed``: rows already handed to chunks)."""
        for u in [
            u
            for u in self.scans
            if u < len(self.unit_rows) and self.starts[u] + len(self.unit_rows[u]) <= consumed
        ]:
            del self.scans[u]

    def submit(self, grid: TileGrid, bbox, min_valid: float, limit: int, chunk: int, consumed: int) -> None:
        """Submit scans, bounded: at most ``limit`` in flight, and scanned rows not yet handed to
        a chunk under ``limit`` chunks."""
        while (
            self.next_scan < len(self.units)
            and len(self.record_futures) < limit
            and self.known_rows - consumed < limit * chunk
        ):
            source, zone = self.units[self.next_scan]
            fut = self.client.submit(
                _scan_unit, source.name, source.describe(), grid, zone, bbox, min_valid, pure=False
            )
            self.scans[self.next_scan] = fut
            self.record_futures[self.next_scan] = self.client.submit(_records_of, fut, pure=False)
            self.next_scan += 1

    def gather(self) -> None:
        """Take in the records of finished scans, in unit order."""
        while len(self.unit_rows) < self.next_scan and self.record_futures[len(self.unit_rows)].done():
            u = len(self.unit_rows)
            self.unit_rows.append(task_result(self.record_futures.pop(u)))
            self.starts.append(self.known_rows)
            self.known_rows += len(self.unit_rows[u])

    def pieces(self, lo: int, hi: int) -> tuple[list[tuple[int, int]], list, list[dict]]:
        """Global rows lo..hi as slices of the units' pixels, the futures of those scans, and
        the rows' records."""
        pieces, futures, records = [], [], []
        while self.starts[self.first] + len(self.unit_rows[self.first]) <= lo:
            self.first += 1
        for u in range(self.first, len(self.unit_rows)):
            if self.starts[u] >= hi:
                break
            a, b = max(lo, self.starts[u]), min(hi, self.starts[u] + len(self.unit_rows[u]))
            if a < b:
                pieces.append((a - self.starts[u], b - self.starts[u]))
                futures.append(self.scans[u])
                records.extend(self.unit_rows[u][a - self.starts[u] : b - self.starts[u]])
        return pieces, futures, records

    def awaited(self) -> list:
        """The future of the next unit's records, while one is awaited."""
        return [self.record_futures[u] for u in sorted(self.record_futures)[:1]]


def index_rasters_distributed(
    client,
    sources: list[RasterSource],
    out: str | Path,
    *,
    size: int = 128,
    stride: int = 64,
    gsd: float | None = None,
    zones: list[Zone] | None = None,
    bbox=None,
    bits: int | None = None,
    hash_path: str | None = None,
    encoder: EncoderSpec = EncoderSpec(),
    min_valid: float = 0.5,
    append: bool = False,
    shards: int | None = None,
    progress: bool = True,
    ahead: int | None = None,
) -> Path:
    """``build.index_rasters`` with tiling and encoding spread over the workers of ``client``.

    ``ahead`` bounds the scans and chunk encodings in flight (default: twice the workers).
    """
    out = Path(out)
    build.check_out(out, append, shards, leftovers=True)
    backbone = task_result(client.submit(_describe_encoder, encoder, pure=False))
    grid, work, info = build.raster_plan(
        sources,
        out,
        size=size,
        stride=stride,
        gsd=gsd,
        zones=zones,
        bbox=bbox,
        backbone=backbone,
        min_valid=min_valid,
    )
    if build.finished(out, work):
        return out
    build.check_out(out, append, shards)
    scans = _Scans(client, [(s, z) for s in sources for z in _zones_of(s, zones, bbox)])
    limit = ahead or max(2, 2 * len(client.scheduler_info()["workers"]))
    bar = tqdm(desc="tiling+encoding (dask)", unit="tile", disable=not progress, smoothing=0.05)
    done = _scan_and_encode(scans, grid, bbox, min_valid, encoder, work, limit, bar)
    bar.close()
    features, table = _joined(done, backbone)
    return build.commit(out, work, features, table, backbone, bits, hash_path, append, info, shards)


def _scan_and_encode(
    scans: _Scans, grid: TileGrid, bbox, min_valid: float, encoder: EncoderSpec, work: Path, limit: int, bar
) -> dict[int, tuple[np.ndarray, pd.DataFrame]]:
    """Features and tile table of every chunk (by chunk number), scanning units and encoding
    chunks on the workers with at most ``limit`` of each in flight."""
    client = scans.client
    chunk = build.CHUNK
    next_chunk = 0
    encoding: dict[object, tuple[int, pd.DataFrame]] = {}
    done: dict[int, tuple[np.ndarray, pd.DataFrame]] = {}

    def plan_chunk(i: int, lo: int, hi: int) -> None:
        """Chunk ``i`` = global rows lo..hi: reuse it from the work folder or submit it."""
        pieces, futures, records = scans.pieces(lo, hi)
        table = pd.DataFrame(records)
        finished = build.load_chunk(work, i, list(table["tile_id"]))
        if finished is not None:
            done[i] = finished
            bar.update(len(table))
            return
        encoding[client.submit(_encode_pieces, encoder, pieces, *futures, pure=False)] = (i, table)

    while True:
        consumed = next_chunk * chunk  # rows already handed to chunks
        scans.release(consumed)
        scans.submit(grid, bbox, min_valid, limit, chunk, consumed)
        scans.gather()
        known_rows, all_known = scans.known_rows, scans.all_known
        while len(encoding) < limit and (
            (next_chunk + 1) * chunk <= known_rows or (all_known and next_chunk * chunk < known_rows)
        ):
            plan_chunk(next_chunk, next_chunk * chunk, min(known_rows, (next_chunk + 1) * chunk))
            next_chunk += 1
        _collect_finished(encoding, work, done, bar)
        if all_known and next_chunk * chunk >= known_rows and not encoding:
            return done
        pending = list(encoding) + scans.awaited()
        if pending:
            wait_any(pending)


def _joined(
    done: dict[int, tuple[np.ndarray, pd.DataFrame]], backbone: dict
) -> tuple[np.ndarray, pd.DataFrame]:
    """The features and tile table of all chunks, in chunk order."""
    order = sorted(done)
    return build.join_chunks(
        [done[i][0] for i in order], [done[i][1] for i in order], int(backbone["features"])
    )


def index_images_distributed(
    client,
    root: str | Path,
    labels_csv: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    image_size: int = 224,
    bits: int | None = None,
    hash_path: str | None = None,
    encoder: EncoderSpec | None = None,
    append: bool = False,
    source: str | None = None,
    shards: int | None = None,
    progress: bool = True,
    body: str | None = None,
) -> Path:
    """``build.index_images`` with the chunks encoded on the workers of ``client``."""
    out, root = Path(out), Path(root)
    build.check_out(out, append, shards, leftovers=True)
    encoder = encoder or EncoderSpec(image_size=image_size)
    backbone = task_result(client.submit(_describe_encoder, encoder, pure=False))
    records, work, info = build.image_plan(
        root, labels_csv, out, split=split, image_size=image_size, backbone=backbone, source=source, body=body
    )
    if build.finished(out, work):
        return out
    build.check_out(out, append, shards)
    limit = max(2, 2 * len(client.scheduler_info()["workers"]))
    chunk = build.CHUNK
    todo = list(range(0, len(records), chunk))
    encoding: dict[object, tuple[int, pd.DataFrame]] = {}
    done: dict[int, tuple[np.ndarray, pd.DataFrame]] = {}
    bar = tqdm(total=len(records), desc="encoding images (dask)", unit="tile", disable=not progress)
    while todo or encoding:
        while todo and len(encoding) < limit:
            start = todo.pop(0)
            i, table = start // chunk, records.iloc[start : start + chunk].reset_index(drop=True)
            finished = build.load_chunk(work, i, list(table["tile_id"]))
            if finished is not None:
                done[i] = finished
                bar.update(len(table))
                continue
            fut = client.submit(
                _encode_images, encoder, str(root), list(table["path"]), image_size, pure=False
            )
            encoding[fut] = (i, table)
        if encoding:
            wait_any(list(encoding))
        _collect_finished(encoding, work, done, bar)
    bar.close()
    features, table = _joined(done, backbone)
    return build.commit(out, work, features, table, backbone, bits, hash_path, append, info, shards)


# ------------------------------------------------------------------ fan-out search
def _shard_index(path: str, manifest_sha256: str, verify: bool = True) -> Index:
    def load() -> Index:
        if sha256_file(Path(path) / MANIFEST) != manifest_sha256:
            raise IndexCorruptError(f"shard {path} was changed after its shard manifest was written")
        return open_index(path, verify=verify)

    index = cached_per_process(_SHARDS, (path, manifest_sha256), load)
    index.check_unchanged()
    return index


@clean_errors
def _load_shard(shard: Shard, verify: bool) -> tuple[int, int]:
    index = _shard_index(shard.path, shard.manifest_sha256, verify)
    return index.n, index.bits


@clean_errors
def _shard_top_k(shard: Shard, code: np.ndarray, k: int, filters: Filters | None, method: str = "exact"):
    index = _shard_index(shard.path, shard.manifest_sha256)
    mask = filter_mask(
        index.table, filters, getattr(index, "landmarks", None), index.filter_columns(), index.cells()
    )
    with _SCAN_LOCK:
        if method == "exact":
            rows, dist = ranked_rows(index.codes, code, k, mask)
        else:  # an approximate index per shard: the stored one, or one built on first use and kept
            rows, dist = ranked_rows_index(index, code, k, mask, method)
    return rows + shard.offset, dist, index.tile_rows(rows)


@clean_errors
def _shard_codes(shard: Shard, tile_ids: list[str]) -> dict[str, np.ndarray]:
    index = _shard_index(shard.path, shard.manifest_sha256)
    rows = [index.table.row_of(t) for t in tile_ids]  # looked up, never the whole table read
    return {t: np.asarray(index.codes[r]) for t, r in zip(tile_ids, rows) if r is not None}


@clean_errors
def _shard_under(shard: Shard, lon: float, lat: float):
    """(closeness, global row, code) of this shard's tile under the point, or None."""

    index = _shard_index(shard.path, shard.manifest_sha256)
    try:
        row = tile_at(index, lon, lat)
    except LookalikeError:
        return None
    centres = index.filter_columns()
    clat, clon = np.radians(centres.lat[row]), np.radians(centres.lon[row])
    plat, plon = np.radians(lat), np.radians(lon)
    closeness = np.sin(clat) * np.sin(plat) + np.cos(clat) * np.cos(plat) * np.cos(clon - plon)
    return float(closeness), row + shard.offset, np.asarray(index.codes[row])


def merge_top_k(parts: list[tuple[np.ndarray, np.ndarray, pd.DataFrame]], k: int) -> pd.DataFrame:
    """Global top-k from each shard's top-k: by distance, then global row."""
    rows = np.concatenate([p[0] for p in parts]).astype(np.int64)
    dist = np.concatenate([p[1] for p in parts])
    order = np.lexsort((rows, dist))[:k]
    tables = [p[2] for p in parts if len(p[2])]
    table = pd.concat(tables, ignore_index=True) if tables else parts[0][2]
    hits = table.iloc[order].reset_index(drop=True)
    for column, dtype in parts[0][2].dtypes.items():  # shards' categories differ; concat drops them
        if isinstance(dtype, pd.CategoricalDtype) and column in hits:
            hits[column] = hits[column].astype("category")
    hits.insert(0, "distance", dist[order].astype(np.int32))
    hits.insert(0, "rank", np.arange(1, len(order) + 1))
    hits.attrs["index_row"] = rows[order]
    return hits


class ShardedSearch:
    """Exact search over shards held by dask workers, merged as one index would rank them.

    ``shards``: a shard manifest, a folder holding one, or a list of index directories (their
    rows numbered in list order). Paths must be readable by the workers.
    """

    def __init__(self, client, shards, verify: bool = True):
        self.client = client
        if isinstance(shards, (list, tuple)):
            self.shards, self.bits = shards_of_dirs(list(shards))
        else:
            self.shards, self.bits = read_shards(shards)
        self.n = sum(s.count for s in self.shards)
        workers = sorted(client.scheduler_info()["workers"]) or [None]
        # each shard lives on one worker; another may take over (and load it) if that one is gone
        self.placement = [workers[i % len(workers)] for i in range(len(self.shards))]
        loaded = self._fan_out(_load_shard, verify)
        for shard, (n, bits) in zip(self.shards, loaded):
            if n != shard.count or bits != self.bits:
                raise IndexCorruptError(
                    f"shard {shard.path} holds {n} {bits}-bit codes, the shard "
                    f"manifest says {shard.count} {self.bits}-bit codes"
                )

    def __len__(self) -> int:
        return self.n

    def _fan_out(self, fn, *args) -> list:
        futures = [
            self.client.submit(
                fn, shard, *args, workers=[w] if w else None, allow_other_workers=True, pure=False
            )
            for shard, w in zip(self.shards, self.placement)
        ]
        return [task_result(f) for f in futures]

    def query_code(self, query: Query, encoder=None) -> np.ndarray:
        """The packed code a query stands for, looked up on the shards that hold its tiles."""
        query.check()
        if query.code is not None:
            return np.asarray(query.code, np.uint8).ravel()
        if query.image is not None:
            return encode_image_like_index(
                open_index(self.shards[0].path, verify=False), query.image, encoder
            )
        if query.lonlat is not None:
            found = [f for f in self._fan_out(_shard_under, *query.lonlat) if f is not None]
            if not found:
                raise LookalikeError(f"no indexed tile covers lon {query.lonlat[0]}, lat {query.lonlat[1]}")
            return max(found, key=lambda f: (f[0], -f[1]))[2]
        ids = [query.tile_id] if query.tile_id is not None else list(query.positives) + list(query.negatives)
        codes: dict[str, np.ndarray] = {}
        for part in self._fan_out(_shard_codes, ids):
            codes.update(part)
        missing = [t for t in ids if t not in codes]
        if missing:
            raise LookalikeError(f"tile {missing[0]!r} is not in the sharded index")
        if query.tile_id is not None:
            return codes[query.tile_id]
        neg = np.stack([codes[t] for t in query.negatives]) if query.negatives else None
        return combine_examples(np.stack([codes[t] for t in query.positives]), neg)

    def search(
        self,
        query: Query | np.ndarray,
        k: int = 1000,
        filters: Filters | None = None,
        encoder=None,
        method: str = "exact",
    ) -> pd.DataFrame:
        """Like ``indexer.search.search_index``: tile rows plus rank and distance; ``attrs['index_row']``
        holds global rows (shard offset + row in the shard). ``method`` is applied per shard;
        the merge is exact whenever each shard's top-k is."""
        check_k(k)
        code = check_code_length(
            self.query_code(query, encoder) if isinstance(query, Query) else query, self.bits
        )
        return merge_top_k(self._fan_out(_shard_top_k, code, k, filters, method), k)
