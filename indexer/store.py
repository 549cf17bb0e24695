"""The index on disk: packed codes, the tile table and a manifest that ties them together.

Layout of an index directory::

    manifest.json            the commit point: format, counts, models, file names + sha256
    codes-000003.npy         (N, bits/8) uint8, memory-mapped on load
    tiles-000003.parquet     one row per code, same order
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
that does not match the manifest; a reader that opens the index while a writer commits opens the
new generation. An open index keeps the generation it opened (its codes are memory-mapped, the
tables in memory) while files of newer ones come and go; ``Index.check_unchanged`` refuses to
search codes that were truncated or rewritten in place under it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.errors import CodeLengthError, IndexCorruptError, LookalikeError
from lookalike.fileio import atomic_write_bytes, fsync_dir, save_npy, sha256_file
from lookalike.indexer.ann import BinaryANN, load_ann
from lookalike.indexer.filter_columns import FilterColumns
from lookalike.indexer.thumbstore import ThumbnailFile, iter_thumbnails, write_thumbnails

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# the files an index writes itself; anything else in its folder is left alone
GENERATION_FILE = re.compile(
    r"(codes|tiles|hash|landmarks|ann|thumbs)-\d{6}\.(npy|parquet|npz|faiss|usearch|bin)"
)


@dataclass
class Index:
    """A loaded, read-only index: ``codes`` is a memory map, ``tiles`` a DataFrame, and
    ``landmarks`` the landmark catalogue (None when the index has none)."""

    path: Path
    manifest: dict
    codes: np.ndarray
    tiles: pd.DataFrame
    landmarks: pd.DataFrame | None = None
    # (device, inode, size, mtime) of the codes file when it was mapped
    codes_stamp: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def bits(self) -> int:
        return int(self.manifest["bits"])

    @property
    def n(self) -> int:
        return int(self.manifest["count"])

    @property
    def hash_model_path(self) -> Path | None:
        name = self.manifest["files"].get("hash")
        return self.path / name["name"] if name else None

    @property
    def views(self) -> int:
        """Rotations/flips each tile's feature averaged over (indexes from before views: 1)."""
        backbone = self.manifest.get("backbone")
        views = backbone.get("views", 1) if isinstance(backbone, dict) else 1
        if not isinstance(views, int) or isinstance(views, bool) or views < 1:
            raise IndexCorruptError(f"{self.path}: the manifest's backbone views {views!r} is not a count")
        return views

    def __len__(self) -> int:
        return self.n

    @property
    def ann_info(self) -> dict | None:
        """The manifest's ``ann`` entry (method, params, calibration), None without one."""
        return self.manifest.get("ann") if "ann" in self.manifest.get("files", {}) else None

    def thumbnail(self, row: int) -> bytes | None:
        """The JPEG thumbnail of ``row`` made at index time; None for indexes without them."""
        entry = self.manifest["files"].get("thumbs")
        if entry is None:
            return None
        if "_thumbs" not in self.__dict__:
            self.__dict__["_thumbs"] = ThumbnailFile(self.path / entry["name"], expected=self.n)
        return self.__dict__["_thumbs"][row]

    def ann(self) -> BinaryANN | None:
        """The approximate index stored with this index, loaded on first use and kept."""
        info = self.ann_info
        if info is None:
            return None
        if "_ann" not in self.__dict__:
            name = self.manifest["files"]["ann"]["name"]
            if not (self.path / name).is_file():
                raise IndexCorruptError(
                    f"{self.path}: the approximate index {name} of the generation this "
                    "index was opened at is gone (a newer one was written); open it again"
                )
            self.__dict__["_ann"] = load_ann(self.path / name, info["method"], self.codes, info["params"])
        return self.__dict__["_ann"]

    def check_unchanged(self) -> None:
        """Refuse to read codes whose file was truncated or rewritten in place since the index
        was opened: a scan over a truncated memory map dies of SIGBUS, one over rewritten bytes
        answers from other codes. A file replaced or removed (as a newer generation does) is
        fine: the map keeps the file that was opened. Costs one ``stat``."""
        if self.codes_stamp is None:
            return
        name = self.manifest["files"]["codes"]["name"]
        try:
            st = os.stat(self.path / name)
        except FileNotFoundError:
            return
        device, inode, size, mtime = self.codes_stamp
        if (st.st_dev, st.st_ino) == (device, inode) and (st.st_size, st.st_mtime_ns) != (size, mtime):
            raise IndexCorruptError(
                f"{self.path}: the codes file {name} was changed on disk (truncated "
                "or rewritten in place) after the index was opened; open it again"
            )

    def row_of(self, tile_id: str) -> int:
        """The row of ``tile_id`` (ids are unique; a dictionary lookup, built on first use and kept)."""
        rows = self.cached(
            "rows", lambda: {tile: row for row, tile in enumerate(self.tiles["tile_id"].astype(str).tolist())}
        )
        row = rows.get(str(tile_id))
        if row is None:
            raise LookalikeError(f"tile {tile_id!r} is not in the index {self.path}")
        return row

    def cached(self, key: str, make):
        """``make()``, a value derived from this (read-only) index, made once and kept."""
        cache = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def filter_columns(self) -> FilterColumns:
        """The compact columns search filters read (``indexer.filter_columns``), made once."""
        return self.cached("filter_columns", lambda: FilterColumns.of(self.tiles))

    def column(self, name: str, dtype=np.float64) -> np.ndarray:
        """A column of the tile table as a read-only numpy array, converted once and kept (the
        table's Arrow columns cost a conversion at every read)."""

        def make() -> np.ndarray:
            array = self.tiles[name].to_numpy(dtype)
            array.flags.writeable = False
            return array

        return self.cached(f"column:{name}:{np.dtype(dtype).str}", make)


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
    """Load an index; with ``verify`` every file's sha256 is checked against the manifest."""
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
            str(entry["name"]), int(entry["bytes"]), str(entry["sha256"])
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
        if verify and sha256_file(fpath) != entry["sha256"]:
            raise IndexCorruptError(f"{path}: {role} file {entry['name']} fails its sha256 check")
    try:
        codes = np.load(path / files["codes"]["name"], mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise IndexCorruptError(f"{path}: codes file is unreadable ({exc})") from None
    st = os.stat(path / files["codes"]["name"])
    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    n, bits = int(manifest["count"]), int(manifest["bits"])
    if codes.dtype != np.uint8 or codes.shape != (n, bits // 8):
        raise IndexCorruptError(
            f"{path}: codes have shape {codes.shape} {codes.dtype}, manifest says ({n}, {bits // 8}) uint8"
        )
    tiles = _read_table(path, files, "tiles")
    if len(tiles) != n:
        raise IndexCorruptError(f"{path}: tile table has {len(tiles)} rows, manifest says {n}")
    landmarks = None
    if "landmarks" in files:
        landmarks = _read_table(path, files, "landmarks")
        rows = landmarks["row"].to_numpy() if "row" in landmarks else np.zeros(0, np.int64)
        if "row" not in landmarks or (len(rows) and (rows.min() < -1 or rows.max() >= n)):
            raise IndexCorruptError(f"{path}: the landmark catalogue points at tiles the index does not have")
    return Index(path, manifest, codes, tiles, landmarks, codes_stamp=stamp)


def _read_table(path: Path, files: dict, role: str) -> pd.DataFrame:
    """A Parquet table of the index; IndexCorruptError when the file is not one."""
    from pyarrow.lib import ArrowException

    try:
        table = pd.read_parquet(path / files[role]["name"])
    except (ValueError, ArrowException) as exc:
        raise IndexCorruptError(
            f"{path}: the {role} file {files[role]['name']} is not a readable table ({exc})"
        ) from None
    return _one_chunk(table)


def _one_chunk(table: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed columns (strings) joined into one chunk each. Parquet is read in row groups;
    picking the k hit rows from a column of many chunks costs a pass over all of them on every
    search (13 ms at 10 M tiles), from one chunk well under a millisecond."""
    for column in table.columns:
        values = table[column].array
        chunked = getattr(values, "_pa_array", None)
        if chunked is not None and chunked.num_chunks > 1:
            table[column] = pd.Series(type(values)(chunked.combine_chunks()), index=table.index, name=column)
    return table


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
    return dict(name=name, bytes=(path / name).stat().st_size, sha256=sha256_file(path / name))


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
    tiles: pd.DataFrame
    manifest: dict
    generation: int
    hash_entry: dict | None = None
    landmarks: pd.DataFrame | None = None
    old_thumbs: Path | None = None
    ann: BinaryANN | None = None


def _check_rows(codes: np.ndarray, tiles: pd.DataFrame, bits: int) -> np.ndarray:
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
    path: Path, codes: np.ndarray, tiles: pd.DataFrame, info: dict, hash_model: bytes | None
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
        tiles=_write_file(
            path, f"tiles-{generation:06d}.parquet", lambda p: tiles.to_parquet(p, index=False)
        ),
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


def write_index(
    path: str | Path,
    codes: np.ndarray,
    tiles: pd.DataFrame,
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
    """
    path = Path(path)
    codes = _check_rows(codes, tiles, bits)
    info = dict(info or {})
    _check_unique_ids(tiles)
    if append and (path / MANIFEST).exists():
        after = _next_of_existing(path, codes, tiles, bits, info)
    else:
        after = _first_generation(path, codes, tiles, info, hash_model)
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
            files["tiles"] = _write_file(
                path, f"tiles-{generation:06d}.parquet", lambda p: tiles.to_parquet(p, index=False)
            )
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
