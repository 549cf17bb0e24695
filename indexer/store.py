"""The index on disk: packed codes, the tile table and a manifest that ties them together.

Layout of an index directory::

    manifest.json            the commit point: format, counts, models, file names + checksums
    codes-000003.npy         (N, bits/8) uint8, memory-mapped on load
    tiles-000003.arrow       one row per code, same order: an Arrow IPC file, memory-mapped on
                             load (``indexer.tile_table``; ``.parquet`` in earlier indexes, read
                             whole)
    columns-000003.arrow     the columns search filters read (zone, source, time, lon/lat),
                             memory-mapped on load
    ids-000003.npy           the tile ids' sorted 64-bit hashes and their rows: a tile id is
                             found by binary search (``indexer.tile_table.IdLookup``)
    rowsums-000003.npy       a 32-bit checksum of every table row (``indexer.row_checks``)
    cells-000003.npy         the tiles' lon/lat cell keys, sorted, and their rows: the tiles
                             near a point or in a box by binary search (``indexer.cells``)
    hash-000001.npz          the hash model that turned features into codes
    landmarks-000004.parquet optional: the landmark catalogue (``indexer.catalogue``)
    thumbs-000003.bin        optional: a JPEG thumbnail per tile, made at index time
                             (``indexer.thumbstore``)
    ann-000005.faiss         optional: an approximate-search graph or table over the codes
                             (``indexer.ann``; ``.usearch`` for usearch), with its method,
                             options and measured recall in the manifest's ``ann`` entry

Every write produces files of a new generation and then atomically replaces ``manifest.json``;
a crash at any point leaves either the old index or the new one, never a mix. Files of other
generations are removed after the manifest is replaced; a write that fails before that (a full
disk) removes the files it made. ``open_index`` verifies sizes and checksums and refuses anything
that does not match the manifest (xxh3_128 checksums; sha256 in earlier indexes): every file at
open except those a search does not read whole: the id lookup and the cell keys are verified
before their first use, and where the index has row checksums the tile table's rows are checked
as they are read (the whole file before a read of all of it); a reader that
opens the index while a writer commits opens the new generation. An open index keeps the
generation it opened (its codes and tile table are memory-mapped) while files of newer ones come
and go; ``Index.check_unchanged`` refuses to search codes that were truncated or rewritten in
place under it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.errors import CodeLengthError, IndexCorruptError, LookalikeError
from lookalike.fileio import (
    CHECKSUM,
    atomic_write_bytes,
    checksum_file,
    checksums_of,
    fsync_dir,
    save_npy,
    sha256_file,
)
from lookalike.indexer.ann import BinaryANN
from lookalike.indexer.cells import on_the_globe, write_cells
from lookalike.indexer.index import Index
from lookalike.indexer.row_checks import DeferredCheck, write_row_checksums
from lookalike.indexer.thumbstore import iter_thumbnails, write_thumbnails
from lookalike.indexer.tile_table import (
    TableChecks,
    TileBatches,
    open_table,
    read_parquet_table,
    write_filter_columns,
    write_id_lookup,
    write_table,
)

FORMAT_VERSION = 1
SHA256_MAX_BYTES = 1 << 26
MANIFEST = "manifest.json"
# the files an index writes itself; anything else in its folder is left alone
GENERATION_FILE = re.compile(
    r"(codes|tiles|columns|ids|rowsums|cells|hash|landmarks|ann|thumbs)-\d{6}\.(npy|parquet|arrow|npz|faiss|usearch|bin)"
)


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise IndexCorruptError(f"{path} is not an index directory (it does not exist)")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise IndexCorruptError(
            f"{path} has no {MANIFEST}: not an index, or an index whose first write did not finish"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{mpath} is not valid JSON ({exc}); the index is corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{mpath}: unsupported index format "
            f"{manifest.get('format_version') if isinstance(manifest, dict) else '?'}"
            f" (this version reads {FORMAT_VERSION})"
        )
    return manifest


def open_index(path: str | Path, verify: bool = True) -> Index:
    """Load an index; with ``verify`` every file's checksum is checked against the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    for _ in range(OPEN_ATTEMPTS):
        try:
            return _load(path, manifest, verify)
        except (IndexCorruptError, FileNotFoundError):
            # a writer may have committed a newer generation, removing the files of the one
            # this manifest names, while they were read: then open the newer one
            newer = read_manifest(path)
            if newer == manifest:
                raise
            manifest = newer
    return _load(path, manifest, verify)


OPEN_ATTEMPTS = 3


def _load(path: Path, manifest: dict, verify: bool) -> Index:
    files = manifest.get("files", {})
    for role in ("codes", "tiles"):
        if not isinstance(files, dict) or role not in files:
            raise IndexCorruptError(f"{path}/{MANIFEST} lists no {role} file")
    try:
        int(manifest["count"]), int(manifest["bits"])
        for entry in files.values():
            str(entry["name"]), int(entry["bytes"])
            if not checksums_of(entry):
                raise KeyError("checksum")
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexCorruptError(
            f"{path}/{MANIFEST} is incomplete (bad or missing entry {exc}); the index is corrupt"
        ) from None
    for role, entry in files.items():
        fpath = path / entry["name"]
        if not fpath.is_file():
            raise IndexCorruptError(f"{path}: {role} file {entry['name']} is missing")
        size = fpath.stat().st_size
        if size != entry["bytes"]:
            raise IndexCorruptError(
                f"{path}: {role} file {entry['name']} has {size} bytes, the "
                f"manifest says {entry['bytes']} (partial or altered file)"
            )
    deferred = {"ids", "cells"} | ({"tiles"} if "rowsums" in files else set())
    checks = {}
    if verify:
        _verify_checksums(path, {role: entry for role, entry in files.items() if role not in deferred})
        checks = {role: _deferred_check(path, files, role) for role in deferred if role in files}
    try:
        codes = np.load(path / files["codes"]["name"], mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise IndexCorruptError(f"{path}: codes file is unreadable ({exc})") from None
    n, bits = int(manifest["count"]), int(manifest["bits"])
    if codes.dtype != np.uint8 or codes.shape != (n, bits // 8):
        raise IndexCorruptError(
            f"{path}: codes have shape {codes.shape} {codes.dtype}, manifest says ({n}, {bits // 8}) uint8"
        )
    columns, ids = (path / files[role]["name"] if role in files else None for role in ("columns", "ids"))
    try:
        sums = path / files["rowsums"]["name"] if verify and "rowsums" in files else None
        tiles = open_table(
            path / files["tiles"]["name"],
            columns,
            ids,
            TableChecks(sums, checks.get("tiles"), checks.get("ids")),
        )
    except IndexCorruptError as exc:
        raise IndexCorruptError(f"{path}: the tiles file {exc}") from None
    if len(tiles) != n:
        raise IndexCorruptError(f"{path}: tile table has {len(tiles)} rows, manifest says {n}")
    landmarks = None
    if "landmarks" in files:
        landmarks = _read_table(path, files, "landmarks")
        rows = landmarks["row"].to_numpy() if "row" in landmarks else np.zeros(0, np.int64)
        if "row" not in landmarks or (len(rows) and (rows.min() < -1 or rows.max() >= n)):
            raise IndexCorruptError(f"{path}: the landmark catalogue points at tiles the index does not have")
    mapped = [
        role
        for role in ("codes", "tiles", "columns", "ids", "rowsums", "cells")
        if role in files and files[role]["name"].endswith((".npy", ".arrow"))
    ]
    return Index(
        path,
        manifest,
        codes,
        tiles,
        landmarks,
        stamps={role: _stamp(path / files[role]["name"]) for role in mapped},
        checks=checks,
    )


def _deferred_check(path: Path, files: dict, role: str) -> DeferredCheck:
    """The check of the ``role`` file against its manifest checksums, run on its first use."""
    return DeferredCheck(lambda: _verify_checksums(path, {role: files[role]}))


def _stamp(file: Path) -> tuple:
    st = os.stat(file)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _verify_checksums(path: Path, files: dict) -> None:
    """Check every file against its manifest checksums, the largest first and two at a time
    (the hashing releases the GIL): IndexCorruptError naming the first that fails."""
    from concurrent.futures import ThreadPoolExecutor

    def failed(entry: dict) -> str | None:
        for algorithm, digest in checksums_of(entry).items():
            if checksum_file(path / entry["name"], algorithm) != digest:
                return algorithm
        return None

    order = sorted(files.items(), key=lambda item: -int(item[1]["bytes"]))
    with ThreadPoolExecutor(max_workers=min(len(order), os.cpu_count() or 1) or 1) as pool:
        failures = list(pool.map(lambda item: failed(item[1]), order))
    for (role, entry), algorithm in zip(order, failures):
        if algorithm is not None:
            raise IndexCorruptError(f"{path}: {role} file {entry['name']} fails its {algorithm} checksum")


def _read_table(path: Path, files: dict, role: str) -> pd.DataFrame:
    """A Parquet table of the index; IndexCorruptError when the file is not one."""
    try:
        return read_parquet_table(path / files[role]["name"])
    except IndexCorruptError as exc:
        raise IndexCorruptError(f"{path}: the {role} file {exc}") from None


def _write_file(path: Path, name: str, writer) -> dict:
    tmp = path / f".{name}.tmp"
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path / name)
        fsync_dir(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    entry = {"name": name, "bytes": (path / name).stat().st_size, CHECKSUM: checksum_file(path / name)}
    if entry["bytes"] <= SHA256_MAX_BYTES:  # small files (the hash model) keep the identity they
        entry["sha256"] = sha256_file(path / name)  # had, by which collections compare code models
    return entry


@contextlib.contextmanager
def _generation(path: Path, generation: int):
    """Files of ``generation`` written inside are removed again when the block fails (before
    the manifest names them): a write that fails, on a full disk say, leaves the folder as it
    was instead of holding on to the space that ran out."""
    try:
        yield
    except BaseException:
        for f in path.glob(f"*-{generation:06d}.*"):
            if GENERATION_FILE.fullmatch(f.name):
                f.unlink(missing_ok=True)
        raise


@dataclass
class _Next:
    """The next generation of an index being written: all its codes and tiles, the manifest
    so far and, from the index appended to, what carries over (hash file, landmarks,
    thumbnails, approximate index)."""

    codes: np.ndarray
    tiles: pd.DataFrame | TileBatches
    manifest: dict
    generation: int
    hash_entry: dict | None = None
    landmarks: pd.DataFrame | None = None
    old_thumbs: Path | None = None
    ann: BinaryANN | None = None


def _check_rows(codes: np.ndarray, tiles: pd.DataFrame | TileBatches, bits: int) -> np.ndarray:
    """The new codes as contiguous bytes, after checking them against ``bits`` and ``tiles``
    and the new tile ids for repeats."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2 or codes.shape[1] * 8 != bits:
        raise CodeLengthError(f"codes of shape {codes.shape} are not {bits}-bit codes")
    if len(codes) != len(tiles):
        raise LookalikeError(f"{len(codes)} codes but {len(tiles)} tile rows")
    return codes


def _check_unique_ids(tiles: pd.DataFrame) -> None:
    """Reject new tiles that share a tile id."""
    if "tile_id" in tiles:
        repeated = tiles["tile_id"][tiles["tile_id"].duplicated()]
        if len(repeated):
            raise LookalikeError(
                f"{repeated.nunique()} tile id(s) occur more than once among the "
                f"new tiles, e.g. {repeated.iloc[0]}; tile ids must be unique "
                "(do two sources share one --name?)"
            )


def _next_of_existing(path: Path, codes: np.ndarray, tiles: pd.DataFrame, bits: int, info: dict) -> _Next:
    """The generation after the index at ``path`` with the new rows appended; ``sources`` in
    ``info`` are merged by name into the index's own."""
    old = open_index(path)
    if old.bits != bits:
        raise CodeLengthError(f"index {path} holds {old.bits}-bit codes; cannot append {bits}-bit codes")
    clash = set(tiles["tile_id"]) & set(old.tiles["tile_id"])
    if clash:
        raise LookalikeError(
            f"{len(clash)} tile id(s) are already in {path}, e.g. "
            f"{sorted(clash)[0]}; was this scene indexed before?"
        )
    codes = np.concatenate([np.asarray(old.codes), codes])
    tiles = pd.concat([old.tiles, tiles], ignore_index=True)
    manifest = dict(old.manifest)
    sources = dict(manifest.get("sources", {}))
    sources.update(info.pop("sources", {}))
    manifest.update(info, sources=sources)
    after = _Next(codes, tiles, manifest, int(manifest["generation"]) + 1, manifest["files"]["hash"])
    if old.landmarks is not None:  # appended tiles have no landmarks yet: keep the old ones
        after.landmarks = old.landmarks
    if "thumbs" in old.manifest["files"]:
        after.old_thumbs = path / old.manifest["files"]["thumbs"]["name"]
    after.ann = old.ann()
    if after.ann is not None:  # the graph grows with the codes; its recall is measured again later
        after.ann.add(codes[old.n :], progress=True)
        manifest["ann"] = dict(manifest["ann"], calibration=None)
    return after


def _first_generation(
    path: Path, codes: np.ndarray, tiles: pd.DataFrame | TileBatches, info: dict, hash_model: bytes | None
) -> _Next:
    """Generation 1 of a new index at ``path`` (its folder made), refusing to overwrite one."""
    if (path / MANIFEST).exists():
        raise LookalikeError(
            f"{path} already holds an index; use --append to add to it or choose another --out"
        )
    if hash_model is None:
        raise LookalikeError("a new index needs its hash model")
    path.mkdir(parents=True, exist_ok=True)
    return _Next(codes, tiles, dict(info, created=_now()), 1)


def _write_generation(
    path: Path, after: _Next, hash_model: bytes | None, thumbs: Iterable[bytes] | None
) -> dict:
    """Write the files of the generation ``after`` (the hash model only for a new index, the
    thumbnails only when every row has one); returns their manifest entries."""
    generation, codes, tiles, landmarks = after.generation, after.codes, after.tiles, after.landmarks
    hash_entry = after.hash_entry
    if hash_entry is None:
        hash_entry = _write_file(path, f"hash-{generation:06d}.npz", lambda p: p.write_bytes(hash_model))
    files = dict(
        codes=_write_file(path, f"codes-{generation:06d}.npy", lambda p: _save_npy(p, codes)),
        **_write_tile_files(path, generation, tiles),
        hash=hash_entry,
    )
    if landmarks is not None:
        files["landmarks"] = _write_file(
            path, f"landmarks-{generation:06d}.parquet", lambda p: landmarks.to_parquet(p, index=False)
        )
    if thumbs is not None and (generation == 1 or after.old_thumbs is not None):
        old_thumbs = after.old_thumbs
        every = itertools.chain(iter_thumbnails([old_thumbs]) if old_thumbs else (), thumbs)
        files["thumbs"] = _write_file(
            path,
            f"thumbs-{generation:06d}.bin",
            lambda p: _check_count(write_thumbnails(p, every), len(codes)),
        )
    if after.ann is not None:
        files["ann"] = _write_file(path, f"ann-{generation:06d}{after.ann.suffix}", after.ann.save)
    return files


def _write_tile_files(path: Path, generation: int, tiles: pd.DataFrame | TileBatches) -> dict:
    """Write the tile table, its tile-id lookup and its filter columns as files of
    ``generation``; refuses a table whose tile ids repeat (checked by hash as it is written: a
    large table is never held)."""
    written: dict = {}

    def table(p: Path) -> None:
        written["table"] = write_table(p, tiles)

    files = dict(tiles=_write_file(path, f"tiles-{generation:06d}.arrow", table))
    hashes, sums = written["table"].hashes, written["table"].sums
    files["rowsums"] = _write_file(
        path, f"rowsums-{generation:06d}.npy", lambda p: write_row_checksums(p, sums)
    )
    if hashes is not None:
        order = np.argsort(hashes, kind="stable")  # sorted once, for the check and the lookup
        _check_unique_hashes(path / files["tiles"]["name"], hashes, order)
        files["ids"] = _write_file(
            path, f"ids-{generation:06d}.npy", lambda p: write_id_lookup(p, hashes, order)
        )
    columns = written["table"].columns
    if columns is not None:
        files["columns"] = _write_file(
            path, f"columns-{generation:06d}.arrow", lambda p: write_filter_columns(p, columns)
        )
        if on_the_globe(columns.lon, columns.lat):
            reach = columns.reach or 0.0
            files["cells"] = _write_file(
                path, f"cells-{generation:06d}.npy", lambda p: write_cells(p, columns.lon, columns.lat, reach)
            )
    return files


def _check_unique_hashes(table_path: Path, hashes: np.ndarray, order: np.ndarray) -> None:
    """Refuse a written table whose tile ids repeat: rows of equal id hashes (``order`` sorts
    them) are read back and their ids compared (equal hashes of different ids pass)."""
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    if not len(same):
        return
    rows = np.unique(np.concatenate([order[same], order[same + 1]]))
    ids = open_table(table_path).take(rows)["tile_id"]
    _check_unique_ids(pd.DataFrame({"tile_id": ids}))


def write_index(
    path: str | Path,
    codes: np.ndarray,
    tiles: pd.DataFrame | TileBatches,
    *,
    bits: int,
    hash_model: bytes | None = None,
    info: dict | None = None,
    append: bool = False,
    thumbs: Iterable[bytes] | None = None,
) -> Path:
    """Create an index at ``path`` or, with ``append``, add rows to the one there.

    ``hash_model`` (the bytes of the model file) is required for a new index; appends keep the
    existing one, and their codes must have been made with it. ``info`` (backbone, tiling,
    sources, ...) is merged into the manifest; for appends ``sources`` are merged by name.
    ``thumbs``: a JPEG per new row, stored as the index's thumbnail file (an append keeps them
    only when the index had them too; otherwise thumbnails are rendered from the sources).
    ``tiles`` may be ``TileBatches`` for a new index too large to hold as one DataFrame: it is
    written batch by batch.
    """
    path = Path(path)
    codes = _check_rows(codes, tiles, bits)
    info = dict(info or {})
    if isinstance(tiles, pd.DataFrame):
        _check_unique_ids(tiles)
    if append and (path / MANIFEST).exists():
        if isinstance(tiles, TileBatches):
            raise LookalikeError("an append takes its new tiles as one table, not in batches")
        after = _next_of_existing(path, codes, tiles, bits, info)
    else:
        after = _first_generation(path, codes, tiles, info, hash_model)
    if isinstance(after.tiles, pd.DataFrame):
        after.tiles = after.tiles.reset_index(drop=True)
    manifest = after.manifest
    with _generation(path, after.generation):
        files = _write_generation(path, after, hash_model, thumbs)
        if after.ann is None:
            manifest.pop("ann", None)
        manifest.update(
            format_version=FORMAT_VERSION,
            generation=after.generation,
            bits=bits,
            count=len(after.codes),
            updated=_now(),
            files=files,
        )
        _replace_manifest(path, manifest)
    _remove_stale(path, manifest)
    return path


def _check_count(written: int, expected: int) -> None:
    if written != expected:
        raise LookalikeError(f"{written} thumbnails for {expected} tiles")


def update_tables(
    path: str | Path,
    *,
    tiles: pd.DataFrame | None = None,
    landmarks: pd.DataFrame | None = None,
    info: dict | None = None,
) -> Path:
    """Replace the tile table and/or the landmark catalogue of an index, codes untouched.

    The new tables become files of a new generation; the manifest is replaced last, so a crash
    leaves the previous index whole. ``tiles`` must keep the row count and tile ids.
    """
    path = Path(path)
    old = open_index(path)
    manifest = dict(old.manifest)
    files = dict(manifest["files"])
    generation = int(manifest["generation"]) + 1
    if tiles is not None:
        tiles = tiles.reset_index(drop=True)
        if len(tiles) != old.n or not tiles["tile_id"].equals(old.tiles["tile_id"]):
            raise LookalikeError("a replacement tile table must keep the index's tiles, in order")
    if landmarks is not None:
        landmarks = landmarks.reset_index(drop=True)
        rows = landmarks["row"].to_numpy() if "row" in landmarks else None
        if rows is None or (len(rows) and (rows.min() < -1 or rows.max() >= old.n)):
            raise LookalikeError("every landmark needs the row of its tile in the index (or -1)")
    with _generation(path, generation):
        if tiles is not None:
            files.update(_write_tile_files(path, generation, tiles))
        if landmarks is not None:
            files["landmarks"] = _write_file(
                path, f"landmarks-{generation:06d}.parquet", lambda p: landmarks.to_parquet(p, index=False)
            )
        manifest.update(info or {}, generation=generation, updated=_now(), files=files)
        _replace_manifest(path, manifest)
    _remove_stale(path, manifest)
    return path


def write_ann(path: str | Path, ann: BinaryANN | None, calibration: dict | None = None) -> Path:
    """Store ``ann`` (built over the index's codes, in order) with the index at ``path``, with
    its ``calibration`` (``indexer.ann.calibrate``) in the manifest; ``ann`` None removes it.
    A new generation, committed by the manifest like every write. Calling it again with the
    stored ``ann`` and a new calibration rewrites the file (its bytes are the same)."""
    path = Path(path)
    old = open_index(path, verify=False)
    manifest = dict(old.manifest)
    files = dict(manifest["files"])
    generation = int(manifest["generation"]) + 1
    if ann is not None and (ann.n != old.n or ann.bits != old.bits):
        raise LookalikeError(
            f"the approximate index holds {ann.n} codes of {ann.bits} bits; the index at "
            f"{path} has {old.n} of {old.bits}"
        )
    with _generation(path, generation):
        if ann is None:
            files.pop("ann", None)
            manifest.pop("ann", None)
        else:
            files["ann"] = _write_file(path, f"ann-{generation:06d}{ann.suffix}", ann.save)
            manifest["ann"] = dict(
                method=ann.method,
                params=ann.params,
                calibration=calibration,
                build_seconds=round(ann.build_seconds, 3),
            )
        manifest.update(generation=generation, updated=_now(), files=files)
        _replace_manifest(path, manifest)
    _remove_stale(path, manifest)
    return path


def _replace_manifest(path: Path, manifest: dict) -> None:
    """The commit: atomically replace the manifest."""
    atomic_write_bytes(path / MANIFEST, json.dumps(manifest, indent=2, default=str).encode())


def remove_stale(path: str | Path) -> None:
    """Remove what a write interrupted after its commit left: files of older generations and
    temporary files the manifest does not name."""
    path = Path(path)
    _remove_stale(path, read_manifest(path))


def _remove_stale(path: Path, manifest: dict) -> None:
    """Remove files no manifest refers to any more (older generations, temporary files)."""
    keep = {f["name"] for f in manifest["files"].values()} | {MANIFEST}
    for stale in path.iterdir():
        leftover = stale.name.startswith(".") and stale.name.endswith(".tmp")
        old_generation = GENERATION_FILE.fullmatch(stale.name) is not None
        if stale.is_file() and stale.name not in keep and (leftover or old_generation):
            stale.unlink()


def _save_npy(path: Path, array: np.ndarray) -> None:
    save_npy(path, array)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
