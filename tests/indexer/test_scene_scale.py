"""Scenes read at a coarser ground scale (landmarks at the scale a classifier learned from), and
the ground scale of a raster measured on its body."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from lookalike.errors import LookalikeError, SourceError
from lookalike.indexer.scenes import RasterScene, ground_scale_m
from lookalike.indexer.sources import RasterSource
from lookalike.workflows.landmarks import SCALE_SLACK, ground_scale_for, scale_factor


def write(path, crs: str, x0: float, y0: float, gsd: float, data: np.ndarray, nodata=None) -> str:
    profile = dict(
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        transform=from_origin(x0, y0, gsd, gsd),
        crs=CRS.from_wkt(pyproj.CRS(crs).to_wkt()),
        nodata=nodata,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[None])
    return str(path)


@pytest.fixture
def ramp(tmp_path) -> tuple[str, np.ndarray]:
    data = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    return write(tmp_path / "ramp.tif", "EPSG:32633", 500000.0, 5.0e6, 0.5, data), data


def test_a_factor_reads_block_means_in_coarser_pixels(ramp):
    path, data = ramp
    source = RasterSource(path)
    with RasterScene(source, factor=4) as scene:
        assert scene.shape == scene.raster_shape == (16, 12) and scene.offset == (0, 0)
        gray, valid = scene.read(0, 16, 0, 12)
        assert valid.all()
        np.testing.assert_allclose(gray, data.reshape(16, 4, 12, 4).mean(axis=(1, 3)), rtol=1e-6)
        assert scene.transform.a == pytest.approx(2.0) and scene.transform.e == pytest.approx(-2.0)
        assert scene.transform.c == pytest.approx(500000.0)
    # a window is given in the raster's own pixels, and kept in the coarser ones
    with RasterScene(source, window=(8, 16, 40, 48), factor=4) as scene:
        assert scene.offset == (2, 4) and scene.shape == (8, 8)
        gray, _ = scene.read(0, 2, 0, 2)
        np.testing.assert_allclose(gray, data[16:24, 8:16].reshape(2, 4, 2, 4).mean(axis=(1, 3)), rtol=1e-6)
    with RasterScene(source) as scene:  # factor 1: the raster's own pixels, unchanged
        np.testing.assert_array_equal(scene.read(3, 9, 2, 7)[0], data[3:9, 2:7])


def test_nodata_stays_invalid_when_read_coarser(tmp_path):
    data = np.full((32, 32), 50.0, np.float32)
    data[:, :16] = -9999.0
    source = RasterSource(write(tmp_path / "half.tif", "EPSG:32633", 5e5, 5e6, 1.0, data, nodata=-9999.0))
    with RasterScene(source, factor=2) as scene:
        gray, valid = scene.read(0, 16, 0, 16)
        assert not valid[:, :8].any() and valid[:, 8:].all()
        assert np.allclose(gray[valid], 50.0)


def test_a_scene_is_never_read_finer_than_its_pixels(ramp):
    with pytest.raises(SourceError, match="coarser"):
        RasterScene(RasterSource(ramp[0]), factor=0.5)


def test_ground_scale_on_earth_and_on_mars(tmp_path, ramp):
    # UTM: the pixel size, within the projection's scale factor near the central meridian
    assert ground_scale_m(RasterSource(ramp[0])) == pytest.approx(0.5, rel=1e-3)
    # lon/lat degrees on the Mars sphere (IAU_2015:49900, R = 3,396,190 m) at 60 S
    deg = 1e-4
    path = write(tmp_path / "mars.tif", "IAU_2015:49900", 10.0, -60.0, deg, np.zeros((8, 8), np.uint8))
    side = np.radians(deg) * 3_396_190.0
    expected = np.sqrt(side * side * np.cos(np.radians(-60.0 - 4 * deg)))
    assert ground_scale_m(RasterSource(path)) == pytest.approx(expected, rel=1e-3)


def test_which_scale_and_factor(ramp):
    source = RasterSource(ramp[0])  # 0.5 m/px
    assert ground_scale_for("auto", "hirise") == pytest.approx(5.7)
    assert ground_scale_for("auto", "my_model.npz") is None  # a model of its own: scenes as they are
    assert ground_scale_for("native", "hirise") is None and ground_scale_for("2.5", "hirise") == 2.5
    for bad in ("fine", "0", "-1"):
        with pytest.raises(LookalikeError, match="ground scale"):
            ground_scale_for(bad, "hirise")
    assert scale_factor(source, None) == 1.0
    assert scale_factor(source, 5.0) == pytest.approx(10.0, rel=1e-3)
    assert scale_factor(source, 0.5 * SCALE_SLACK * 0.99) == 1.0  # about as fine already
    assert scale_factor(source, 0.1) == 1.0  # finer than the raster: never enlarged
