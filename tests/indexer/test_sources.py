"""Sources: synthetic GeoTIFFs through RasterSource.tiles, errors, acquisition times, labels CSVs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from lookalike.errors import SourceError
from lookalike.indexer.image_folders import read_labels
from lookalike.indexer.sources import RasterSource, parse_time
from lookalike.indexer.tiling import TileGrid, Zone

# A 320 x 320 px UTM 33N raster at 10 m whose corner sits on the tile grid (a multiple of
# stride * gsd = 640 m), so 64 px tiles with stride 64 are exactly its 5 x 5 pixel blocks.
GSD, TILE = 10.0, 64
X0, Y0 = 781 * 640.0, 7812 * 640.0  # about 15.0 E, 45.0 N
ROW0, COL0 = -7812, 781  # grid row/col of the raster's top-left block (y = -row * step)
GRID = TileGrid(TILE, TILE, GSD)


def write_tif(path, data, crs="EPSG:32633", transform=None, nodata=None, tags=None, **profile):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    kwargs = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        transform=transform or from_origin(X0, Y0, GSD, GSD),
    )
    if crs is not None:
        kwargs["crs"] = crs
    if nodata is not None:
        kwargs["nodata"] = nodata
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


def noise(rng, shape, dtype=np.uint8, lo=1, hi=255):
    return rng.integers(lo, hi, size=shape).astype(dtype)


@pytest.fixture
def scene(tmp_path):
    """3-band uint8 scene: no-data left, one blank block, one block mostly no-data."""
    rng = np.random.default_rng(0)
    data = noise(rng, (3, 320, 320))
    data[:, :, :128] = 0  # block columns 0-1: no-data
    data[:, 0:64, 128:192] = 77  # block (0, 2): valid but one constant colour
    data[:, 256:320, 128:168] = 0  # block (4, 2): 40 of 64 columns no-data -> 37.5 % valid
    data[:, 192:256, 128:148] = 0  # block (3, 2): 20 of 64 columns no-data -> 69 % valid
    return write_tif(tmp_path / "scene.tif", data, nodata=0), data


def blocks(tiles):
    return {(p.row - ROW0, p.col - COL0): rgb for p, rgb in tiles}


def test_tiles_skip_nodata_and_blank(scene):
    path, data = scene
    src = RasterSource(path)
    assert src.native_gsd == pytest.approx(GSD)
    got = blocks(src.tiles(GRID))
    expected = {(r, c) for r in range(5) for c in range(2, 5)} - {(0, 2), (4, 2)}
    assert set(got) == expected
    for (r, c), rgb in got.items():
        assert rgb.shape == (TILE, TILE, 3) and rgb.dtype == np.uint8
        want = np.moveaxis(data[:, r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64], 0, -1)
        valid = want.any(axis=-1)
        # same grid, same CRS: the warp should reproduce the pixels
        assert np.abs(rgb[valid].astype(int) - want[valid]).mean() < 1.0


def test_min_valid_threshold(scene):
    path, _ = scene
    src = RasterSource(path)
    strict = set(blocks(src.tiles(GRID, min_valid=0.9)))
    assert (3, 2) not in strict and (1, 3) in strict
    loose = set(blocks(src.tiles(GRID, min_valid=0.3)))
    assert (4, 2) in loose


def test_tile_places_and_zone_filter(scene):
    path, _ = scene
    src = RasterSource(path)
    places = [p for p, _ in src.tiles(GRID)]
    assert {p.zone.label for p in places} == {"33N"}
    for p in places:
        cx, cy = GRID.centre(p.row, p.col)
        assert X0 < cx < X0 + 320 * GSD and Y0 - 320 * GSD < cy < Y0
    assert list(src.tiles(GRID, zones=[Zone(32, "N")])) == []
    w, s, e, n = src.lonlat_bounds
    assert 14.9 < w < e < 15.1 and 44.9 < s < n < 45.2


def test_tile_ids_stable_for_a_cropped_raster(tmp_path, scene):
    """A sub-window of the scene written as its own file yields the same tiles, same pixels."""
    from lookalike.indexer.build import tile_record

    path, data = scene
    crop = write_tif(
        tmp_path / "crop.tif",
        data[:, 64:256, 192:320],
        nodata=0,
        transform=from_origin(X0 + 192 * GSD, Y0 - 64 * GSD, GSD, GSD),
    )
    full = RasterSource(path, name="scene")
    part = RasterSource(crop, name="scene")
    a = {tile_record(full, GRID, p)["tile_id"]: rgb for p, rgb in full.tiles(GRID)}
    b = {tile_record(part, GRID, p)["tile_id"]: rgb for p, rgb in part.tiles(GRID)}
    assert len(b) == 6 and set(b) <= set(a)
    for tile_id, rgb in b.items():
        np.testing.assert_array_equal(rgb, a[tile_id])


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_band_counts_give_rgb_uint8(tmp_path, bands):
    rng = np.random.default_rng(bands)
    data = noise(rng, (bands, 128, 128))
    src = RasterSource(write_tif(tmp_path / f"b{bands}.tif", data))
    tiles = list(src.tiles(GRID))
    assert len(tiles) == 4
    for p, rgb in tiles:
        assert rgb.shape == (TILE, TILE, 3) and rgb.dtype == np.uint8
        r, c = p.row - ROW0, p.col - COL0
        block = data[:, r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64]
        if bands == 1:
            assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
            want = np.repeat(block[0][..., None], 3, axis=-1)
        else:  # RGB, and RGBA / 4 bands use bands 1-3
            want = np.moveaxis(block[:3], 0, -1)
        assert np.abs(rgb.astype(int) - want).mean() < 1.0


def test_bands_option_picks_false_colour(tmp_path):
    rng = np.random.default_rng(5)
    data = noise(rng, (4, 64, 64))
    src = RasterSource(write_tif(tmp_path / "b4.tif", data), bands=(4, 3, 2))
    ((p, rgb),) = list(src.tiles(GRID))
    assert np.abs(rgb.astype(int) - np.moveaxis(data[[3, 2, 1]], 0, -1)).mean() < 1.0
    with pytest.raises(SourceError, match="bands"):
        RasterSource(tmp_path / "b4.tif", bands=(1, 2, 5))


def test_four_band_without_alpha_masks_outside_pixels(tmp_path):
    """A 4-band raster whose 4th band is not alpha (e.g. RGB + NIR) still gets a valid mask."""
    rng = np.random.default_rng(6)
    data = noise(rng, (4, 64, 80))  # block (0, 1) has 16 of 64 columns inside the raster
    path = write_tif(tmp_path / "rgbn.tif", data, photometric="MINISBLACK")
    with rasterio.open(path) as src:
        assert 6 not in [c.value for c in src.colorinterp]  # no alpha band
    got = blocks(RasterSource(path).tiles(GRID))
    assert set(got) == {(0, 0)}
    assert set(blocks(RasterSource(path).tiles(GRID, min_valid=0.2))) == {(0, 0), (0, 1)}


def test_rgba_alpha_is_the_valid_mask(tmp_path):
    rng = np.random.default_rng(8)
    data = noise(rng, (4, 64, 128))
    data[3] = 255
    data[3, :, 64:] = 0  # block (0, 1) transparent
    got = blocks(RasterSource(write_tif(tmp_path / "rgba.tif", data)).tiles(GRID))
    assert set(got) == {(0, 0)}


def test_uint16_is_stretched_to_uint8(tmp_path):
    rng = np.random.default_rng(16)
    data = rng.integers(1000, 40000, size=(1, 128, 128)).astype(np.uint16)
    src = RasterSource(write_tif(tmp_path / "u16.tif", data))
    tiles = list(src.tiles(GRID))
    assert len(tiles) == 4
    values, grey = [], []
    for p, rgb in tiles:
        assert rgb.shape == (TILE, TILE, 3) and rgb.dtype == np.uint8
        r, c = p.row - ROW0, p.col - COL0
        values.append(data[0, r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64].ravel())
        grey.append(rgb[..., 0].ravel())
    values, grey = np.concatenate(values), np.concatenate(grey)
    # a 2-98 % stretch uses the whole 8-bit range and keeps the order of values
    assert grey.min() == 0 and grey.max() == 255
    assert 0.01 < (grey == 0).mean() < 0.05 and 0.01 < (grey == 255).mean() < 0.05
    order = np.argsort(values, kind="stable")
    assert (np.diff(grey[order].astype(int)) >= -1).all()


def test_geographic_raster(tmp_path):
    """An EPSG:4326 raster tiles into UTM zones; gsd is derived from degrees."""
    rng = np.random.default_rng(7)
    data = noise(rng, (3, 200, 300))
    path = write_tif(
        tmp_path / "geo.tif", data, crs="EPSG:4326", transform=from_origin(11.0, 46.0, 0.01, 0.01)
    )
    src = RasterSource(path)
    assert src.native_gsd == pytest.approx(0.01 * np.pi / 180 * 6_378_137.0)
    grid = TileGrid(32, 32, 2000.0)
    tiles = list(src.tiles(grid))
    zones = {p.zone.label for p, _ in tiles}
    assert zones == {"32N", "33N"}  # 11-14 E straddles 12 E
    for p, rgb in tiles:
        assert rgb.shape == (32, 32, 3)
        assert 11.0 <= p.lon <= 14.0 and 44.0 <= p.lat <= 46.0


def test_raster_without_crs(tmp_path):
    path = write_tif(tmp_path / "nocrs.tif", np.full((1, 64, 64), 5, np.uint8), crs=None)
    with pytest.raises(SourceError) as err:
        RasterSource(path)
    msg = str(err.value)
    assert "no CRS" in msg and "--crs" in msg and "nocrs.tif" in msg
    # and the override makes it usable
    assert RasterSource(path, crs="EPSG:32633").geographic.is_geographic


def test_raster_without_transform_needs_bounds(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    Image.fromarray(noise(rng, (90, 180, 3))).save(tmp_path / "world.png")
    with pytest.raises(SourceError, match="--bounds"):
        RasterSource(tmp_path / "world.png", crs="EPSG:4326")
    src = RasterSource(tmp_path / "world.png", crs="EPSG:4326", bounds=(-180, -90, 180, 90))
    assert src.lonlat_bounds == pytest.approx((-180, -90, 180, 90))


@pytest.mark.parametrize("content", [b"", b"not a raster at all\n" * 50, bytes(range(256)) * 8])
def test_garbage_file_raises_source_error(tmp_path, content):
    path = tmp_path / "garbage.tif"
    path.write_bytes(content)
    with pytest.raises(SourceError, match="garbage.tif"):
        RasterSource(path)


def test_missing_file_raises_source_error(tmp_path):
    with pytest.raises(SourceError, match="nope.tif"):
        RasterSource(tmp_path / "nope.tif")


def test_acquisition_time_from_tiff_tag_and_override(tmp_path):
    data = np.full((1, 64, 64), 9, np.uint8)
    tagged = write_tif(tmp_path / "t.tif", data, tags={"TIFFTAG_DATETIME": "2021:06:30 10:20:30"})
    with rasterio.open(tagged) as src:  # really stored in the file
        assert src.tags()["TIFFTAG_DATETIME"] == "2021:06:30 10:20:30"
    assert RasterSource(tagged).acquired == pd.Timestamp("2021-06-30T10:20:30Z")
    assert RasterSource(tagged, time="2019-01-02T03:04:05+02:00").acquired == pd.Timestamp(
        "2019-01-02T01:04:05Z"
    )
    untagged = write_tif(tmp_path / "u.tif", data)
    assert RasterSource(untagged).acquired is None
    assert RasterSource(untagged, time="2020-05-06").acquired == pd.Timestamp("2020-05-06", tz="UTC")
    with pytest.raises(SourceError, match="acquisition time"):
        RasterSource(untagged, time="last tuesday")


def test_parse_time():
    assert parse_time(None) is None and parse_time("  ") is None
    assert parse_time("2004:01:24 05:06:07") == pd.Timestamp("2004-01-24 05:06:07", tz="UTC")
    assert parse_time("2004-01-24T05:06:07-05:00") == pd.Timestamp("2004-01-24 10:06:07", tz="UTC")


def test_one_reading_of_times_for_sources_filters_and_footprints():
    """``data.times.utc_timestamp`` reads every time; each caller names its own error."""
    from lookalike.data.times import utc_timestamp
    from lookalike.errors import LookalikeError

    assert utc_timestamp(pd.Timestamp("2021-06-30")) == pd.Timestamp("2021-06-30", tz="UTC")
    assert utc_timestamp("2021-06-30T02:00+02:00") == pd.Timestamp("2021-06-30", tz="UTC")
    for bad in ("yesterday", "NaT", "2021-13-45"):
        with pytest.raises(LookalikeError, match="use ISO 8601"):
            utc_timestamp(bad)
    with pytest.raises(SourceError, match="acquisition time"):
        parse_time("soon")


def test_describe_round_trip(scene):
    path, _ = scene
    src = RasterSource(path, name="s", time="2020-01-01")
    again = RasterSource.from_description("s", src.describe())
    assert again.lonlat_bounds == pytest.approx(src.lonlat_bounds)
    assert again.acquired == src.acquired and again.native_gsd == src.native_gsd
    p, rgb = next(iter(src.tiles(GRID)))
    np.testing.assert_array_equal(again.read_tile(p.zone, GRID, p.row, p.col), rgb)


# ------------------------------------------------------------------ labels CSV
@pytest.fixture
def chips(tmp_path):
    root = tmp_path / "chips"
    root.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (root / name).write_bytes(b"x")
    return root


def test_read_labels_ok(chips, tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("path,label,split,extra\na.jpg,crater,train,1\nb.jpg,dune,val,2\nc.jpg,crater,train,3\n")
    table = read_labels(chips, csv)
    assert list(table["path"]) == ["a.jpg", "b.jpg", "c.jpg"] and "extra" in table
    train = read_labels(chips, csv, split="train")
    assert list(train["path"]) == ["a.jpg", "c.jpg"] and list(train.index) == [0, 1]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("path,label,split\n", "no rows"),
        ("path,split\na.jpg,train\n", "label"),
        ("file,label\na.jpg,crater\n", "path"),
    ],
)
def test_read_labels_bad_csv(chips, tmp_path, text, needle):
    csv = tmp_path / "l.csv"
    csv.write_text(text)
    with pytest.raises(SourceError, match=needle) as err:
        read_labels(chips, csv)
    assert "l.csv" in str(err.value)


def test_read_labels_unknown_split(chips, tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("path,label,split\na.jpg,crater,train\nb.jpg,dune,val\n")
    with pytest.raises(SourceError, match="'test'") as err:
        read_labels(chips, csv, split="test")
    assert "train" in str(err.value) and "val" in str(err.value)  # lists the splits there are
    nosplit = tmp_path / "n.csv"
    nosplit.write_text("path,label\na.jpg,crater\n")
    with pytest.raises(SourceError, match="split"):
        read_labels(chips, nosplit, split="train")


def test_read_labels_missing_files(chips, tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("path,label\na.jpg,crater\nghost1.jpg,dune\nb.jpg,x\nsub/ghost2.jpg,y\n")
    with pytest.raises(SourceError) as err:
        read_labels(chips, csv)
    msg = str(err.value)
    assert "2 row(s)" in msg and "ghost1.jpg" in msg and "sub/ghost2.jpg" in msg
    assert "a.jpg" not in msg.split(":")[-1]
    assert len(read_labels(chips, csv, check_files=False)) == 4


def test_read_labels_missing_csv(chips, tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read_labels(chips, tmp_path / "absent.csv")


@pytest.mark.parametrize("crs, radius", [("EPSG:4326", 6_378_137.0), ("IAU_2015:49900", 3_396_190.0)])
@pytest.mark.parametrize("hemisphere", ["N", "S"])
def test_a_global_raster_is_tiled_to_the_pole_without_gaps(tmp_path, crs, radius, hemisphere):
    """A whole-planet raster gets tiles in the 6-degree zones and in the polar cap, and every
    point poleward of 76 degrees, the pole and the seam with the cap (84 N, 80 S) included, lies
    in a tile that holds it in its own zone's projection."""
    from lookalike.indexer.locate import tiles_under
    from lookalike.indexer.tiling import to_zone

    rng = np.random.default_rng(3)
    data = noise(rng, (3, 1440, 2880))
    path = write_tif(tmp_path / "world.tif", data, crs=crs, transform=from_origin(-180.0, 90.0, 0.125, 0.125))
    src = RasterSource(path)
    sign = 1.0 if hemisphere == "N" else -1.0
    band = (-180.0, 76.0, 180.0, 90.0) if sign > 0 else (-180.0, -90.0, 180.0, -76.0)
    # tiles of 0.4 degrees, half-overlapping: their stride is well under the width of a
    # 6-degree zone at the seam (70 km on Earth)
    grid = TileGrid(32, 16, radius * np.radians(0.4) / 32)
    places = [p for p, _ in src.tiles(grid, bbox=band)]
    zones = {p.zone.label for p in places}
    assert f"UPS{hemisphere}" in zones and len(zones) == 61
    lat = np.array([p.lat for p in places])
    assert (sign * lat).max() > 89.8
    for p in places:
        assert Zone.at(p.lon, p.lat) == p.zone
    tiles = pd.DataFrame(
        {
            "lon": [p.lon for p in places],
            "lat": lat,
            **{f"lon{i}": [p.corners_lon[i] for p in places] for i in range(4)},
            **{f"lat{i}": [p.corners_lat[i] for p in places] for i in range(4)},
        }
    )
    n = 3000
    seam = 84.0 if sign > 0 else 80.0
    lons = rng.uniform(-180.0, 180.0, n)
    lats = sign * np.concatenate(
        [
            rng.uniform(76.5, 90.0, n // 3),
            seam + rng.uniform(-0.3, 0.3, n // 3),
            rng.uniform(89.5, 90.0, n - 2 * (n // 3)),
        ]
    )
    found = tiles_under(tiles, np.r_[lons, 0.0], np.r_[lats, sign * 90.0])
    assert (found >= 0).all(), np.c_[lons, lats][found[:n] < 0][:5]
    for i in rng.choice(n, 300, replace=False):
        p = places[found[i]]
        x, y = to_zone(src.geographic, p.zone, lons[i], lats[i])
        xs, ys = grid.corners(p.row, p.col)
        assert xs[0] - 1 <= x <= xs[1] + 1 and ys[2] - 1 <= y <= ys[0] + 1
