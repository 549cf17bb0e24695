"""The index on disk: round trip, memory mapping, appends, corruption, crash safety."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import hash_bytes, random_codes, synthetic_tiles

from lookalike.errors import CodeLengthError, IndexCorruptError, LookalikeError
from lookalike.indexer import store
from lookalike.indexer.store import MANIFEST, open_index, read_manifest, write_index

# the files of an index after one append: its second generation, the hash model of the first
SECOND_GENERATION = {
    MANIFEST,
    "codes-000002.npy",
    "tiles-000002.arrow",
    "rowsums-000002.npy",
    "cells-000002.npy",
    "columns-000002.arrow",
    "ids-000002.npy",
    "hash-000001.npz",
}


def _write(path, n=100, bits=64, seed=0, **kw):
    tiles = synthetic_tiles(n, seed)
    codes = random_codes(n, bits, seed)
    write_index(path, codes, tiles, bits=bits, hash_model=hash_bytes(bits), **kw)
    return codes, tiles


def _snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_round_trip(tmp_path):
    codes, tiles = _write(tmp_path / "i", info=dict(kind="test", sources={"alpha": {"x": 1}}))
    idx = open_index(tmp_path / "i")
    assert len(idx) == idx.n == 100 and idx.bits == 64
    np.testing.assert_array_equal(np.asarray(idx.codes), codes)
    pd.testing.assert_frame_equal(idx.tiles, tiles, check_dtype=False)
    assert str(idx.tiles["time"].dtype).startswith("datetime64") and idx.tiles["time"].isna().any()
    m = idx.manifest
    assert m["kind"] == "test" and m["sources"] == {"alpha": {"x": 1}} and m["count"] == 100
    assert m["generation"] == 1 and set(m["files"]) == {
        "codes",
        "tiles",
        "rowsums",
        "cells",
        "columns",
        "ids",
        "hash",
    }
    assert idx.hash_model_path.read_bytes() == hash_bytes(64)
    assert idx.row_of(tiles["tile_id"].iloc[57]) == 57
    with pytest.raises(LookalikeError):
        idx.row_of("absent")
    # no temporary files left behind
    assert not [p for p in (tmp_path / "i").iterdir() if p.name.startswith(".")]


def test_codes_are_memory_mapped(tmp_path):
    _write(tmp_path / "i")
    idx = open_index(tmp_path / "i")
    assert isinstance(idx.codes, np.memmap)
    assert not idx.codes.flags.writeable
    assert os.path.samefile(idx.codes.filename, tmp_path / "i" / idx.manifest["files"]["codes"]["name"])


def test_write_checks_shapes(tmp_path):
    tiles = synthetic_tiles(10)
    with pytest.raises(CodeLengthError):
        write_index(tmp_path / "a", random_codes(10, 64), tiles, bits=128, hash_model=hash_bytes(64))
    with pytest.raises(LookalikeError):
        write_index(tmp_path / "b", random_codes(9, 64), tiles, bits=64, hash_model=hash_bytes(64))
    with pytest.raises(LookalikeError, match="hash model"):
        write_index(tmp_path / "c", random_codes(10, 64), tiles, bits=64)
    _write(tmp_path / "d", n=10)
    with pytest.raises(LookalikeError, match="already holds an index"):
        _write(tmp_path / "d", n=10)


def test_append_adds_rows_and_keeps_old_codes(tmp_path):
    path = tmp_path / "i"
    codes, tiles = _write(path, n=100, info=dict(sources={"alpha": {"v": 1}}))
    old_manifest = read_manifest(path)
    old_codes_bytes = np.asarray(open_index(path).codes).tobytes()
    new_tiles = synthetic_tiles(40, seed=1)
    new_tiles["tile_id"] = [f"new{i}" for i in range(40)]
    new_codes = random_codes(40, 64, seed=1)
    write_index(path, new_codes, new_tiles, bits=64, append=True, info=dict(sources={"beta": {"v": 2}}))
    idx = open_index(path)
    assert len(idx) == 140 and idx.manifest["generation"] == 2
    assert np.asarray(idx.codes)[:100].tobytes() == old_codes_bytes
    np.testing.assert_array_equal(np.asarray(idx.codes)[100:], new_codes)
    assert idx.tiles["tile_id"].tolist() == tiles["tile_id"].tolist() + new_tiles["tile_id"].tolist()
    assert idx.manifest["sources"] == {"alpha": {"v": 1}, "beta": {"v": 2}}
    assert idx.manifest["created"] == old_manifest["created"]
    # the hash model is kept; files of the old generation are gone
    assert idx.manifest["files"]["hash"] == old_manifest["files"]["hash"]
    assert {p.name for p in path.iterdir()} == SECOND_GENERATION


def test_append_wrong_bits(tmp_path):
    _write(tmp_path / "i", bits=64)
    before = _snapshot(tmp_path / "i")
    with pytest.raises(CodeLengthError, match="64-bit"):
        write_index(
            tmp_path / "i",
            random_codes(5, 128, seed=3),
            synthetic_tiles(5, seed=3).assign(tile_id=[f"z{i}" for i in range(5)]),
            bits=128,
            append=True,
        )
    assert _snapshot(tmp_path / "i") == before


def test_append_duplicate_tile_ids(tmp_path):
    _, tiles = _write(tmp_path / "i")
    before = _snapshot(tmp_path / "i")
    dup = synthetic_tiles(3, seed=9)
    dup["tile_id"] = ["fresh", tiles["tile_id"].iloc[4], "other"]
    with pytest.raises(LookalikeError, match=tiles["tile_id"].iloc[4]):
        write_index(tmp_path / "i", random_codes(3, 64, seed=9), dup, bits=64, append=True)
    assert _snapshot(tmp_path / "i") == before


def test_duplicate_tile_ids_within_one_write(tmp_path):
    tiles = synthetic_tiles(5)
    tiles.loc[3, "tile_id"] = tiles.loc[1, "tile_id"]
    with pytest.raises(LookalikeError, match="t00001"):
        write_index(tmp_path / "i", random_codes(5, 64), tiles, bits=64, hash_model=hash_bytes(64))
    _write(tmp_path / "j", n=5)
    new = synthetic_tiles(2, seed=4).assign(tile_id=["same", "same"])
    with pytest.raises(LookalikeError, match="same"):
        write_index(tmp_path / "j", random_codes(2, 64), new, bits=64, append=True)


# ------------------------------------------------------------------ corruption
def _files(path):
    return read_manifest(path)["files"]


def corrupt_missing_manifest(path):
    (path / MANIFEST).unlink()


def corrupt_invalid_json(path):
    (path / MANIFEST).write_text('{"format_version": 1, "files": {')


def corrupt_not_a_dict(path):
    (path / MANIFEST).write_text("[1, 2, 3]")


def corrupt_future_format(path):
    m = json.loads((path / MANIFEST).read_text())
    m["format_version"] = 99
    (path / MANIFEST).write_text(json.dumps(m))


def corrupt_truncated_codes(path):
    f = path / _files(path)["codes"]["name"]
    f.write_bytes(f.read_bytes()[:-13])


def corrupt_flipped_byte(path):
    f = path / _files(path)["codes"]["name"]
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))


def corrupt_flipped_rowsums_byte(path):
    """(A damaged tile table is found where its rows are read: ``test_row_checks``.)"""
    f = path / _files(path)["rowsums"]["name"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def corrupt_missing_tiles(path):
    (path / _files(path)["tiles"]["name"]).unlink()


def corrupt_missing_hash(path):
    (path / _files(path)["hash"]["name"]).unlink()


def corrupt_manifest_without_tiles(path):
    m = json.loads((path / MANIFEST).read_text())
    del m["files"]["tiles"]
    (path / MANIFEST).write_text(json.dumps(m))


def corrupt_wrong_count(path):
    m = json.loads((path / MANIFEST).read_text())
    m["count"] = 99
    (path / MANIFEST).write_text(json.dumps(m))


def corrupt_manifest_missing_keys(path):
    m = json.loads((path / MANIFEST).read_text())
    del m["files"]["codes"]["sha256"]
    del m["count"]
    (path / MANIFEST).write_text(json.dumps(m))


def corrupt_empty_manifest(path):
    (path / MANIFEST).write_bytes(b"")


CORRUPTIONS = {
    "missing manifest": (corrupt_missing_manifest, "manifest.json"),
    "invalid JSON": (corrupt_invalid_json, "not valid JSON"),
    "empty manifest": (corrupt_empty_manifest, "not valid JSON"),
    "manifest not an object": (corrupt_not_a_dict, "format"),
    "future format": (corrupt_future_format, "format 99"),
    "truncated codes": (corrupt_truncated_codes, "bytes"),
    "flipped codes byte": (corrupt_flipped_byte, "checksum"),
    "flipped row-checksum byte": (corrupt_flipped_rowsums_byte, "checksum"),
    "missing tiles file": (corrupt_missing_tiles, "missing"),
    "missing hash file": (corrupt_missing_hash, "missing"),
    "manifest lists no tiles": (corrupt_manifest_without_tiles, "tiles"),
    "wrong count": (corrupt_wrong_count, "99"),
    "manifest missing keys": (corrupt_manifest_missing_keys, "manifest"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_index_raises_index_corrupt_error(tmp_path, name):
    corrupt, needle = CORRUPTIONS[name]
    path = tmp_path / "i"
    _write(path)
    corrupt(path)
    with pytest.raises(IndexCorruptError) as err:
        open_index(path)
    msg = str(err.value)
    assert needle.lower() in msg.lower(), msg
    assert str(path) in msg  # says which index
    assert "\n" not in msg


def test_not_an_index(tmp_path):
    with pytest.raises(IndexCorruptError, match="does not exist"):
        open_index(tmp_path / "nothing here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexCorruptError, match="manifest"):
        open_index(tmp_path / "empty")


def test_no_verify_skips_checksums_but_not_sizes(tmp_path):
    _write(tmp_path / "a")
    corrupt_flipped_byte(tmp_path / "a")
    assert len(open_index(tmp_path / "a", verify=False)) == 100
    _write(tmp_path / "b")
    corrupt_truncated_codes(tmp_path / "b")
    with pytest.raises(IndexCorruptError):
        open_index(tmp_path / "b", verify=False)


# ------------------------------------------------------------------ crash safety
def _crash_on_manifest(monkeypatch):
    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if os.path.basename(os.fspath(dst)) == MANIFEST:
            raise OSError("simulated crash while committing the manifest")
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)


def test_crash_during_append_leaves_previous_index(tmp_path, monkeypatch):
    path = tmp_path / "i"
    codes, tiles = _write(path)
    manifest_before = (path / MANIFEST).read_bytes()
    _crash_on_manifest(monkeypatch)
    new_tiles = synthetic_tiles(10, seed=5).assign(tile_id=[f"n{i}" for i in range(10)])
    with pytest.raises(OSError, match="simulated crash"):
        write_index(path, random_codes(10, 64, seed=5), new_tiles, bits=64, append=True)
    monkeypatch.undo()
    assert (path / MANIFEST).read_bytes() == manifest_before
    idx = open_index(path)  # verifies every checksum
    assert len(idx) == 100
    np.testing.assert_array_equal(np.asarray(idx.codes), codes)
    assert idx.tiles["tile_id"].tolist() == tiles["tile_id"].tolist()
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]
    # and the next append succeeds over the debris of the failed one
    write_index(path, random_codes(10, 64, seed=5), new_tiles, bits=64, append=True)
    idx = open_index(path)
    assert len(idx) == 110
    np.testing.assert_array_equal(np.asarray(idx.codes)[:100], codes)
    assert {p.name for p in path.iterdir()} == SECOND_GENERATION


def test_crash_during_first_write_leaves_no_index(tmp_path, monkeypatch):
    _crash_on_manifest(monkeypatch)
    with pytest.raises(OSError):
        _write(tmp_path / "i")
    monkeypatch.undo()
    with pytest.raises(IndexCorruptError, match="manifest"):
        open_index(tmp_path / "i")
    _write(tmp_path / "i")  # a retry works
    assert len(open_index(tmp_path / "i")) == 100


def test_crash_while_writing_codes(tmp_path, monkeypatch):
    path = tmp_path / "i"
    codes, _ = _write(path)
    before = (path / MANIFEST).read_bytes()

    def broken(p, array):
        with open(p, "wb") as fh:
            fh.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(store, "_save_npy", broken)
    with pytest.raises(OSError, match="disk full"):
        write_index(
            path,
            random_codes(3, 64, seed=8),
            synthetic_tiles(3, seed=8).assign(tile_id=["a", "b", "c"]),
            bits=64,
            append=True,
        )
    monkeypatch.undo()
    assert (path / MANIFEST).read_bytes() == before
    np.testing.assert_array_equal(np.asarray(open_index(path).codes), codes)


def test_manifest_is_readable_by_others(tmp_path):
    """The committed manifest gets ordinary file permissions, not mkstemp's private 0600."""
    _write(tmp_path / "i")
    umask = os.umask(0)
    os.umask(umask)
    mode = (tmp_path / "i" / MANIFEST).stat().st_mode & 0o777
    codes_mode = (tmp_path / "i" / _files(tmp_path / "i")["codes"]["name"]).stat().st_mode & 0o777
    assert mode == codes_mode == 0o666 & ~umask


def test_row_lookup_and_single_rows(tmp_path):
    """``row_of`` answers from a lookup table; ``tile`` and ``tile_id_at`` read one row."""
    codes = np.zeros((4, 8), np.uint8)
    tiles = pd.DataFrame({"tile_id": ["a", "b", "d", "c"], "lon": [1.0, 2.0, 3.0, 4.0]})
    write_index(tmp_path / "i", codes, tiles, bits=64, hash_model=hash_bytes(64))
    idx = open_index(tmp_path / "i")
    assert [idx.row_of(t) for t in ("a", "b", "c", "d")] == [0, 1, 3, 2]
    assert [idx.tile_id_at(r) for r in range(4)] == ["a", "b", "d", "c"]
    assert idx.tile(2).to_dict() == {"tile_id": "d", "lon": 3.0}
    with pytest.raises(IndexError):
        idx.tile_id_at(4)
