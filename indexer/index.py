"""A loaded, read-only index (``indexer.store.open_index`` makes one): its codes, tile table,
landmark catalogue and what is derived from them once and kept."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.errors import IndexCorruptError, LookalikeError
from lookalike.indexer.ann import BinaryANN, load_ann
from lookalike.indexer.cells import Cells
from lookalike.indexer.filter_columns import FilterColumns
from lookalike.indexer.row_checks import DeferredCheck
from lookalike.indexer.thumbstore import ThumbnailFile
from lookalike.indexer.tile_table import FrameTable, TileTable

SUMMARY_ROWS = 1_000_000  # rows ``Index.sample`` reads of a larger table
SAMPLE_RUNS = 256


@dataclass
class Index:
    """A loaded, read-only index: ``codes`` is a memory map, ``table`` the tile table (mapped from
    disk; a DataFrame given here is held as it is), and ``landmarks`` the landmark catalogue (None
    when the index has none). ``tiles`` is the whole table as a DataFrame, read on first use;
    a search reads only its hit rows (``tile_rows``)."""

    path: Path
    manifest: dict
    codes: np.ndarray
    table: TileTable | pd.DataFrame
    landmarks: pd.DataFrame | None = None
    # role -> (device, inode, size, mtime) of each memory-mapped file when it was mapped
    stamps: dict[str, tuple] = field(default_factory=dict, repr=False, compare=False)
    # role -> the check that verifies a file not verified at open, before its first use
    checks: dict[str, DeferredCheck] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.table, pd.DataFrame):
            self.table = FrameTable(self.table)

    @property
    def tiles(self) -> pd.DataFrame:
        """The whole tile table (read from disk on first use, then kept)."""
        return self.table.frame()

    def tile_rows(self, rows: np.ndarray) -> pd.DataFrame:
        """The tile rows ``rows``, in that order, with a fresh index; reads only those rows."""
        return self.table.take(rows)

    def tile(self, row: int) -> pd.Series:
        """The tile row ``row`` (reads only that row)."""
        return self.tile_rows(np.array([row], np.int64)).iloc[0]

    def tile_id_at(self, row: int) -> str:
        """The tile id of ``row`` (reads only that id)."""
        return self.table.id_at(int(row))

    @property
    def large(self) -> bool:
        """More tiles than ``SUMMARY_ROWS``: summaries come from samples and filter columns, never
        from the whole table."""
        return self.n > SUMMARY_ROWS

    def sample(self) -> pd.DataFrame:
        """The whole table, or for a ``large`` index about ``SUMMARY_ROWS`` rows of it, without
        ids: runs of rows spread evenly over the table (runs, so a few pages of the table file are
        read, not all of them), and the rows of the extreme centres, so the sample's lon/lat
        bounds are the table's. Enough for summaries: a map's first window, a density grid."""
        if not self.large:
            return self.tiles
        limit = SUMMARY_ROWS

        def make() -> pd.DataFrame:
            count = min(SAMPLE_RUNS, limit)
            size = limit // count
            starts = np.linspace(0, self.n - size, count).astype(np.int64)
            runs = (starts[:, None] + np.arange(size)).ravel()
            rows = self.tile_rows(np.unique(np.concatenate([runs, self.filter_columns().extreme_rows()])))
            return rows.drop(columns=[c for c in ("tile_id", "path") if c in rows])  # strings: kept long

        return self.cached(f"sample:{limit}", make)

    def zones(self) -> list[str]:
        """The zone labels of the index's tiles (from the filter columns: no table read)."""
        return self.cached("zones", lambda: [z for z in self.filter_columns().zones_present() if z])

    def time_span(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The earliest and latest tile time (UTC), None when no tile is dated."""
        return self.cached("time_span", lambda: self.filter_columns().time_span())

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
        """Refuse to read mapped files (codes, tile table, filter columns) that were truncated or
        rewritten in place since the index was opened: a read of a truncated memory map dies of
        SIGBUS, one of rewritten bytes answers from other codes or rows. A file replaced or
        removed (as a newer generation does) is fine: the map keeps the file that was opened.
        Costs a ``stat`` per mapped file."""
        for role, (device, inode, size, mtime) in self.stamps.items():
            name = self.manifest["files"][role]["name"]
            try:
                st = os.stat(self.path / name)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) == (device, inode) and (st.st_size, st.st_mtime_ns) != (size, mtime):
                raise IndexCorruptError(
                    f"{self.path}: the {role} file {name} was changed on disk (truncated "
                    "or rewritten in place) after the index was opened; open it again"
                )

    def row_of(self, tile_id: str) -> int:
        """The row of ``tile_id`` (ids are unique): a binary search of the index's sorted id
        hashes, or a dictionary made on first use for indexes written without them."""
        row = self.table.row_of(tile_id)
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
        return self.cached("filter_columns", self.table.filter_columns)

    def verify_rest(self) -> None:
        """Run now the checks an open deferred to first use (the tile table, id lookup and cell
        keys, verified whole): for a long-lived reader, in a background thread. Reading them also
        brings them into the page cache, where a server's hit rows are then read from memory
        rather than from disk. A failure is kept and raised where the file is next used."""
        for check in self.checks.values():
            try:
                check()
            except IndexCorruptError:
                pass

    def cells(self) -> Cells | None:
        """The tiles' sorted cell keys (``indexer.cells``), verified and mapped on first use;
        None for indexes written without them."""
        entry = self.manifest["files"].get("cells")
        if entry is None:
            return None

        def load() -> Cells:
            if "cells" in self.checks:
                self.checks["cells"]()
            return Cells(self.path / entry["name"], self.n)

        return self.cached("cells", load)
