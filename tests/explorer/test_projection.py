"""Map views: the polar projections agree with cartopy, invert, and drawn shapes become lon/lat
polygons that hold what was drawn (the pole, or both sides of 180 degrees)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely

from lookalike.explorer.projection import MapProjection
from lookalike.indexer.thumbnails import SourceImage

MARS = pyproj.CRS("IAU_2015:49900")


@pytest.mark.parametrize("view", ["north", "south"])
def test_polar_views_match_cartopy_and_invert(view):
    proj = MapProjection.of(view, MARS)
    rng = np.random.default_rng(0)
    lon = rng.uniform(-180, 180, 500)
    lat = proj.sign * rng.uniform(40, 90, 500)
    x, y = proj.forward(lon, lat)
    ref = proj.crs.transform_points(proj.lonlat_crs, lon, lat)
    np.testing.assert_allclose(x, ref[:, 0], atol=1e-3)
    np.testing.assert_allclose(y, ref[:, 1], atol=1e-3)
    back_lon, back_lat = proj.inverse(x, y)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    far = np.abs(lat) < 89.9999
    np.testing.assert_allclose(((back_lon - lon + 180) % 360 - 180)[far], 0, atol=1e-7)
    x0, y0, x1, y1 = proj.extent
    edge_lon, edge_lat = proj.inverse(x1, 0.0)
    assert float(abs(edge_lat)) == pytest.approx(55.0)


def test_global_view_is_lon_lat():
    proj = MapProjection.of("global", MARS)
    np.testing.assert_array_equal(np.ravel(proj.forward([10.0], [20.0])), [10.0, 20.0])
    assert proj.extent == (-180.0, -90.0, 180.0, 90.0)
    with pytest.raises(ValueError):
        MapProjection("sideways")


@pytest.mark.parametrize("view", ["north", "south"])
def test_box_drawn_around_the_pole_is_one_polygon_holding_it(view):
    proj = MapProjection.of(view, MARS)
    half = abs(float(proj.forward(90.0, proj.sign * 80.0)[0]))
    parts = proj.ring_to_lonlat([-half, half, half, -half], [-half / 2, -half / 2, half, half])
    assert len(parts) == 1
    polygon = shapely.Polygon(parts[0])
    assert polygon.is_valid
    assert polygon.contains(shapely.Point(33.0, proj.sign * 89.5))
    # a place inside the drawn box in the view is inside the polygon on the planet, and outside
    rng = np.random.default_rng(1)
    px, py = rng.uniform(-2 * half, 2 * half, (2, 2000))
    inside_view = (np.abs(px) < half) & (py > -half / 2) & (py < half)
    lon, lat = proj.inverse(px, py)
    inside = shapely.contains_xy(polygon, lon, lat)
    assert (inside == inside_view).mean() > 0.99  # edges densified: only hairline differences


def test_box_drawn_across_180_away_from_the_pole_is_cut_in_two():
    proj = MapProjection.of("north", MARS)
    x, y = proj.forward(np.array([170.0, -170.0, -170.0, 170.0]), np.array([70.0, 70.0, 75.0, 75.0]))
    parts = proj.ring_to_lonlat(x, y)
    assert len(parts) == 2
    polygons = [shapely.Polygon(p) for p in parts]
    assert all(p.is_valid for p in polygons)
    assert any(p.contains(shapely.Point(175.0, 72.5)) for p in polygons)
    assert any(p.contains(shapely.Point(-175.0, 72.5)) for p in polygons)
    assert not any(p.contains(shapely.Point(0.0, 72.5)) for p in polygons)


def test_polar_basemap_samples_the_lonlat_image():
    """Each pixel of the polar image is the lon/lat image's colour at that place."""
    h, w = 90, 180
    lat = 90.0 - (np.arange(h) + 0.5) * 2
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.clip((np.abs(lat)[:, None] - 40) * 5, 0, 255)  # red grows towards the poles
    rgb[..., 1] = (np.arange(w) * 255 // w)[None, :]  # green grows eastwards
    image = SourceImage("t", rgb, np.ones((h, w), bool), (-180.0, -90.0, 180.0, 90.0), MARS)
    proj = MapProjection.of("north", MARS)
    out = proj.projected_image(image, pixels=64)
    assert out.shape == (64, 64, 3)
    assert out[32, 32, 0] > 240  # the pole, in the middle
    assert out[32, 0, 0] < out[32, 16, 0] < out[32, 32, 0]


def test_basemap_view_is_resampled_from_the_right_pyramid_level():
    """A box of the basemap comes from the coarsest level that still has a pixel per output
    pixel, at the right place; outside the image it is black."""
    from lookalike.explorer import basemap

    h, w = 512, 1024
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = (np.arange(w) * 255 // w)[None, :]  # red grows eastwards
    rgb[..., 1] = (np.arange(h) * 255 // h)[:, None]  # green grows southwards
    levels = [
        basemap.Level(rgb, (-180.0, -90.0, 180.0, 90.0)),
        basemap.Level(rgb[::2, ::2].copy(), (-180.0, -90.0, 180.0, 90.0)),
    ]
    whole = basemap.render_view(levels, -180.0, -90.0, 180.0, 90.0, 512, 256)  # the coarse level itself
    np.testing.assert_array_equal(whole, levels[1].pixels)
    east = basemap.render_view(levels, 0.0, -90.0, 180.0, 90.0, 512, 512)  # the fine level's east half
    assert abs(int(east[:, 0, 0].mean()) - 128) <= 2 and east[:, -1, 0].mean() > 250
    past = basemap.render_view(levels, 90.0, 0.0, 270.0, 90.0, 200, 100)  # half of it east of 180
    assert past[:, 120:].max() == 0 and past[:, :95, 0].min() > 0


@pytest.mark.parametrize("shape", [(2, 2, 3), (7, 9, 3), (64, 130, 3), (5, 4, 1)])
def test_halving_is_the_rounded_mean_of_each_2x2_block(shape):
    """The pyramid's integer 2 x 2 mean equals the float mean rounded half to even, ties included,
    and drops an odd last row or column."""
    from lookalike.explorer.basemap import halve

    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, shape, dtype=np.uint8)
    rgb[:2, :2] = [[[0], [1]], [[0], [1]]]  # a block summing to 2: a tie, rounded to 0 (even)
    h2, w2 = shape[0] // 2 * 2, shape[1] // 2 * 2
    expected = rgb[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2, shape[2]).mean(axis=(1, 3)).round()
    out = halve(rgb)
    assert out.dtype == np.uint8 and out.shape == (shape[0] // 2, shape[1] // 2, shape[2])
    assert np.array_equal(out, expected.astype(np.uint8))
    assert out[0, 0, 0] == 0
    assert halve(np.full((2, 2, 3), 255, np.uint8)).tolist() == [[[255, 255, 255]]]


def _tiles(lons, lats, half: float) -> pd.DataFrame:
    lons, lats = np.asarray(lons, float), np.asarray(lats, float)
    columns = dict(lon=lons, lat=lats)
    for i, (dx, dy) in enumerate(((-1, -1), (1, -1), (1, 1), (-1, 1))):
        columns[f"lon{i}"], columns[f"lat{i}"] = lons + dx * half, lats + dy * half
    return pd.DataFrame(columns)


def test_density_grid_has_cells_of_a_tile_but_not_far_more_cells_than_tiles():
    from lookalike.explorer.projection import DENSITY_CELLS_PER_TILE, MIN_DENSITY_CELLS, density_grid

    # one scene: cells of a tile (0.01 degrees) over its 30 x 20 tiles
    lon, lat = np.meshgrid(np.arange(30) * 0.01, np.arange(20) * 0.01)
    bounds, nx, ny = density_grid(_tiles(lon.ravel(), lat.ravel(), 0.005))
    assert (nx, ny) == (32, 22) and bounds[0] == pytest.approx(-0.01)
    # two such scenes far apart: not a 512 x 322 grid (660 kB) sent for 1,200 tiles, but coarser
    two = _tiles(np.r_[lon.ravel(), lon.ravel() + 200.0], np.r_[lat.ravel(), lat.ravel() - 3.0], 0.005)
    _, nx, ny = density_grid(two)
    assert nx * ny <= max(MIN_DENSITY_CELLS, DENSITY_CELLS_PER_TILE * len(two)) and nx > ny >= 1
    assert nx * ny >= 0.5 * max(MIN_DENSITY_CELLS, DENSITY_CELLS_PER_TILE * len(two))
