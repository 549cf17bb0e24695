"""Real products as users bring them: positions in the body's reference (datum shifts included),
the body from the CRS, dates from names and labels, band files stacked into one source, and
sources too small for a tile."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.transform import from_origin

from lookalike.errors import LookalikeError, OptionError, SourceError
from lookalike.indexer.bodies import body_named, body_of_crs, reference_geographic
from lookalike.indexer.product_times import (
    hirise_observation_id,
    naip_time,
    read_sidecar_times,
    time_from_name,
)
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.stacks import stack_name
from lookalike.indexer.tiling import TileGrid, Zone, from_zone

GEOD = pyproj.Geod(ellps="WGS84")
MARS_LOCAL_SPHERE = (
    'PROJCS["Equirectangular Mars",GEOGCS["GCS_Mars",DATUM["D_Mars",SPHEROID["Mars_localRadius",'
    '3389341.08,0]],PRIMEM["Reference_Meridian",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Equirectangular"],PARAMETER["standard_parallel_1",-35.7],'
    'PARAMETER["central_meridian",129.39],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["metre",1]]'
)


def write_raster(path, crs, x0: float, y0: float, gsd: float, pixels: np.ndarray, **tags) -> str:
    """A GeoTIFF of ``pixels`` (H, W) or (C, H, W) with its top-left corner at (x0, y0)."""
    bands = pixels if pixels.ndim == 3 else pixels[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype=bands.dtype,
        crs=crs,
        transform=from_origin(x0, y0, gsd, gsd),
    ) as dst:
        dst.write(bands)
        if tags:
            dst.update_tags(**tags)
    return str(path)


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 90, (height, width), dtype=np.uint8)


# ------------------------------------------------------------------ bodies
@pytest.mark.parametrize(
    "crs, body",
    [
        ("EPSG:28992", "earth"),
        ("EPSG:2056", "earth"),
        ("EPSG:26914", "earth"),
        ("EPSG:32618", "earth"),
        ("IAU_2015:49900", "mars"),
        (MARS_LOCAL_SPHERE, "mars"),
        ("IAU_2015:30100", "moon"),
        ("IAU_2015:19900", "mercury"),
    ],
)
def test_body_comes_from_the_crs(crs, body):
    assert body_of_crs(pyproj.CRS(crs)).key == body


def test_reference_is_wgs84_on_earth_and_the_iau_sphere_elsewhere():
    assert reference_geographic(pyproj.CRS("EPSG:28992")).equals(pyproj.CRS("EPSG:4326"))
    assert reference_geographic(pyproj.CRS(MARS_LOCAL_SPHERE)).equals(pyproj.CRS("IAU_2015:49900"))


def test_an_unknown_body_is_a_clear_error():
    with pytest.raises(OptionError, match="unknown body 'vulcan'"):
        body_named("vulcan")
    assert body_named("Mars").name == "Mars"


# ------------------------------------------------------------------ datums
def blob_position(source: RasterSource, grid: TileGrid) -> tuple[float, float]:
    """Lon/lat of the bright blob, as the index's tiles place it (the brightest pixels' centre)."""
    for place, rgb in source.tiles(grid, min_valid=0.9):
        grey = rgb[..., 0].astype(float)
        rows, cols = np.nonzero(grey > 200)
        if len(rows) and 8 < rows.mean() < grid.size - 8 and 8 < cols.mean() < grid.size - 8:
            x0, y0 = grid.origin(place.row, place.col)
            x = x0 + (cols.mean() + 0.5) * grid.gsd
            y = y0 - (rows.mean() + 0.5) * grid.gsd
            lon, lat = from_zone(pyproj.CRS("EPSG:4326"), place.zone, x, y)
            return float(lon), float(lat)
    raise AssertionError("no tile holds the blob")


@pytest.mark.parametrize(
    "epsg, x0, y0",
    [
        (28992, 155_000.0, 463_000.0),  # RD New (Amersfoort, Bessel 1841), the Netherlands
        (2056, 2_600_000.0, 1_200_000.0),  # LV95 (CH1903+, Bessel 1841), Switzerland
        (31467, 3_500_000.0, 5_500_000.0),  # DHDN / Gauss-Kruger zone 3, Germany
    ],
)
def test_national_grid_on_another_datum_is_placed_in_wgs84(tmp_path, epsg, x0, y0):
    gsd, size = 0.25, 512
    pixels = textured(size, size)
    pixels[250:256, 300:306] = 250  # a bright blob, centre at pixel (253, 303)
    path = write_raster(tmp_path / "grid.tif", f"EPSG:{epsg}", x0, y0, gsd, pixels)
    source = RasterSource(path)
    assert source.body_key == "earth" and source.geographic.equals(pyproj.CRS("EPSG:4326"))
    got = blob_position(source, TileGrid(128, 64, gsd))
    to_wgs84 = pyproj.Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    want = to_wgs84.transform(x0 + 303 * gsd, y0 - 253 * gsd)
    _, _, off = GEOD.inv(*got, *want)
    assert off < 1.0, f"{off:.2f} m from PROJ's best transformation"
    # the source datum's own lon/lat (what an index gave before) are tens of metres away
    own = pyproj.Transformer.from_crs(f"EPSG:{epsg}", pyproj.CRS(f"EPSG:{epsg}").geodetic_crs, always_xy=True)
    _, _, naive = GEOD.inv(*own.transform(x0 + 303 * gsd, y0 - 253 * gsd), *want)
    assert naive > 20.0


def test_wgs84_bounds_come_through_the_datum_shift(tmp_path):
    path = write_raster(tmp_path / "rd.tif", "EPSG:28992", 155_000.0, 463_000.0, 1.0, textured(200, 300))
    west, south, east, north = RasterSource(path).lonlat_bounds
    to_wgs84 = pyproj.Transformer.from_crs("EPSG:28992", "EPSG:4326", always_xy=True)
    want = to_wgs84.transform_bounds(155_000.0, 462_800.0, 155_300.0, 463_000.0, densify_pts=21)
    assert np.allclose((west, south, east, north), want, atol=1e-7)


# ------------------------------------------------------------------ dates
def test_dates_in_product_names():
    assert naip_time("m_4709963_se_14_1_20090818.tif") == "20090818"
    assert naip_time("scene_20090818.tif") is None
    assert hirise_observation_id("ESP_014038_1415_RED0.30421_33069.before.cub") == "ESP_014038_1415"
    assert hirise_observation_id("no_change.cub", "Group = ... ESP_012024_1440_RED8_0") == "ESP_012024_1440"
    assert hirise_observation_id("XESP_014038_1415.cub", "") is None
    assert str(time_from_name("/x/S2A_20210630T101031.tif", r"_(\d{8})T").date()) == "2021-06-30"
    assert time_from_name("a.tif", r"(?P<time>\d{4}-\d\d-\d\d)") is None
    with pytest.raises(OptionError, match="not a regular expression"):
        time_from_name("a.tif", "(")


def test_sidecar_times(tmp_path):
    csv = tmp_path / "times.csv"
    csv.write_text("source,time\n/data/a.tif,2019-09-04\nb.tif,2020-08-31T10:00:00Z\n")
    times = read_sidecar_times(csv)
    assert str(times["a.tif"].date()) == "2019-09-04" and times["b.tif"].hour == 10
    csv.write_text("file,date\na.tif,2019\n")
    with pytest.raises(SourceError, match="needs the columns source,time"):
        read_sidecar_times(csv)


def test_tags_come_before_names_and_the_option_before_both(tmp_path):
    path = write_raster(
        tmp_path / "m_4709963_se_14_1_20090818.tif",
        "EPSG:26914",
        500_000.0,
        5_200_000.0,
        5.0,
        textured(64, 64),
        TIFFTAG_DATETIME="2011:05:06 10:00:00",
    )
    assert str(RasterSource(path).acquired.date()) == "2011-05-06"
    assert str(RasterSource(path, time="2012-01-02").acquired.date()) == "2012-01-02"
    bare = write_raster(
        tmp_path / "m_4709963_se_14_1_20090818b.tif",
        "EPSG:26914",
        500_000.0,
        5_200_000.0,
        5.0,
        textured(64, 64),
    )
    assert RasterSource(bare).acquired is None  # not a NAIP name: the date must end it


# ------------------------------------------------------------------ stacks
def test_band_files_stack_in_the_order_given_whatever_their_names(tmp_path):
    paths = []
    for i, value in enumerate((30, 120, 210)):  # GeoTIFFs named like JPEG 2000 files
        band = np.full((256, 256), value, np.uint16) + textured(256, 256, seed=i).astype(np.uint16)
        paths.append(
            write_raster(tmp_path / f"s2_B0{4 - i}.jp2", "EPSG:32618", 300_000.0, 4_200_000.0, 10.0, band)
        )
    source = RasterSource(paths[0], stack=tuple(paths))
    assert source.name == "s2_B04+B03+B02"
    _, rgb = next(iter(source.tiles(TileGrid(128, 64, 10.0))))
    red, green, blue = (rgb[..., b].astype(float).mean() for b in range(3))
    assert red < green < blue  # band i of the stack is file i; one stretch keeps their order
    reopened = RasterSource.from_description(source.name, source.describe())
    assert reopened.stack == source.stack


def test_a_stack_refuses_files_of_other_ground(tmp_path):
    a = write_raster(tmp_path / "a.tif", "EPSG:32618", 300_000.0, 4_200_000.0, 10.0, textured(64, 64))
    b = write_raster(tmp_path / "b.tif", "EPSG:32618", 310_000.0, 4_200_000.0, 10.0, textured(64, 64))
    c = write_raster(tmp_path / "c.tif", "EPSG:32617", 300_000.0, 4_200_000.0, 10.0, textured(64, 64))
    with pytest.raises(SourceError, match="same ground"):
        RasterSource(a, stack=(a, b))
    with pytest.raises(SourceError, match="share a CRS"):
        RasterSource(a, stack=(a, c))


def test_stack_names():
    assert stack_name(["x/l8_B4.tif", "x/l8_B3.tif", "x/l8_B2.tif"]) == "l8_B4+B3+B2"
    assert stack_name(["red.tif", "green.tif"]) == "red+green"


# ------------------------------------------------------------------ small sources
def test_a_source_smaller_than_a_tile_is_an_error(tmp_path):
    path = write_raster(tmp_path / "crop.tif", "EPSG:32618", 300_000.0, 4_200_000.0, 1.0, textured(50, 50))
    with pytest.raises(LookalikeError, match="smaller than one tile: 50x50 px"):
        list(RasterSource(path).tiles(TileGrid(128, 64, 1.0)))
    assert list(RasterSource(path).tiles(TileGrid(32, 16, 1.0)))  # smaller tiles fit


def test_zone_of_a_placed_blob_is_its_own():
    assert Zone.at(5.39, 52.15).label == "31N"
