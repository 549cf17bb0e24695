"""The on-disk cache of decoded pictures: round trip, misses, damage, atomic entries, eviction, and
the source images and basemap pyramids that use it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from lookalike.config import pixel_cache_dir
from lookalike.explorer import basemap
from lookalike.explorer.projection import MapProjection
from lookalike.indexer import pixel_cache, thumbnails
from lookalike.indexer.sources import RasterSource

SLOT = dict(purpose="test", name="a")
KEY = dict(size=10, mtime_ns=5)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    return pixel_cache_dir()


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return dict(
        rgb=rng.integers(0, 255, (40, 60, 3), dtype=np.uint8),
        valid=rng.random((40, 60)) > 0.5,
        bounds=np.array([-180.0, -90.0, 180.0, 90.0]),
    )


def test_round_trip_is_read_only_and_exact():
    stored = arrays()
    pixel_cache.save(SLOT, KEY, stored)
    loaded = pixel_cache.load(SLOT, KEY)
    assert set(loaded) == set(stored)
    for name, array in stored.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype and not loaded[name].flags.writeable


def test_another_key_or_slot_is_a_miss_and_a_new_key_replaces_the_entry(cache_dir):
    pixel_cache.save(SLOT, KEY, arrays(0))
    assert pixel_cache.load(SLOT, dict(KEY, mtime_ns=6)) is None  # the source file changed
    assert pixel_cache.load(dict(SLOT, name="b"), KEY) is None
    pixel_cache.save(SLOT, dict(KEY, mtime_ns=6), arrays(1))
    assert pixel_cache.load(SLOT, KEY) is None
    np.testing.assert_array_equal(pixel_cache.load(SLOT, dict(KEY, mtime_ns=6))["rgb"], arrays(1)["rgb"])
    assert len(list(cache_dir.iterdir())) == 1  # one entry per slot


def test_a_damaged_entry_is_a_miss(cache_dir):
    pixel_cache.save(SLOT, KEY, arrays())
    (entry,) = cache_dir.iterdir()
    data = (entry / "rgb.npy").read_bytes()
    (entry / "rgb.npy").write_bytes(data[: len(data) // 2])  # truncated
    assert pixel_cache.load(SLOT, KEY) is None
    pixel_cache.save(SLOT, KEY, arrays())
    meta = json.loads((entry / "meta.json").read_text())
    meta["arrays"]["rgb"][0] = [41, 60, 3]  # the file disagrees with what the entry claims
    (entry / "meta.json").write_text(json.dumps(meta))
    assert pixel_cache.load(SLOT, KEY) is None
    (entry / "meta.json").write_text("{not json")
    assert pixel_cache.load(SLOT, KEY) is None


def test_a_crash_while_writing_leaves_nothing_that_loads(cache_dir, monkeypatch):
    def crash(path, array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pixel_cache, "save_npy", crash)
    pixel_cache.save(SLOT, KEY, arrays())  # logged, not raised
    assert pixel_cache.load(SLOT, KEY) is None
    assert not any(cache_dir.iterdir())  # the temporary folder is gone too


def test_the_least_recently_used_entries_are_evicted(cache_dir):
    for i in range(3):
        pixel_cache.save(dict(SLOT, name=str(i)), KEY, arrays(i))
    entries = {p.name: p for p in cache_dir.iterdir()}
    size = sum(f.stat().st_size for f in next(iter(entries.values())).iterdir())
    for i, path in enumerate(entries.values()):  # make the use times distinct, the first the oldest
        os.utime(path / "meta.json", (1000 + i, 1000 + i))
    oldest = min(entries.values(), key=lambda p: (p / "meta.json").stat().st_mtime)
    pixel_cache.evict(2 * size)
    left = set(cache_dir.iterdir())
    assert oldest not in left and len(left) == 2


def write_mosaic(path, width=256, height=128):
    """A global plate carree mosaic (the basemap kind of source)."""
    rng = np.random.default_rng(3)
    data = rng.integers(1, 255, (3, height, width), dtype=np.uint8)
    transform = from_origin(-180.0, 90.0, 360.0 / width, 180.0 / height)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs="EPSG:4326",
        transform=transform,
    ) as dst:
        dst.write(data)
    return RasterSource(path, name="mosaic").describe()


def fresh_process(monkeypatch):
    """Forget what this process decoded, as a new server process would."""
    monkeypatch.setattr(thumbnails, "_images", {})
    monkeypatch.setattr(basemap, "_pyramids", {})


def test_source_images_and_pyramids_are_decoded_once_across_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "CACHED_PIXELS", 1)
    monkeypatch.setattr(basemap, "MIN_LEVEL_PIXELS", 64)  # a pyramid of 256, 128, 64 columns
    desc = write_mosaic(tmp_path / "mosaic.tif")
    fresh_process(monkeypatch)
    decoded = thumbnails.source_image("mosaic", desc)
    levels = basemap.pyramid(decoded)
    north = basemap.pyramid(decoded, MapProjection.of("north", decoded.geographic))
    assert decoded.cache_key is not None and [level.pixels.shape[1] for level in levels] == [256, 128, 64]

    fresh_process(monkeypatch)
    monkeypatch.setattr(thumbnails, "_decode", lambda *a: pytest.fail("decoded again"))
    monkeypatch.setattr(basemap, "halve", lambda *a: pytest.fail("pyramid built again"))
    cached = thumbnails.source_image("mosaic", desc)
    np.testing.assert_array_equal(cached.rgb, decoded.rgb)
    np.testing.assert_array_equal(cached.valid, decoded.valid)
    assert cached.bounds == decoded.bounds
    for a, b in zip(basemap.pyramid(cached), levels, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert a.bounds == pytest.approx(b.bounds)
    cached_north = basemap.pyramid(cached, MapProjection.of("north", cached.geographic))
    for a, b in zip(cached_north, north, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_a_changed_source_file_is_decoded_again(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "CACHED_PIXELS", 1)
    desc = write_mosaic(tmp_path / "mosaic.tif")
    fresh_process(monkeypatch)
    first = thumbnails.source_image("mosaic", desc)
    write_mosaic(tmp_path / "mosaic.tif", width=128, height=64)  # same path, new pixels
    fresh_process(monkeypatch)
    assert thumbnails.source_image("mosaic", desc).rgb.shape == (64, 128, 3) != first.rgb.shape


def test_small_sources_are_not_cached(tmp_path, cache_dir, monkeypatch):
    desc = write_mosaic(tmp_path / "mosaic.tif")  # 32 kpx, below CACHED_PIXELS
    fresh_process(monkeypatch)
    assert thumbnails.source_image("mosaic", desc).cache_key is None
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def test_a_demo_build_leaves_its_basemap_decoded(tmp_path, monkeypatch, data_dir):
    from lookalike.indexer.store import open_index
    from lookalike.indexer.tiling import Zone
    from lookalike.workflows.demo import ensure_demo_index

    monkeypatch.setenv("LOOKALIKE_DATA", str(data_dir))
    fresh_process(monkeypatch)
    out = ensure_demo_index(
        "earth", tmp_path / "indexes", progress=False, zones=[Zone.parse("31N")], bbox=(0.0, 40.0, 6.0, 52.0)
    )
    fresh_process(monkeypatch)  # the explorer's first start, in a new process
    monkeypatch.setattr(thumbnails, "_decode", lambda *a: pytest.fail("decoded again"))
    assert thumbnails.basemap_image(open_index(out)).rgb.shape[1] > 4096


def test_a_projected_scene_keeps_its_resolution_along_the_meridian(tmp_path, cache_dir):
    """A square UTM scene at 60 N laid on the lon/lat grid: its rows keep the ground size of its
    columns (equal degrees would halve them: cos 60 = 0.5), so the picture is as fine north-south
    as east-west, and square ground stays square (width x cos(lat) : height)."""
    assert thumbnails.lonlat_grid_shape(100, (0.0, 59.0, 2.0, 61.0), 1 << 20) == (100, 200)
    capped = thumbnails.lonlat_grid_shape(400, (0.0, -1.0, 4.0, 3.0), 10_000)
    assert capped[0] * capped[1] <= 10_000 and abs(capped[0] - capped[1]) <= 1  # reduced alike
    rng = np.random.default_rng(5)
    side, gsd = 200, 10.0
    path = tmp_path / "utm60.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=side, height=side, count=1, dtype="uint8", crs="EPSG:32633",
        transform=from_origin(500000.0 - side * gsd / 2, 6654000.0, gsd, gsd),
    ) as dst:  # fmt: skip
        dst.write(rng.integers(1, 255, (1, side, side), dtype=np.uint8))
    image = thumbnails.source_image("utm60", RasterSource(path, name="utm60").describe())
    rows, cols = image.rgb.shape[:2]
    assert rows >= 0.9 * side and cols >= 0.9 * side
    west, south, east, north = image.bounds
    ground_x = (east - west) / cols * np.cos(np.radians((south + north) / 2))
    assert ground_x == pytest.approx((north - south) / rows, rel=0.02)  # square pixels on the ground
