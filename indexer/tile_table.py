"""The tile table of an index on disk, read through a memory map rather than loaded.

An index of a hundred million tiles has a table of about 12 GB: more than a server can hold for
each index it serves, and far more than a search needs. So the table is written as an Arrow IPC
file (uncompressed record batches of ``BATCH_ROWS`` rows) and opened as a memory map: opening reads
its footer; a search reads the few pages of its k hit rows (``take``); the whole table becomes a
DataFrame only when asked for (``frame``, kept once made), as the explorer and the commands over
ordinary indexes do. Beside it, the compact columns that search filters read
(``indexer.filter_columns``) are one record batch of plain numpy-ready columns, mapped without a
copy: zone and source as small integer codes (their names in the schema's metadata), time as
int64 nanoseconds, lon/lat as float64. A third file finds a tile by its id in O(log n): a 64-bit
hash of every id, sorted, beside the row of each (``IdLookup``), instead of a dictionary of a
hundred million strings.

Arrow IPC rather than Parquet because a memory-mapped IPC batch is addressable in place: taking
1,000 scattered rows costs the pages they lie in, where Parquet must decode every row group that
holds a hit (``docs/scaling.md`` has the figures). Tables of indexes written before this format
(Parquet, no columns file) are read whole at open, as they always were.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lookalike.errors import IndexCorruptError, LookalikeError
from lookalike.fileio import (
    load_npy_for_random_reads,
    map_for_random_reads,
    reading_through,
    release_pages,
    save_npy,
)
from lookalike.indexer.filter_columns import FilterColumns
from lookalike.indexer.row_checks import (
    DeferredCheck,
    check_rows,
    id_hashes,
    read_row_checksums,
    row_checksums,
)

# A row taken maps about 32 KB of each column around it (the kernel's fault-around): after this
# many rows the map's pages are released, which keeps a server's share of a table of gigabytes
# near a gigabyte, at the cost of mapping them again (about 0.05 s for 1,000 rows)
RELEASE_ROWS = 2048
BATCH_ROWS = 1 << 22  # rows per record batch: a take costs about 0.5 ms per batch it reads from
_COLUMNS = ("zone_codes", "source_codes", "times", "lon", "lat")


@dataclass
class TileBatches:
    """A tile table given as consecutive DataFrames of ``n`` rows in all (for tables too large to
    hold at once). Categorical columns must have the same categories in every frame."""

    frames: Iterable[pd.DataFrame]
    n: int

    def __len__(self) -> int:
        return self.n


class TileTable:
    """The tile table of an index: its row count and columns, rows on demand, the whole table
    when asked for, and its filter columns."""

    n: int
    names: tuple[str, ...]

    def __len__(self) -> int:
        return self.n

    def __contains__(self, column: object) -> bool:
        return column in self.names

    def frame(self) -> pd.DataFrame:
        """The whole table as a DataFrame (made once and kept)."""
        raise NotImplementedError

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        """The given rows, in the order given, with a fresh 0..k-1 index."""
        raise NotImplementedError

    def filter_columns(self) -> FilterColumns:
        raise NotImplementedError

    def column_batches(self, names: tuple[str, ...]) -> Iterator[dict[str, np.ndarray]]:
        """The columns ``names``, a batch of rows at a time, in row order (the whole table held in
        memory is one batch)."""
        frame = self.frame()
        yield {name: frame[name].to_numpy() for name in names}

    def id_at(self, row: int) -> str:
        """The tile id of ``row``."""
        return str(self.frame()["tile_id"].iat[row])

    def row_of(self, tile_id: str) -> int | None:
        """The row of ``tile_id``, None when the table has no such tile: a dictionary of every
        id of the whole table, made on first use and kept."""
        if "_rows" not in self.__dict__:
            ids = self.frame()["tile_id"].astype(str).tolist() if "tile_id" in self else []
            self._rows = {tile: row for row, tile in enumerate(ids)}
        return self._rows.get(str(tile_id))


class FrameTable(TileTable):
    """A tile table held in memory (one just built, or read whole from an earlier index)."""

    def __init__(self, frame: pd.DataFrame):
        self._frame = frame
        self.n = len(frame)
        self.names = tuple(frame.columns)

    def frame(self) -> pd.DataFrame:
        return self._frame

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        return self._frame.iloc[np.asarray(rows, np.int64)].reset_index(drop=True)

    def filter_columns(self) -> FilterColumns:
        return FilterColumns.of(self._frame)


class MappedTable(TileTable):
    """A tile table read through a memory map of its Arrow IPC file, with its filter columns
    mapped from the columns file (None: made from the whole table on first use).

    ``checks`` (``TableChecks``) is how the table is verified when its file was not verified
    whole at open: each row read is checked against its stored checksum, and the whole file is
    verified before the first read of all of it."""

    def __init__(
        self,
        path: Path,
        columns_path: Path | None = None,
        ids_path: Path | None = None,
        checks: TableChecks | None = None,
    ):
        self.path = path
        checks = checks or TableChecks()
        self._ids = None if ids_path is None else IdLookup(ids_path, checks.ids)
        try:
            self._map = map_for_random_reads(path)  # a take reads scattered rows: no read-around
            self._reader = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(self._map)))
            # the batches' metadata, read once (their columns stay in the map until read)
            self._batches = [self._reader.get_batch(i) for i in range(self._reader.num_record_batches)]
            sizes = [batch.num_rows for batch in self._batches]
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise IndexCorruptError(f"{path} is not a readable tile table ({exc})") from None
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.n = int(self._starts[-1])
        if self._ids is not None and len(self._ids.hashes) != self.n:
            raise IndexCorruptError(
                f"{ids_path} holds {len(self._ids.hashes)} tile ids, the table {self.n} rows"
            )
        self.names = tuple(self._reader.schema.names)
        self._columns_path = columns_path
        self._frame: pd.DataFrame | None = None
        self._whole_check = checks.whole
        self._taken = 0  # rows taken since the map's pages were last released
        self._sums = None if checks.sums is None else read_row_checksums(checks.sums, self.n)
        if checks.sums is not None and self._sums is None and checks.whole is not None:
            checks.whole()  # row checksums of another hash than this version's: verify it all now

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._check_whole()
            with reading_through(self._map):
                self._frame = _to_pandas(self._reader.read_all())
        return self._frame

    def _check_whole(self) -> None:
        if self._whole_check is not None:
            self._whole_check()

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"rows outside the table of {self.n} tiles")
        batch = np.searchsorted(self._starts, rows, side="right") - 1
        pieces, order = [], []
        for b in np.unique(batch):
            picked = np.flatnonzero(batch == b)
            local = pa.array(rows[picked] - self._starts[b])
            pieces.append(self._batches[b].take(local))
            order.append(picked)
        table = pa.Table.from_batches(pieces, schema=self._reader.schema)
        if order:  # back to the order asked for
            table = table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
        frame = self._with_categories(table)  # copies: the rows no longer need the map's pages
        self._taken += len(rows)
        if self._taken >= RELEASE_ROWS:
            self._taken = 0
            release_pages(self._map)
        whole = self._whole_check is not None and self._whole_check.passed
        if self._sums is not None and self._frame is None and not whole:
            check_rows(frame, rows, self._sums, self.path)
        return frame

    def _with_categories(self, table: pa.Table) -> pd.DataFrame:
        """``table`` as a DataFrame, its dictionary columns made categorical with the categories
        made once per column: pyarrow would turn the whole dictionary (tens of thousands of source
        names in a large index) into strings again for every take."""
        dictionaries = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
        frame = _to_pandas(table.drop_columns(dictionaries))
        for name in dictionaries:
            indices = table.column(name).combine_chunks().indices
            codes = indices.fill_null(-1).to_numpy(zero_copy_only=False)
            frame[name] = pd.Categorical.from_codes(codes, dtype=self._categories(name))
        return frame[list(self.names)]

    def _categories(self, name: str) -> pd.CategoricalDtype:
        cache = self.__dict__.setdefault("_dtypes", {})
        if name not in cache:  # an empty slice of a batch keeps the column's dictionary
            first = [self._batches[0].slice(0, 0)] if self._batches else []
            cache[name] = _to_pandas(pa.Table.from_batches(first, schema=self._reader.schema))[name].dtype
        return cache[name]

    def filter_columns(self) -> FilterColumns:
        if self._columns_path is None:
            return FilterColumns.of(self.frame())
        return read_filter_columns(self._columns_path, self.n)

    def row_of(self, tile_id: str) -> int | None:
        """A dictionary lookup once the whole table is in memory (or without an id lookup file);
        otherwise a binary search of the id hashes and a read of the candidates' ids (about
        50 us: a caller looking up a page of hits one by one should not pay a take for each)."""
        if self._ids is None or self._frame is not None:
            return TileTable.row_of(self, tile_id)
        candidates = self._ids.candidates(str(tile_id))  # from the verified lookup
        for row in candidates:
            if self._stored_id(int(row)) == str(tile_id):  # confirms the row the lookup found
                return int(row)
        if len(candidates) and self._sums is not None:  # a mismatch may be a damaged id: say so
            self.take(candidates)
        return None

    def column_batches(self, names: tuple[str, ...]) -> Iterator[dict[str, np.ndarray]]:
        self._check_whole()
        for batch in self._batches:  # numpy views of the map where the column has no nulls
            with reading_through(self._map):
                yield {name: batch.column(name).to_numpy(zero_copy_only=False) for name in names}

    def id_at(self, row: int) -> str:
        if self._frame is not None:
            return TileTable.id_at(self, row)
        return self._id_at(row)

    def _id_at(self, row: int) -> str:
        if not 0 <= row < self.n:
            raise IndexError(f"row {row} is outside the table of {self.n} tiles")
        if self._sums is not None:  # the id of a whole row, checked
            return str(self.take(np.array([row], np.int64))["tile_id"].iat[0])
        return self._stored_id(row)

    def _stored_id(self, row: int) -> str:
        """The id stored at ``row``, read alone (not checked: for confirming a row found by id)."""
        batch = int(np.searchsorted(self._starts, row, side="right") - 1)
        return str(self._batches[batch].column("tile_id")[row - int(self._starts[batch])].as_py())


@dataclass(frozen=True)
class TableChecks:
    """How a mapped table whose files were not verified at open is verified as it is read:
    ``sums``, its row-checksum file (``indexer.row_checks``; verified at open); ``whole``,
    verifies the table file whole (before a read of all of it); ``ids``, verifies the id lookup
    file (before its first lookup). None: nothing left to verify."""

    sums: Path | None = None
    whole: DeferredCheck | None = None
    ids: DeferredCheck | None = None


class IdLookup:
    """The rows of a tile id from the sorted hashes of all ids (``write_id_lookup``), read through
    a memory map: a binary search touches about log2(n) pages. The hash is pandas' (SipHash with
    pandas' fixed key); a lookup file made by another hash is refused rather than misread."""

    def __init__(self, path: Path, check: DeferredCheck | None = None):
        self._check = check
        try:
            table = load_npy_for_random_reads(path)
        except (ValueError, OSError) as exc:
            raise IndexCorruptError(f"{path} is not a readable tile-id lookup ({exc})") from None
        if table.ndim != 2 or table.shape[0] != 2 or table.shape[1] < 1 or table.dtype != np.uint64:
            raise IndexCorruptError(
                f"{path}: a tile-id lookup is 2 rows of uint64, not {table.shape} {table.dtype}"
            )
        n = table.shape[1] - 1
        self.hashes, self.rows = table[0, :n], table[1, :n]
        if table[0, n] != _PROBE_HASH:  # the hash of a known string, stored after the sorted ones
            raise IndexCorruptError(f"{path} was made with another hash of tile ids than this version's")

    def candidates(self, tile_id: str) -> np.ndarray:
        """Rows whose id has the hash of ``tile_id`` (almost always one, or none)."""
        if self._check is not None:
            self._check()
        h = id_hashes([tile_id])[0]
        lo, hi = np.searchsorted(self.hashes, h, "left"), np.searchsorted(self.hashes, h, "right")
        return np.asarray(self.rows[lo:hi], np.int64)


_PROBE = "lookalike tile id"
_PROBE_HASH = id_hashes([_PROBE])[0]


def write_id_lookup(path: Path, hashes: np.ndarray, order: np.ndarray) -> None:
    """Write the lookup of tile ids by their ``hashes`` (one per row, in row order; ``order``
    sorts them): the hashes sorted and the row of each, then the hash of a known string saying
    which hash made them."""
    table = np.empty((2, len(hashes) + 1), np.uint64)
    table[0, :-1], table[1, :-1] = hashes[order], order
    table[:, -1] = _PROBE_HASH
    save_npy(path, table)


def open_table(
    path: Path,
    columns_path: Path | None = None,
    ids_path: Path | None = None,
    checks: TableChecks | None = None,
) -> TileTable:
    """The tile table file at ``path``: Arrow IPC is mapped, Parquet (earlier indexes) read whole."""
    if path.suffix == ".arrow":
        return MappedTable(path, columns_path, ids_path, checks)
    return FrameTable(read_parquet_table(path))


def read_parquet_table(path: Path) -> pd.DataFrame:
    """A Parquet table of an index, read whole; IndexCorruptError when the file is not one."""
    from pyarrow.lib import ArrowException

    try:
        table = pd.read_parquet(path)
    except (ValueError, ArrowException) as exc:
        raise IndexCorruptError(f"{path} is not a readable table ({exc})") from None
    return _one_chunk(table)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as ``pd.read_parquet`` gives it: strings in pandas' default string dtype (the
    NaN-missing ``str`` of pandas 3, object before), one chunk per column."""
    default = pd.Series([""]).dtype
    if isinstance(default, pd.StringDtype):
        strings = {pa.string(): default, pa.large_string(): default, pa.string_view(): default}
        return _one_chunk(table.to_pandas(types_mapper=strings.get))
    return _one_chunk(table.to_pandas())


def _one_chunk(table: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed columns (strings) joined into one chunk each. Tables are read in batches;
    picking the k hit rows from a column of many chunks costs a pass over all of them on every
    search (13 ms at 10 M tiles), from one chunk well under a millisecond."""
    for column in table.columns:
        values = table[column].array
        chunked = getattr(values, "_pa_array", None)
        if chunked is not None and chunked.num_chunks > 1:
            keep = dict(dtype=values.dtype) if isinstance(values.dtype, pd.StringDtype) else {}  # NaN or NA
            joined = type(values)(chunked.combine_chunks(), **keep)
            table[column] = pd.Series(joined, index=table.index, name=column)
    return table


# ------------------------------------------------------------------ writing
@dataclass
class WrittenTable:
    """What ``write_table`` learnt of the rows it wrote: their filter columns (None for a table
    without lon/lat), the hash of each tile id (``id_hashes``; None for a table without ids) and
    each row's checksum (``indexer.row_checks``)."""

    columns: FilterColumns | None
    hashes: np.ndarray | None
    sums: np.ndarray


def write_table(path: Path, tiles: pd.DataFrame | TileBatches) -> WrittenTable:
    """Write ``tiles`` as an Arrow IPC file at ``path``, batch by batch. Writes go through
    Python's ``open`` so a full disk raises OSError."""
    frames = _frames(tiles)
    parts, hashes, sums = [], [], []
    writer, schema = None, None
    with open(path, "wb") as fh:
        for frame in frames:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pa.ipc.new_file(fh, schema)
            elif not table.schema.equals(schema):
                raise LookalikeError("the tile table's batches do not share one schema")
            try:
                for batch in table.to_batches(max_chunksize=BATCH_ROWS):
                    writer.write_batch(batch)
            except pa.ArrowInvalid as exc:  # another dictionary for a categorical column
                raise LookalikeError(f"the tile table's batches do not make one table ({exc})") from None
            parts.append(FilterColumns.of(frame) if {"lon", "lat"} <= set(frame.columns) else None)
            ids = None
            if "tile_id" in frame:
                ids = id_hashes(frame["tile_id"].astype(str).to_numpy(object))
                hashes.append(ids)
            sums.append(_written_checksums(table, ids))
        if writer is None:
            raise LookalikeError("the tile table has no columns")
        writer.close()
    written = sum(p.n for p in parts) if None not in parts else len(tiles)
    if written != len(tiles):
        raise LookalikeError(f"the tile table's batches hold {written} rows, not the {len(tiles)} announced")
    columns = FilterColumns.concat(parts) if None not in parts else None
    return WrittenTable(columns, np.concatenate(hashes) if hashes else None, np.concatenate(sums))


def _written_checksums(table: pa.Table, ids: np.ndarray | None) -> np.ndarray:
    """The row checksums of ``table`` as its rows will be read back (its values through
    ``_to_pandas``, as ``MappedTable.take`` converts them; the ids by their hashes)."""
    values = _to_pandas(table.drop_columns([c for c in ("tile_id",) if c in table.column_names]))
    return row_checksums(values, ids)


def _frames(tiles: pd.DataFrame | TileBatches) -> Iterator[pd.DataFrame]:
    """The table as frames; a table with no rows as one empty frame (its schema is still written)."""
    if isinstance(tiles, TileBatches):
        yield from tiles.frames
    else:
        yield tiles.reset_index(drop=True)


def write_filter_columns(path: Path, columns: FilterColumns) -> None:
    """Write ``columns`` as one Arrow record batch (numpy views of it come back without a copy)."""
    arrays, names = [], []
    for name in _COLUMNS:
        values = getattr(columns, name)
        if values is not None:
            arrays.append(pa.array(values))
            names.append(name)
    meta = dict(
        n=columns.n,
        zone_names=list(columns.zone_names),
        source_names=list(columns.source_names),
        footprint_reach=columns.reach,
    )
    batch = pa.RecordBatch.from_arrays(arrays, names=names).replace_schema_metadata(
        {"lookalike": json.dumps(meta)}
    )
    with open(path, "wb") as fh, pa.ipc.new_file(fh, batch.schema) as writer:
        writer.write_batch(batch)


def read_filter_columns(path: Path, n: int) -> FilterColumns:
    """The filter columns written by ``write_filter_columns``, as read-only views of a memory map."""
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        meta = json.loads(reader.schema.metadata[b"lookalike"])
        batch = reader.get_batch(0)
        arrays = {name: batch.column(name).to_numpy(zero_copy_only=True) for name in batch.schema.names}
    except (pa.ArrowException, OSError, KeyError, TypeError, ValueError) as exc:
        raise IndexCorruptError(f"{path} is not a readable filter-column file ({exc})") from None
    if meta.get("n") != n or any(len(a) != n for a in arrays.values()) or not {"lon", "lat"} <= set(arrays):
        raise IndexCorruptError(f"{path}: the filter columns do not match the table's {n} rows")
    reach = meta.get("footprint_reach")
    if reach is not None and not (isinstance(reach, (int, float)) and 0 <= reach <= math.pi):
        raise IndexCorruptError(f"{path}: the footprint reach {reach!r} is not an angle")
    return FilterColumns(
        n,
        arrays.get("zone_codes"),
        tuple(meta["zone_names"]),
        arrays.get("source_codes"),
        tuple(meta["source_names"]),
        arrays.get("times"),
        arrays["lon"],
        arrays["lat"],
        meta.get("footprint_reach"),
    )
