"""Thumbnails made at index time (``indexer.thumbstore``) and kept by the store."""

from __future__ import annotations

import io

import numpy as np
import pytest
from lookalike_testkit import hash_bytes, random_codes, synthetic_tiles

from lookalike.errors import IndexCorruptError, LookalikeError
from lookalike.indexer.store import open_index, update_tables, write_index
from lookalike.indexer.thumbstore import (
    THUMB_SIZE,
    ThumbnailFile,
    iter_thumbnails,
    jpeg_thumbnails,
    write_thumbnails,
)


def pictures(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


def test_file_round_trip_and_damage(tmp_path):
    from PIL import Image

    blobs = jpeg_thumbnails(pictures(5))
    assert Image.open(io.BytesIO(blobs[0])).size == (THUMB_SIZE, THUMB_SIZE)
    path = tmp_path / "t.bin"
    assert write_thumbnails(path, blobs) == 5
    store = ThumbnailFile(path, expected=5)
    assert [store[i] for i in range(5)] == blobs and len(store) == 5
    assert list(iter_thumbnails([path, path])) == blobs + blobs
    with pytest.raises(IndexError):
        store[5]
    with pytest.raises(IndexCorruptError):
        ThumbnailFile(path, expected=6)
    write_thumbnails(tmp_path / "empty.bin", [])
    assert len(ThumbnailFile(tmp_path / "empty.bin", expected=0)) == 0
    for damaged in (path.read_bytes()[:-3], b"", path.read_bytes()[:-8] + np.uint64(10**9).tobytes()):
        (tmp_path / "bad.bin").write_bytes(damaged)
        with pytest.raises(IndexCorruptError):
            ThumbnailFile(tmp_path / "bad.bin")


def test_store_keeps_thumbnails_through_appends_and_checks_them(tmp_path):
    tiles = synthetic_tiles(30)
    first = jpeg_thumbnails(pictures(20, 1))
    path = tmp_path / "idx"
    write_index(
        path,
        random_codes(20, 64),
        tiles.iloc[:20],
        bits=64,
        hash_model=hash_bytes(64),
        info=dict(kind="test"),
        thumbs=iter(first),
    )
    index = open_index(path)
    assert [index.thumbnail(i) for i in range(20)] == first
    more = jpeg_thumbnails(pictures(10, 2))
    write_index(
        path,
        random_codes(10, 64, seed=1),
        tiles.iloc[20:].reset_index(drop=True),
        bits=64,
        append=True,
        thumbs=iter(more),
    )
    update_tables(path, info=dict(note="tables rewritten: thumbnails stay"))
    index = open_index(path)
    assert [index.thumbnail(i) for i in range(30)] == first + more
    thumbs = path / index.manifest["files"]["thumbs"]["name"]
    blob = bytearray(thumbs.read_bytes())
    blob[10] ^= 0xFF
    thumbs.write_bytes(bytes(blob))
    with pytest.raises(IndexCorruptError, match="thumbs file"):
        open_index(path)


def test_thumbnails_must_match_the_rows_and_an_append_without_them_drops_them(tmp_path):
    tiles = synthetic_tiles(12)
    with pytest.raises(LookalikeError, match="4 thumbnails for 8 tiles"):
        write_index(
            tmp_path / "a",
            random_codes(8, 64),
            tiles.iloc[:8],
            bits=64,
            hash_model=hash_bytes(64),
            thumbs=iter(jpeg_thumbnails(pictures(4))),
        )
    assert not (tmp_path / "a" / "manifest.json").exists() and not list((tmp_path / "a").glob("*-000001.*"))
    write_index(
        tmp_path / "b",
        random_codes(8, 64),
        tiles.iloc[:8],
        bits=64,
        hash_model=hash_bytes(64),
        thumbs=iter(jpeg_thumbnails(pictures(8))),
    )
    write_index(
        tmp_path / "b", random_codes(4, 64), tiles.iloc[8:].reset_index(drop=True), bits=64, append=True
    )
    index = open_index(tmp_path / "b")
    assert "thumbs" not in index.manifest["files"] and index.thumbnail(0) is None  # rendered instead
