"""Checks of a tile table that is read a few rows at a time.

Verifying a file means reading all of it. The codes and filter columns of an index are read
whole by every search anyway, but of its tile table (about 100 B a tile, 10 GB at a hundred
million tiles) a search reads its k hit rows. So an index also stores a 32-bit checksum of every
row (``row_checksums``, a file of 4 B a tile that is verified whole at open), and the table
checks each row it hands out against it: every byte used is verified, and opening costs the
files a search scans rather than all of them. The few readers that need the whole table, and
the tile-id lookup, verify their file whole on first use (``DeferredCheck``).

A row's checksum folds pandas' 64-bit hash of each of its values (``pd.util.hash_array``) with
the SipHash of its tile id, which the id lookup computes anyway; the file ends with the checksum
of a fixed probe row, so a file made by another pandas hash is recognised as such (the table is
then verified whole instead) rather than read as corrupt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.errors import IndexCorruptError
from lookalike.fileio import load_npy_for_random_reads, save_npy

_MIX = np.uint64(0x9E3779B97F4A7C15)  # an odd constant: folds the id's hash into the row's


def id_hashes(ids) -> np.ndarray:
    """64-bit hashes of tile ids (pandas' vectorised SipHash)."""
    # categorize=False: the same hashes, without factorizing first (a lookup's one id: 34 us, not 500)
    return pd.util.hash_array(np.asarray(ids, dtype=object), categorize=False)


def row_checksums(frame: pd.DataFrame, ids: np.ndarray | None = None) -> np.ndarray:
    """A uint32 checksum of each row of ``frame`` (columns in the table's order, values as
    ``MappedTable.take`` returns them); ``ids``: ``id_hashes`` of its tile ids when the caller
    has them already (hashing 43-byte strings is the costly part)."""
    h = np.zeros(len(frame), np.uint64)
    with np.errstate(over="ignore"):  # the folds wrap around by design
        for name in frame.columns:  # column by column: a check of one row costs a few hash calls
            if name != "tile_id":
                column = frame[name]
                values = column.to_numpy() if isinstance(column.dtype, np.dtype) else column.array
                h = h * _MIX + pd.util.hash_array(values)
        if ids is None and "tile_id" in frame:
            ids = id_hashes(frame["tile_id"].astype(str).to_numpy(object))
        if ids is not None:
            h = h * _MIX + ids
    return (h ^ (h >> np.uint64(32))).astype(np.uint32)


def _probe() -> pd.DataFrame:
    """One row of every kind of column a tile table holds, to recognise the hash that made a file."""
    return pd.DataFrame(
        {
            "tile_id": ["lookalike:probe:0:0"],
            "source": pd.Categorical(["probe"]),
            "lon": [1.5],
            "size": np.array([128], np.int16),
            "gsd": np.array([0.25], np.float32),
            "time": pd.to_datetime(["2009-07-25"], utc=True),
        }
    )


_PROBE_SUM = row_checksums(_probe())[0]


def write_row_checksums(path: Path, sums: np.ndarray) -> None:
    """Write the row checksums (one per row, in row order), then the probe row's."""
    save_npy(path, np.append(np.asarray(sums, np.uint32), _PROBE_SUM))


def read_row_checksums(path: Path, n: int) -> np.ndarray | None:
    """The row checksums of a table of ``n`` rows as a memory map; None when they were made by
    another hash than this version's (the caller then verifies the table whole)."""
    try:
        sums = load_npy_for_random_reads(path)
    except (ValueError, OSError) as exc:
        raise IndexCorruptError(f"{path} is not a readable row-checksum file ({exc})") from None
    if sums.ndim != 1 or sums.dtype != np.uint32 or len(sums) != n + 1:
        raise IndexCorruptError(
            f"{path}: {n + 1} uint32 row checksums expected, not {sums.shape} {sums.dtype}"
        )
    return sums[:n] if sums[n] == _PROBE_SUM else None


def check_rows(frame: pd.DataFrame, rows: np.ndarray, sums: np.ndarray, where: Path) -> None:
    """Raise IndexCorruptError naming the first of ``rows`` (read as ``frame``) whose checksum is
    not the stored one."""
    bad = np.flatnonzero(row_checksums(frame) != sums[rows])
    if len(bad):
        raise IndexCorruptError(
            f"{where}: row {int(rows[bad[0]])} fails its checksum ({len(bad)} of the {len(rows)} rows "
            "read); the tile table is corrupt"
        )


class DeferredCheck:
    """A check of a file (``check`` raises IndexCorruptError) run once, on first use, by
    whichever thread gets there first; a failure is raised again on every later use."""

    def __init__(self, check: Callable[[], None]):
        self._check: Callable[[], None] | None = check
        self._error: IndexCorruptError | None = None
        self._lock = threading.Lock()
        self.passed = False

    def __call__(self) -> None:
        with self._lock:
            if self._check is not None:
                check, self._check = self._check, None
                try:
                    check()
                    self.passed = True
                except IndexCorruptError as exc:
                    self._error = exc
            if self._error is not None:
                raise self._error
