"""Row checksums (``indexer.row_checks``): an index opens without reading its tile table whole,
and still never hands out a byte of it that was not verified: each row read is checked, the
whole table and the id lookup are verified before their first whole read or lookup."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import hash_bytes, random_codes

from lookalike.errors import IndexCorruptError
from lookalike.indexer import row_checks, store, tile_table
from lookalike.indexer.row_checks import DeferredCheck, row_checksums
from lookalike.indexer.search import search_index
from lookalike.indexer.store import MANIFEST, open_index, write_index
from lookalike.indexer.tile_table import MappedTable, TileBatches

N = 300


def _table(n: int = N, start: int = 0) -> pd.DataFrame:
    """Every kind of column a tile table holds, nulls included."""
    rng = np.random.default_rng(start)
    rows = np.arange(start, start + n)
    times = pd.Timestamp("2010-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 3650, n), unit="D")
    return pd.DataFrame(
        {
            "tile_id": [f"s{i % 3}:t{i:06d}" for i in rows],
            "source": pd.Categorical([f"s{i % 3}" for i in rows], ["s0", "s1", "s2"]),
            "zone": pd.Categorical(
                [None if i % 11 == 0 else f"{i % 4}N" for i in rows], ["0N", "1N", "2N", "3N"]
            ),
            "lon": rng.uniform(-180, 180, n),
            "lat": rng.uniform(-60, 60, n),
            "time": pd.Series(times).where(rng.random(n) > 0.2).astype("datetime64[s, UTC]"),
            "gsd": rng.uniform(0.25, 5, n).astype(np.float32),
            "size": np.full(n, 128, np.int16),
            "row": rows.astype(np.int32),
            "label": [None if i % 5 else f"class {i % 7}" for i in rows],
            "edge": rows % 2 == 0,
        }
    )


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "i"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(tile_table, "BATCH_ROWS", 64)  # several batches, so takes cross them
        frames = [_table(100, 0), _table(200, 100)]
        write_index(path, random_codes(N, 64), TileBatches(frames, N), bits=64, hash_model=hash_bytes(64))
    return path


def _flip_value(path, column: str, value) -> None:
    """Change the bytes of one stored value in the tile table file (found by its bytes)."""
    name = json.loads((path / MANIFEST).read_text())["files"]["tiles"]["name"]
    data = bytearray((path / name).read_bytes())
    needle = np.asarray([value]).tobytes()
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, f"the {column} value is not stored once"
    data[at] ^= 0x01
    (path / name).write_bytes(bytes(data))


def test_checksums_written_are_those_read_back(written):
    index = open_index(written)
    assert "rowsums" in index.manifest["files"]
    frame = index.tile_rows(np.arange(N)[::-1])  # every row, checked as it is read
    expected = pd.concat([_table(100, 0), _table(200, 100)], ignore_index=True)
    assert frame["tile_id"].tolist() == expected["tile_id"][::-1].tolist()
    sums = np.load(written / index.manifest["files"]["rowsums"]["name"])[:-1]
    assert np.array_equal(sums, row_checksums(index.tile_rows(np.arange(N))))
    assert len(np.unique(sums)) > N - 3  # a checksum, not a constant


def test_opening_does_not_read_the_table_or_the_id_lookup(written, monkeypatch):
    read = []
    real = store.checksum_file

    def counted(file, algorithm):
        if algorithm == "xxh3_128":  # small files carry sha256 too
            read.append(file.name.split("-")[0])
        return real(file, algorithm)

    monkeypatch.setattr(store, "checksum_file", counted)
    index = open_index(written)
    assert "tiles" not in read and "ids" not in read and {"codes", "columns", "rowsums"} <= set(read)
    index.row_of("s1:t000007")
    assert read.count("ids") == 1  # verified on first lookup, once
    index.row_of("s2:t000008")
    assert read.count("ids") == 1 and "tiles" not in read
    assert len(index.tiles) == N
    assert read.count("tiles") == 1


def test_a_damaged_row_is_refused_where_it_is_read(written):
    row = 123
    lon = _table(200, 100)["lon"].iat[row - 100]
    _flip_value(written, "lon", lon)
    index = open_index(written)  # opens: the table is not read whole
    assert len(index.tile_rows(np.array([0, 5, 122, 124, N - 1]))) == 5
    with pytest.raises(IndexCorruptError, match=f"row {row} fails its checksum"):
        index.tile_rows(np.array([7, row, 9]))
    with pytest.raises(IndexCorruptError, match=f"row {row} fails"):
        search_index(index, np.asarray(index.codes[row]), k=5)  # its own code ranks first
    with pytest.raises(IndexCorruptError, match="tiles file .* fails its xxh3_128 checksum"):
        _ = index.tiles
    with pytest.raises(IndexCorruptError, match="xxh3_128"):  # and again: the failure is kept
        _ = index.tiles
    assert open_index(written, verify=False).tile_rows(np.array([row]))["lon"].iat[0] != lon


def test_a_damaged_id_lookup_is_refused_at_its_first_use(written):
    name = json.loads((written / MANIFEST).read_text())["files"]["ids"]["name"]
    data = bytearray((written / name).read_bytes())
    data[-20] ^= 0x10
    (written / name).write_bytes(bytes(data))
    index = open_index(written)
    assert len(index.tile_rows(np.arange(10))) == 10
    for _ in range(2):
        with pytest.raises(IndexCorruptError, match="ids file .* fails its xxh3_128 checksum"):
            index.row_of("s0:t000000")


def test_checksums_of_another_hash_verify_the_table_whole_at_open(written, monkeypatch):
    _flip_value(written, "lon", _table(100, 0)["lon"].iat[3])
    assert isinstance(open_index(written).table, MappedTable)
    monkeypatch.setattr(row_checks, "_PROBE_SUM", row_checks._PROBE_SUM ^ np.uint32(1))
    with pytest.raises(IndexCorruptError, match="tiles file .* fails its xxh3_128 checksum"):
        open_index(written)


def test_an_index_without_row_checksums_is_verified_whole_at_open(written):
    manifest = json.loads((written / MANIFEST).read_text())
    (written / manifest["files"].pop("rowsums")["name"]).unlink()
    (written / MANIFEST).write_text(json.dumps(manifest))
    assert len(open_index(written).tile_rows(np.arange(N))) == N
    _flip_value(written, "lon", _table(100, 0)["lon"].iat[3])
    with pytest.raises(IndexCorruptError, match="tiles file .* fails its xxh3_128 checksum"):
        open_index(written)


def test_a_deferred_check_runs_once_and_keeps_its_failure():
    calls = []

    def failing() -> None:
        calls.append(1)
        raise IndexCorruptError("bad")

    check = DeferredCheck(failing)
    for _ in range(3):
        with pytest.raises(IndexCorruptError, match="bad"):
            check()
    assert calls == [1]
    fine = DeferredCheck(lambda: calls.append(2))
    fine(), fine()
    assert calls == [1, 2]


def test_a_damaged_id_is_refused_where_it_is_looked_up(written):
    name = json.loads((written / MANIFEST).read_text())["files"]["tiles"]["name"]
    data = bytearray((written / name).read_bytes())
    at = data.find(b"s1:t000007")
    assert at >= 0 and data.find(b"s1:t000007", at + 1) < 0
    data[at + 9] ^= 0x01  # the id now reads "s1:t000006" in its row
    (written / name).write_bytes(bytes(data))
    index = open_index(written)
    assert index.row_of("s1:t000010") == 10
    with pytest.raises(IndexCorruptError, match="row 7 fails its checksum"):
        index.row_of("s1:t000007")


def test_the_rest_is_verified_at_once_when_asked(written, monkeypatch):
    index = open_index(written)
    index.verify_rest()  # reads and verifies the table, id lookup and cell keys now
    assert all(check.passed for check in index.checks.values()) and set(index.checks) == {
        "tiles",
        "ids",
        "cells",
    }
    monkeypatch.setattr(
        row_checks, "row_checksums", lambda *a: pytest.fail("a verified table's rows were checked")
    )
    monkeypatch.setattr(
        tile_table, "check_rows", lambda *a: pytest.fail("a verified table's rows were checked")
    )
    assert len(index.tile_rows(np.arange(N))) == N


def test_a_damaged_table_found_by_the_background_check_is_refused_where_read(written):
    row = 150
    _flip_value(written, "lon", _table(200, 100)["lon"].iat[row - 100])
    index = open_index(written)
    index.verify_rest()  # does not raise: the failure is kept for the table's next reader
    assert not index.checks["tiles"].passed and index.checks["ids"].passed
    with pytest.raises(IndexCorruptError, match=f"row {row} fails"):
        index.tile_rows(np.array([row]))
    with pytest.raises(IndexCorruptError, match="xxh3_128"):
        _ = index.tiles
