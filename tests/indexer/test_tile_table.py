"""The tile table on disk (``indexer.tile_table``): what a search, a filter and an export get from
the memory-mapped table is what they got from the table in memory, and indexes written before it
(Parquet table, sha256 checksums) still open."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import hash_bytes, random_codes

from lookalike.errors import IndexCorruptError, LookalikeError
from lookalike.fileio import sha256_file
from lookalike.indexer import row_checks, tile_table
from lookalike.indexer.export import hits_to_geojson
from lookalike.indexer.filter_columns import FilterColumns
from lookalike.indexer.search import Filters, Query, search_index
from lookalike.indexer.store import MANIFEST, Index, open_index, write_index
from lookalike.indexer.tile_table import FrameTable, MappedTable, TileBatches

N = 600


def _table(n: int = N, seed: int = 0, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(-180, 180, n), rng.uniform(-60, 60, n)
    times = pd.Timestamp("2010-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 3650, n), unit="D")
    tiles = pd.DataFrame(
        {
            "tile_id": [f"s{(start + i) % 7}:t{start + i:06d}" for i in range(n)],
            "source": pd.Categorical([f"s{(start + i) % 7}" for i in range(n)], [f"s{i}" for i in range(7)]),
            "zone": pd.Categorical(
                [f"{1 + (start + i) % 5}N" for i in range(n)], [f"{z}N" for z in range(1, 6)]
            ),
            "lon": lon,
            "lat": lat,
            "time": pd.Series(times).where(rng.random(n) > 0.1),
            "row": np.arange(start, start + n, dtype=np.int32),
        }
    )
    for i in range(4):  # footprints: a small square around each centre
        tiles[f"lon{i}"] = (lon + (0.01 if i in (1, 2) else -0.01)).astype(np.float32)
        tiles[f"lat{i}"] = (lat + (0.01 if i in (0, 1) else -0.01)).astype(np.float32)
    return tiles


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """An index written in small batches (so takes cross batch boundaries), its codes and table."""
    path = tmp_path_factory.mktemp("table") / "i"
    codes, tiles = random_codes(N, 64, seed=3), _table()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(tile_table, "BATCH_ROWS", 128)
        write_index(path, codes, tiles, bits=64, hash_model=hash_bytes(64))
    return path, codes, tiles


FILTERS = [
    None,
    Filters(zones=["2N", "4N"]),
    Filters(sources=["s3"]),
    Filters(time_range=("2012-01-01", "2015-06-30")),
    Filters(time_range=(None, "2011-01-01")),
    Filters(bbox=(-90.0, -30.0, 45.0, 30.0)),
    Filters(bbox=(150.0, -60.0, -150.0, 60.0)),  # across 180
    Filters(region="POLYGON ((0 0, 60 0, 60 40, 0 40, 0 0))", zones=["1N", "3N"]),
]


def test_the_mapped_table_is_mapped_and_read_in_batches(written):
    path, _, tiles = written
    index = open_index(path)
    assert isinstance(index.table, MappedTable) and index.table.n == N
    assert set(index.manifest["files"]) >= {"tiles", "columns"}
    assert index.manifest["files"]["tiles"]["name"].endswith(".arrow")
    assert index.table._reader.num_record_batches == -(-N // 128)
    assert "_frame" in index.table.__dict__ and index.table._frame is None  # nothing read whole yet
    pd.testing.assert_frame_equal(index.tiles, tiles)


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "none" if f is None else str(f.describe()))
def test_hits_filters_and_exports_equal_those_of_the_table_in_memory(written, filters):
    path, codes, tiles = written
    mapped = open_index(path)
    in_memory = Index(mapped.path, mapped.manifest, mapped.codes, tiles)
    for query in (
        codes[5],
        Query(tile_id="s1:t000008"),
        Query(lonlat=(float(tiles.lon[40]), float(tiles.lat[40]))),
    ):
        got = search_index(mapped, query, k=50, filters=filters)
        want = search_index(in_memory, query, k=50, filters=filters)
        pd.testing.assert_frame_equal(got, want)
        np.testing.assert_array_equal(got.attrs["index_row"], want.attrs["index_row"])
        assert json.dumps(hits_to_geojson(got), default=str) == json.dumps(hits_to_geojson(want), default=str)


def test_a_search_reads_only_its_hit_rows(written, monkeypatch):
    path, codes, _ = written
    index = open_index(path)
    monkeypatch.setattr(MappedTable, "frame", lambda self: pytest.fail("the whole table was read"))
    hits = search_index(index, codes[0], k=20, filters=Filters(zones=["3N"], time_range=("2011", "2019")))
    assert len(hits) == 20 and set(hits["zone"].astype(str)) == {"3N"}


def test_take_keeps_the_order_asked_for_and_the_dtypes(written):
    path, _, tiles = written
    table = open_index(path).table
    rows = np.array([599, 0, 128, 127, 300, 0])
    pd.testing.assert_frame_equal(table.take(rows), tiles.iloc[rows].reset_index(drop=True))
    empty = table.take(np.zeros(0, np.int64))
    assert len(empty) == 0 and dict(empty.dtypes) == dict(tiles.dtypes)
    with pytest.raises(IndexError):
        table.take(np.array([N]))


def test_mapped_filter_columns_are_the_tables_own(written):
    path, _, tiles = written
    mapped, made = open_index(path).filter_columns(), FilterColumns.of(tiles)
    assert not mapped.lon.flags.writeable and not mapped.zone_codes.flags.owndata
    for wanted in ({"2N"}, {"1N", "5N"}, {"nope"}):
        np.testing.assert_array_equal(mapped.zones_in(wanted), made.zones_in(wanted))
    np.testing.assert_array_equal(mapped.sources_in({"s6"}), made.sources_in({"s6"}))
    start, end = pd.Timestamp("2013-01-01", tz="UTC"), pd.Timestamp("2014-01-01", tz="UTC")
    np.testing.assert_array_equal(mapped.times_within(start, end), made.times_within(start, end))
    np.testing.assert_array_equal(mapped.lon, made.lon)


def test_filter_columns_of_batches_join_into_those_of_the_whole():
    a, b = _table(50, seed=1), _table(70, seed=2, start=50)
    b["zone"] = b["zone"].astype(str).where(b.index % 9 > 0)  # plain strings, some missing
    joined = FilterColumns.concat([FilterColumns.of(a), FilterColumns.of(b)])
    whole = FilterColumns.of(pd.concat([a.assign(zone=a["zone"].astype(str)), b], ignore_index=True))
    for wanted in ({"1N"}, {"2N", "5N"}):
        np.testing.assert_array_equal(joined.zones_in(wanted), whole.zones_in(wanted))
    np.testing.assert_array_equal(joined.sources_in({"s0", "s4"}), whole.sources_in({"s0", "s4"}))
    np.testing.assert_array_equal(joined.times, whole.times)


def _batches(frames: list[pd.DataFrame], n: int | None = None) -> TileBatches:
    return TileBatches(iter(frames), sum(map(len, frames)) if n is None else n)


def test_an_index_written_in_batches_equals_one_written_whole(tmp_path):
    frames = [_table(200, seed=s, start=200 * s) for s in range(3)]
    codes = random_codes(600, 64, seed=4)
    write_index(tmp_path / "b", codes, _batches(frames), bits=64, hash_model=hash_bytes(64))
    write_index(
        tmp_path / "w", codes, pd.concat(frames, ignore_index=True), bits=64, hash_model=hash_bytes(64)
    )
    batched, whole = open_index(tmp_path / "b"), open_index(tmp_path / "w")
    pd.testing.assert_frame_equal(batched.tiles, whole.tiles)
    for filters in FILTERS:
        pd.testing.assert_frame_equal(
            search_index(batched, codes[9], k=30, filters=filters),
            search_index(whole, codes[9], k=30, filters=filters),
        )


def test_batches_are_checked_as_they_are_written(tmp_path):
    codes, hash_model = random_codes(400, 64, seed=1), hash_bytes(64)
    first, second = _table(200), _table(200, seed=1, start=200)
    repeated = second.assign(tile_id=second["tile_id"].where(second.index != 150, first["tile_id"][3]))
    with pytest.raises(LookalikeError, match="more than once"):
        write_index(tmp_path / "dup", codes, _batches([first, repeated]), bits=64, hash_model=hash_model)
    other = second.assign(
        zone=pd.Categorical(second["zone"].astype(str), ["9N", *second["zone"].cat.categories])
    )
    with pytest.raises(LookalikeError, match="one table"):
        write_index(tmp_path / "cats", codes, _batches([first, other]), bits=64, hash_model=hash_model)
    with pytest.raises(LookalikeError, match="200 rows, not the 400"):
        write_index(tmp_path / "count", codes, _batches([first], n=400), bits=64, hash_model=hash_model)
    for name in ("dup", "cats", "count"):  # nothing half-written is left to open
        assert not (tmp_path / name / MANIFEST).exists()
        assert not [f for f in (tmp_path / name).iterdir() if f.name != MANIFEST]
    write_index(tmp_path / "dup", codes, _batches([first, second]), bits=64, hash_model=hash_model)
    with pytest.raises(LookalikeError, match="not in batches"):
        write_index(tmp_path / "dup", codes[:200], _batches([first]), bits=64, append=True)


def _as_written_before(path) -> None:
    """Rewrite the index at ``path`` as indexes were written before the mapped table: the tile
    table in Parquet, no filter-column file, sha256 checksums only."""
    manifest = json.loads((path / MANIFEST).read_text())
    index = open_index(path)
    index.tiles.to_parquet(path / "tiles-000001.parquet", index=False)
    for role in ("tiles", "columns"):
        (path / manifest["files"].pop(role)["name"]).unlink()
    manifest["files"]["tiles"] = dict(name="tiles-000001.parquet")
    for entry in manifest["files"].values():
        entry.pop("xxh3_128", None)
        entry.update(bytes=(path / entry["name"]).stat().st_size, sha256=sha256_file(path / entry["name"]))
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_an_index_written_before_opens_and_answers_the_same(written, tmp_path):
    import shutil

    path, codes, _ = written
    old = tmp_path / "old"
    shutil.copytree(path, old)
    _as_written_before(old)
    earlier, now = open_index(old), open_index(path)
    assert isinstance(earlier.table, FrameTable) and "columns" not in earlier.manifest["files"]
    for filters in FILTERS:
        pd.testing.assert_frame_equal(
            search_index(earlier, codes[2], k=40, filters=filters),
            search_index(now, codes[2], k=40, filters=filters),
        )
    data = bytearray((old / "codes-000001.npy").read_bytes())
    data[-1] ^= 1
    (old / "codes-000001.npy").write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="sha256"):
        open_index(old)


def test_an_append_rewrites_an_earlier_index_in_the_mapped_format(written, tmp_path):
    import shutil

    path, codes, _ = written
    old = tmp_path / "old"
    shutil.copytree(path, old)
    _as_written_before(old)
    more = _table(30, seed=9, start=N)
    write_index(old, random_codes(30, 64, seed=9), more, bits=64, append=True)
    index = open_index(old)
    assert isinstance(index.table, MappedTable) and index.n == N + 30
    assert index.tiles["tile_id"].tolist()[-30:] == more["tile_id"].tolist()


@pytest.mark.parametrize("role", ["columns", "rowsums"])
def test_damaged_table_files_are_refused(written, tmp_path, role):
    import shutil

    path, _, _ = written
    copy = tmp_path / "c"
    shutil.copytree(path, copy)
    name = json.loads((copy / MANIFEST).read_text())["files"][role]["name"]
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="xxh3_128"):
        open_index(copy)
    if role == "columns":
        (copy / name).write_bytes(b"\0" * len(data))  # unreadable as well as altered
        with pytest.raises(IndexCorruptError, match="readable"):
            open_index(copy, verify=False).filter_columns()


def test_tile_ids_are_found_by_their_sorted_hashes(written, monkeypatch):
    path, _, tiles = written
    index = open_index(path)
    assert "ids" in index.manifest["files"]
    monkeypatch.setattr(MappedTable, "frame", lambda self: pytest.fail("the whole table was read"))
    for row in (0, 127, 128, 333, N - 1):
        assert index.row_of(tiles["tile_id"][row]) == row
    with pytest.raises(LookalikeError, match="not in the index"):
        index.row_of("s1:nope")


def test_equal_hashes_of_different_ids_are_told_apart(tmp_path, monkeypatch):
    """A hash shared by several ids (rare at 64 bits, forced here) leaves the lookup exact."""
    tiles = _table(50)
    for module in (tile_table, row_checks):  # the lookup's hash and the row checksums' alike
        monkeypatch.setattr(module, "id_hashes", lambda ids: np.full(len(ids), 7, np.uint64))
    write_index(tmp_path / "i", random_codes(50, 64), tiles, bits=64, hash_model=hash_bytes(64))
    index = open_index(tmp_path / "i")
    assert [index.row_of(t) for t in tiles["tile_id"][[0, 17, 49]]] == [0, 17, 49]
    with pytest.raises(LookalikeError, match="not in the index"):
        index.row_of("elsewhere")


def test_a_lookup_made_by_another_hash_is_refused(written, tmp_path):
    import shutil

    path, _, _ = written
    copy = tmp_path / "c"
    shutil.copytree(path, copy)
    name = json.loads((copy / MANIFEST).read_text())["files"]["ids"]["name"]
    lookup = np.load(copy / name)
    lookup[0, -1] += np.uint64(1)
    np.save(copy / name, lookup)
    with pytest.raises(IndexCorruptError, match="another hash"):
        open_index(copy, verify=False)
