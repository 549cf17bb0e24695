"""The control-grid resampler: pure functions on arrays, then rasters through RasterSource, against
analytic images on the sphere (across the antimeridian and around both poles) and against GDAL's
warper on the real Mars mosaic."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.transform import from_bounds

from lookalike.indexer.resample import (
    cell_scales,
    control_grid,
    control_positions,
    grid_error,
    resample,
)
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.tiling import TileGrid, Zone, from_zone

MARS = "IAU_2015:49900"


def shifted_grid(width, height, step, du=0.0, dv=0.0, su=1.0, sv=1.0):
    """A control grid for the affine map u = du + su * x, v = dv + sv * y (pixel-centre units)."""
    return control_grid(lambda c, r: (du + su * c, dv + sv * r), width, height, step)


# ------------------------------------------------------------------ pure functions
def test_control_positions_cover_every_pixel():
    assert list(control_positions(10, 4)) == [0, 4, 8, 9]
    assert list(control_positions(9, 4)) == [0, 4, 8]
    assert list(control_positions(1, 16)) == [0]


def test_whole_pixel_shift_reproduces_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)
    gx, gy, u, v = shifted_grid(30, 20, 8, du=5, dv=7)
    out, valid = resample(image, None, gx, gy, u, v, 30, 20)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8 and valid.all()
    np.testing.assert_array_equal(out, np.moveaxis(image[:, 7:27, 5:35], 0, -1))


def test_half_pixel_shift_is_bilinear_and_rounds():
    image = np.zeros((3, 4, 4), np.uint8)
    image[:, :, 1] = 1  # the means of neighbours: 0.5 rounds up, then 0.5 and 100
    image[:, :, 3] = 200
    gx, gy, u, v = shifted_grid(3, 2, 1, du=0.5, dv=1)
    out, _ = resample(image, None, gx, gy, u, v, 3, 2)
    assert out[0, :, 0].tolist() == [1, 1, 100]


def test_signed_integers_round_to_nearest():
    image = np.zeros((3, 2, 4), np.int16)
    image[:, :, 0], image[:, :, 1] = -3, -4  # mean -3.5: rounds to even (-4), never up to -3
    image[:, :, 2], image[:, :, 3] = -1, -2  # -1.5 -> -2
    gx, gy, u, v = shifted_grid(3, 1, 1, du=0.5)
    out, _ = resample(image, None, gx, gy, u, v, 3, 1)
    assert out[0, [0, 2], 0].tolist() == [-4, -2]


def test_downsampling_averages_instead_of_aliasing():
    """A one-pixel checkerboard at a quarter of its resolution is grey, not a moire pattern."""
    board = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[None], 3, axis=0)
    gx, gy, u, v = shifted_grid(60, 60, 16, du=2.0, dv=2.0, su=4.0, sv=4.0)
    out, valid = resample(image, None, gx, gy, u, v, 60, 60)
    assert valid.all() and abs(out.mean() - 127.5) < 2 and out.std() < 4
    scale_u, scale_v = cell_scales(gx, gy, u, v)
    np.testing.assert_allclose(scale_u, 4.0)
    np.testing.assert_allclose(scale_v, 4.0)


def test_masked_pixels_give_no_weight_and_invalidate_outside():
    image = np.full((3, 20, 20), 100, np.uint8)
    image[:, :, :10] = 0  # no-data value on the left half
    mask = np.ones((20, 20), np.float32)
    mask[:, :10] = 0
    gx, gy, u, v = shifted_grid(20, 20, 4, du=0.5, dv=0.5)  # half-pixel shift: edges mix
    out, valid = resample(image, mask, gx, gy, u, v, 20, 20)
    assert not valid[:, :9].any() and valid[:19, 10:19].all()
    assert (out[valid] == 100).all()  # the no-data value never bleeds into valid pixels
    # half beyond the image's edge: the inside half alone; never a wrapped or clamped pixel
    assert (out[:19, 19] == 100).all()


def test_wrapped_source_joins_its_edges():
    image = np.zeros((3, 4, 8), np.uint8)
    image[:, :, 0], image[:, :, 7] = 10, 30
    gx, gy, u, v = shifted_grid(3, 2, 1, du=-0.5, dv=1)  # the first output pixel sits on the seam
    out, valid = resample(image, None, gx, gy, u, v, 3, 2, wrap=True)
    assert valid.all() and out[0, 0, 0] == 20
    out, valid = resample(image, None, gx, gy, u, v, 3, 2, wrap=False)
    assert out[0, 0, 0] == 10  # half of the pixel lies outside: the inside half alone


def test_grid_error_measures_bending():
    def bent(c, r):
        return c + 0.01 * (c - 50.0) ** 2, r

    gx, gy, u, v = control_grid(bent, 100, 10, 32)
    assert grid_error(bent, gx, gy, u, v) > 2.0
    gx, gy, u, v = control_grid(bent, 100, 10, 2)
    assert grid_error(bent, gx, gy, u, v) < 0.02
    gx, gy, u, v = shifted_grid(100, 10, 32, du=3)
    assert grid_error(lambda c, r: (3 + c, r), gx, gy, u, v) < 1e-9

    def failing(c, r):
        return np.where(c > 50, np.inf, c), r

    gx, gy, u, v = control_grid(failing, 100, 10, 32)
    assert grid_error(failing, gx, gy, u, v) == np.inf


# ------------------------------------------------------------------ rasters on the sphere
def sphere_pattern(lon, lat):
    """A smooth RGB pattern of the point on the unit sphere: continuous across 180 and the poles."""
    lon, lat = np.radians(lon), np.radians(lat)
    x, y, z = np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)
    return np.stack([128 + 100 * x, 128 + 100 * y, 128 + 100 * z])


@pytest.fixture(scope="module")
def global_raster(tmp_path_factory):
    """A whole-planet lon/lat raster of Mars (0.25 degree) holding ``sphere_pattern``."""
    width, height = 1440, 720
    lon = -180 + (np.arange(width) + 0.5) * 360 / width
    lat = 90 - (np.arange(height) + 0.5) * 180 / height
    data = sphere_pattern(*np.meshgrid(lon, lat))
    path = tmp_path_factory.mktemp("sphere") / "sphere.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs=pyproj.CRS(MARS).to_wkt(),
        transform=from_bounds(-180, -90, 180, 90, width, height),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as dst:
        dst.write(np.clip(np.rint(data), 0, 255).astype(np.uint8))
    return RasterSource(path)


@pytest.mark.parametrize(
    "zone, centre",
    [
        (Zone(1, "N"), (500_000, 1_500_000)),  # the zone's western edge: across 180
        (Zone(60, "S"), (500_000, 7_000_000)),  # the eastern edge, south
        (Zone(30, "N"), (480_000, 4_900_000)),  # far north in a transverse Mercator zone
        (Zone(0, "N"), (2_000_000, 2_000_000)),  # centred on the north pole
        (Zone(0, "S"), (2_000_000, 2_100_000)),  # next to the south pole
    ],
)
def test_resampled_windows_match_the_sphere(global_raster, zone, centre):
    gsd = 5_000.0
    width = height = 160
    x0, y0 = centre[0] - width / 2 * gsd, centre[1] + height / 2 * gsd
    with global_raster._open() as src:
        from lookalike.indexer.sources import _WindowReader

        pixels, valid = global_raster._window(
            _WindowReader(src, global_raster._meta), zone, x0, y0, gsd, width, height
        )
    assert valid.all()
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    lon, lat = from_zone(global_raster.geographic, zone, x0 + cols * gsd, y0 - rows * gsd)
    error = np.abs(pixels.astype(float) - sphere_pattern(lon, lat))
    # the pattern changes by < 1 level per source pixel; averaging over a footprint adds a little
    assert error.mean() < 0.8 and error.max() < 4


def test_tiles_of_a_projected_polar_raster_match_the_sphere(tmp_path):
    """A projected (polar stereographic) raster of the north cap is cut into UTM and polar tiles
    that agree with the sphere wherever the raster reaches."""
    crs = pyproj.CRS.from_proj4("+proj=stere +lat_0=90 +lon_0=0 +k=1 +x_0=0 +y_0=0 +R=3396190 +units=m")
    size, res = 600, 2_500.0
    xs = (np.arange(size) + 0.5 - size / 2) * res
    x, y = np.meshgrid(xs, -xs)
    lon, lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
    data = np.clip(np.rint(sphere_pattern(lon, lat)), 0, 255).astype(np.uint8)
    path = tmp_path / "cap.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs=crs.to_wkt(),
        transform=from_bounds(
            xs[0] - res / 2, xs[0] - res / 2, -xs[0] + res / 2, -xs[0] + res / 2, size, size
        ),
    ) as dst:
        dst.write(data)
    source = RasterSource(path)
    to_cap = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    grid = TileGrid(64, 64, 5_000.0)
    tiles = list(source.tiles(grid))
    assert {p.zone.label for p, _ in tiles} >= {"UPSN", "1N", "30N", "60N"}
    for place, rgb in tiles:
        x0, y0 = grid.origin(place.row, place.col)
        cols, rows = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
        lon, lat = from_zone(source.geographic, place.zone, x0 + cols * grid.gsd, y0 - rows * grid.gsd)
        sx, sy = to_cap.transform(lon, lat)
        inside = (np.abs(sx) < -xs[0] - res) & (np.abs(sy) < -xs[0] - res)  # where the raster reaches
        error = np.abs(np.moveaxis(rgb, -1, 0).astype(float) - sphere_pattern(lon, lat))[:, inside]
        assert error.mean() < 1.0, place


# ------------------------------------------------------------------ the real mosaic against GDAL
@pytest.mark.parametrize(
    "zone, row", [(Zone(30, "N"), -5), (Zone(30, "N"), -20), (Zone(10, "S"), -55), (Zone(45, "N"), -28)]
)
def test_mars_mosaic_windows_agree_with_gdal(data_dir, zone, row):
    from lookalike.indexer.sources import _WindowReader

    source = RasterSource(data_dir / "mars_8k.jpg", crs=MARS, bounds=(-180, -90, 180, 90))
    grid = TileGrid(128, 64, source.native_gsd)
    width, height = 384, 576
    x0, y0 = 500_000 - width / 2 * grid.gsd, grid.origin(row, 0)[1]
    with source._open() as src:
        ours, ours_valid = source._window(
            _WindowReader(src, source._meta), zone, x0, y0, grid.gsd, width, height
        )
        gdal, gdal_valid = source._warped(src, zone, x0, y0, grid.gsd, width, height)
    assert ours_valid.all() and gdal_valid.all()
    diff = np.abs(ours.astype(int) - gdal.astype(int))
    assert diff.mean() < 0.3 and np.percentile(diff, 99) <= 2
