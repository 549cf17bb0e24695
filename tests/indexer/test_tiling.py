"""Tiling maths: zones, central meridians, zone selection, grid covering, projections, ids."""

from __future__ import annotations

import math

import numpy as np
import pyproj
import pytest

from lookalike.indexer.tiling import (
    TileGrid,
    Zone,
    from_zone,
    tile_places,
    to_zone,
    wrap_lon,
    zone_box,
    zone_crs,
    zones_for_bounds,
)

WGS84 = pyproj.CRS("EPSG:4326")
MARS = pyproj.CRS("IAU_2015:49900")


# ------------------------------------------------------------------ zones
@pytest.mark.parametrize(
    "text, number, hemisphere", [("33N", 33, "N"), ("7s", 7, "S"), (" 60n ", 60, "N"), ("1S", 1, "S")]
)
def test_zone_parse_and_label(text, number, hemisphere):
    zone = Zone.parse(text)
    assert zone == Zone(number, hemisphere)
    assert zone.label == f"{number}{hemisphere}"
    assert Zone.parse(zone.label) == zone


@pytest.mark.parametrize(
    "text", ["", "N", "33", "33X", "0N", "61S", "-3N", "3.5N", "abcN", "UPS", "UPSX", "UPS1N"]
)
def test_zone_parse_rejects_garbage(text):
    with pytest.raises(ValueError):
        Zone.parse(text)


def test_zone_constructor_validates():
    with pytest.raises(ValueError):
        Zone(61, "N")
    with pytest.raises(ValueError):
        Zone(12, "E")
    with pytest.raises(ValueError):
        Zone(-1, "S")


@pytest.mark.parametrize("text, hemisphere", [("UPSN", "N"), ("upss", "S"), (" UPS N ", "N")])
def test_polar_zone_parse_and_label(text, hemisphere):
    zone = Zone.parse(text)
    assert zone.polar and zone.hemisphere == hemisphere
    assert zone.label == f"UPS{hemisphere}"
    assert Zone.parse(zone.label) == zone
    assert zone.lon_range == (-180.0, 180.0)


@pytest.mark.parametrize(
    "lon, lat, expected",
    [
        (-180.0, 10.0, "1N"),
        (-174.0001, 10.0, "1N"),
        (-174.0, 10.0, "2N"),
        (0.0, 0.0, "31N"),
        (-0.0001, 0.0, "30N"),
        (15.0, 45.0, "33N"),
        (179.999, -1.0, "60S"),
        (180.0, 5.0, "1N"),
        (540.0, 5.0, "1N"),
        (-183.0, -5.0, "60S"),
        (3.0, -0.0001, "31S"),
        (15.0, 83.999, "33N"),
        (10.0, 84.0, "UPSN"),
        (-120.0, 90.0, "UPSN"),
        (15.0, -80.0, "33S"),
        (10.0, -80.0001, "UPSS"),
        (0.0, -90.0, "UPSS"),
    ],
)
def test_zone_at(lon, lat, expected):
    assert Zone.at(lon, lat).label == expected


def test_central_meridians_match_epsg_utm():
    for number in range(1, 61):
        for hemisphere, base in (("N", 32600), ("S", 32700)):
            op = pyproj.CRS.from_epsg(base + number).coordinate_operation
            cm = next(p.value for p in op.params if p.name == "Longitude of natural origin")
            zone = Zone(number, hemisphere)
            assert zone.central_meridian == pytest.approx(cm)
            west, east = zone.lon_range
            assert east - west == pytest.approx(6.0)
            assert (west + east) / 2 == pytest.approx(cm)
            # every longitude of the band maps back to this zone
            assert Zone.at(west + 0.001, 1 if hemisphere == "N" else -1) == zone
            assert Zone.at(east - 0.001, 1 if hemisphere == "N" else -1) == zone


def test_wrap_lon():
    np.testing.assert_allclose(wrap_lon([-180, 180, 190, -190, 359, 0]), [-180, -180, -170, 170, -1, 0])


# ------------------------------------------------------------------ zones_for_bounds
def _reference_zones(west, south, east, north, lat_range=(-90.0, 90.0)):
    """Zones whose band and latitudes overlap the box with positive extent (brute force)."""
    spans = [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]
    south, north = max(south, lat_range[0]), min(north, lat_range[1])
    found = set()
    if min(north, 90.0) > max(south, 84.0):
        found.add("UPSN")
    if min(north, -80.0) > max(south, -90.0):
        found.add("UPSS")
    south, north = max(south, -80.0), min(north, 84.0)
    for number in range(1, 61):
        zw = -180.0 + 6.0 * (number - 1)
        ze = zw + 6.0
        if not any(max(lo, zw) < min(hi, ze) for lo, hi in spans):
            continue
        if max(south, 0.0) < min(north, lat_range[1]):
            found.add(f"{number}N")
        if max(south, lat_range[0]) < min(north, 0.0):
            found.add(f"{number}S")
    return found


@pytest.mark.parametrize(
    "box, expected",
    [
        ((10.0, 40.0, 20.0, 50.0), {"32N", "33N", "34N"}),
        ((0.0, 0.0, 6.0, 1.0), {"31N"}),
        ((-1.0, -1.0, 1.0, 1.0), {"30N", "31N", "30S", "31S"}),
        ((170.0, -5.0, -170.0, 5.0), {f"{n}{h}" for n in (59, 60, 1, 2) for h in "NS"}),
        ((179.0, 10.0, -179.0, 11.0), {"60N", "1N"}),
        ((-180.0, -90.0, 180.0, 90.0), {f"{n}{h}" for n in range(1, 61) for h in "NS"} | {"UPSN", "UPSS"}),
        ((10.0, 85.0, 20.0, 89.0), {"UPSN"}),  # beyond UTM's northern limit: the polar cap
        ((10.0, -89.0, 20.0, -85.0), {"UPSS"}),
        ((10.0, 83.0, 20.0, 85.0), {"32N", "33N", "34N", "UPSN"}),
    ],
)
def test_zones_for_bounds_examples(box, expected):
    zones = zones_for_bounds(*box)
    labels = [z.label for z in zones]
    assert len(labels) == len(set(labels))
    assert set(labels) == expected


def test_zones_for_bounds_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(500):
        west, east = rng.uniform(-180, 180, 2)
        south, north = np.sort(rng.uniform(-90, 90, 2))
        if rng.random() < 0.2:  # snap to zone edges sometimes
            west, east = 6.0 * round(west / 6.0), 6.0 * round(east / 6.0)
        got = {z.label for z in zones_for_bounds(west, south, east, north)}
        assert got == _reference_zones(west, south, east, north), (west, south, east, north)


def test_antimeridian_box_zones_are_only_those_at_the_edges():
    labels = {z.label for z in zones_for_bounds(175.0, 1.0, -175.0, 2.0)}
    assert labels == {"60N", "1N"}
    assert "30N" not in labels  # not the whole world the other way round


# ------------------------------------------------------------------ TileGrid.covering
def _reference_covering(grid: TileGrid, xmin, ymin, xmax, ymax):
    """All tiles whose footprint overlaps the box with positive area, by enumeration."""
    extent = grid.size * grid.gsd
    r_lo = int(math.floor(-ymax / grid.step)) - grid.size // grid.stride - 3
    r_hi = int(math.ceil(-ymin / grid.step)) + 3
    c_lo = int(math.floor(xmin / grid.step)) - grid.size // grid.stride - 3
    c_hi = int(math.ceil(xmax / grid.step)) + 3
    tiles = set()
    for row in range(r_lo, r_hi):
        for col in range(c_lo, c_hi):
            x0, y0 = grid.origin(row, col)
            if max(x0, xmin) < min(x0 + extent, xmax) and max(y0 - extent, ymin) < min(y0, ymax):
                tiles.add((row, col))
    return tiles


@pytest.mark.parametrize(
    "grid", [TileGrid(128, 64, 1.0), TileGrid(64, 64, 10.0), TileGrid(100, 30, 2.5), TileGrid(256, 256, 0.5)]
)
def test_covering_matches_brute_force(grid):
    rng = np.random.default_rng(grid.size)
    boxes = [(0.0, 0.0, grid.step, grid.step), (-grid.step, -3 * grid.step, 2 * grid.step, 0.0)]
    for _ in range(150):
        x = np.sort(rng.uniform(-20, 20, 2) * grid.step)
        y = np.sort(rng.uniform(-20, 20, 2) * grid.step)
        boxes.append((x[0], y[0], x[1], y[1]))
    for box in boxes:
        rows, cols = grid.covering(*box)
        got = {(r, c) for r in rows for c in cols}
        assert got == _reference_covering(grid, *box), box


def test_grid_geometry():
    grid = TileGrid(128, 64, 2.0)
    assert grid.origin(3, -2) == (-256.0, -384.0)
    cx, cy = grid.centre(3, -2)
    assert (float(cx), float(cy)) == (-256.0 + 128.0, -384.0 - 128.0)
    xs, ys = grid.corners(3, -2)
    # clockwise from top-left in a y-up projected frame
    np.testing.assert_allclose(xs, [-256, 0, 0, -256])
    np.testing.assert_allclose(ys, [-384, -384, -640, -640])
    with pytest.raises(ValueError):
        TileGrid(0, 64, 1.0)
    with pytest.raises(ValueError):
        TileGrid(128, 64, -1.0)


# ------------------------------------------------------------------ projections
@pytest.mark.parametrize("number, hemisphere", [(33, "N"), (33, "S"), (1, "N"), (60, "S"), (31, "N")])
def test_earth_zones_are_epsg_utm_and_round_trip(number, hemisphere):
    zone = Zone(number, hemisphere)
    epsg = (32600 if hemisphere == "N" else 32700) + number
    assert zone_crs(WGS84, zone).to_epsg() == epsg
    rng = np.random.default_rng(number)
    west, east = zone.lon_range
    lon = rng.uniform(west, east, 200)
    lat = rng.uniform(0, 80, 200) * (1 if hemisphere == "N" else -1)
    x, y = to_zone(WGS84, zone, lon, lat)
    ref = pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    rx, ry = ref.transform(lon, lat)
    np.testing.assert_allclose(x, rx, atol=1e-6)
    np.testing.assert_allclose(y, ry, atol=1e-6)
    back_lon, back_lat = from_zone(WGS84, zone, x, y)
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    # the zone's origin: central meridian on the equator
    x0, y0 = to_zone(WGS84, zone, zone.central_meridian, 0.0)
    assert float(x0) == pytest.approx(500_000.0)
    assert float(y0) == pytest.approx(0.0 if hemisphere == "N" else 10_000_000.0)


@pytest.mark.parametrize("hemisphere", ["N", "S"])
def test_mars_zones_are_spherical_tm_with_unit_scale(hemisphere):
    zone = Zone(31, hemisphere)
    crs = zone_crs(MARS, zone)
    assert crs.is_projected
    assert crs.ellipsoid.semi_major_metre == pytest.approx(3_396_190.0)
    r = 3_396_190.0
    fn = 0.0 if hemisphere == "N" else 10_000_000.0
    # spherical transverse Mercator, k0 = 1: along the equator x = R atanh(sin dlon),
    # along the central meridian y = R lat
    dlon = np.array([-2.5, -1.0, 0.0, 0.7, 3.0])
    x, y = to_zone(MARS, zone, zone.central_meridian + dlon, np.zeros_like(dlon))
    np.testing.assert_allclose(x, 500_000.0 + r * np.arctanh(np.sin(np.radians(dlon))), atol=1e-3)
    np.testing.assert_allclose(y, fn, atol=1e-3)
    lat = np.array([1.0, 10.0, 45.0, 80.0]) * (1 if hemisphere == "N" else -1)
    x, y = to_zone(MARS, zone, np.full_like(lat, zone.central_meridian), lat)
    np.testing.assert_allclose(x, 500_000.0, atol=1e-3)
    np.testing.assert_allclose(y, fn + r * np.radians(lat), atol=1e-3)


@pytest.mark.parametrize(
    "geographic, number, hemisphere",
    [(WGS84, 33, "N"), (WGS84, 19, "S"), (MARS, 31, "N"), (MARS, 5, "S"), (MARS, 60, "N")],
)
def test_tile_footprints_round_trip(geographic, number, hemisphere):
    zone = Zone(number, hemisphere)
    grid = TileGrid(128, 64, 100.0 if geographic is WGS84 else 2000.0)
    west, east = zone.lon_range
    box = zone_box(geographic, zone, west, -30.0, east, 30.0)
    rows, cols = grid.covering(*box)
    places = list(tile_places(geographic, zone, grid, rows[::3], cols))
    assert places
    for p in places[:50]:
        assert Zone.at(p.lon, p.lat) == zone  # a tile lives in the zone holding its centre
        xs, ys = grid.corners(p.row, p.col)
        x, y = to_zone(geographic, zone, np.array(p.corners_lon), np.array(p.corners_lat))
        np.testing.assert_allclose(x, xs, atol=1e-3)
        np.testing.assert_allclose(y, ys, atol=1e-3)
        cx, cy = grid.centre(p.row, p.col)
        lon, lat = from_zone(geographic, zone, cx, cy)
        assert (float(lon), float(lat)) == pytest.approx((p.lon, p.lat), abs=1e-9)


def test_tiles_at_a_zone_edge_belong_to_one_zone():
    grid = TileGrid(128, 128, 500.0)
    seen = {}
    for zone in zones_for_bounds(10.0, 40.0, 14.0, 42.0):
        box = zone_box(WGS84, zone, 10.0, 40.0, 14.0, 42.0)
        for p in tile_places(WGS84, zone, grid, *grid.covering(*box)):
            key = (round(p.lon, 6), round(p.lat, 6))
            assert key not in seen
            seen[key] = p.zone.label
            assert Zone.at(p.lon, p.lat) == p.zone
    assert set(seen.values()) == {"32N", "33N"}


def test_tile_places_are_stable_across_enumeration_boxes():
    """The same tile (row, col) gets the same geometry whatever box it was enumerated from."""
    zone, grid = Zone(33, "N"), TileGrid(64, 32, 30.0)
    big = zone_box(WGS84, zone, 12.0, 44.0, 16.0, 46.0)
    small = zone_box(WGS84, zone, 14.2, 45.1, 14.4, 45.2)
    a = {(p.row, p.col): p for p in tile_places(WGS84, zone, grid, *grid.covering(*big))}
    b = {(p.row, p.col): p for p in tile_places(WGS84, zone, grid, *grid.covering(*small))}
    assert b and set(b) <= set(a)
    for key, p in b.items():
        assert p == a[key]


# ------------------------------------------------------------------ polar caps
@pytest.mark.parametrize("hemisphere, epsg", [("N", 32661), ("S", 32761)])
def test_earth_polar_caps_are_epsg_ups(hemisphere, epsg):
    zone = Zone.parse(f"UPS{hemisphere}")
    assert zone_crs(WGS84, zone).to_epsg() == epsg
    sign = 1 if hemisphere == "N" else -1
    x, y = to_zone(WGS84, zone, 45.0, sign * 90.0)
    assert (float(x), float(y)) == pytest.approx((2_000_000.0, 2_000_000.0), abs=1e-3)


@pytest.mark.parametrize("hemisphere", ["N", "S"])
def test_mars_polar_caps_are_spherical_polar_stereographic(hemisphere):
    zone = Zone.parse(f"UPS{hemisphere}")
    sign = 1 if hemisphere == "N" else -1
    r, k0 = 3_396_190.0, 0.994
    lat = sign * np.array([80.0, 85.0, 89.0, 90.0])
    lon = np.array([0.0, 90.0, -135.0, 10.0])
    x, y = to_zone(MARS, zone, lon, lat)
    rho = 2 * r * k0 * np.tan(np.radians(90.0 - np.abs(lat)) / 2)
    np.testing.assert_allclose(x, 2_000_000.0 + rho * np.sin(np.radians(lon)), atol=1e-3)
    np.testing.assert_allclose(y, 2_000_000.0 - sign * rho * np.cos(np.radians(lon)), atol=1e-3)


@pytest.mark.parametrize("geographic, hemisphere", [(WGS84, "N"), (WGS84, "S"), (MARS, "N"), (MARS, "S")])
def test_polar_cap_tiles_cover_the_cap_to_the_pole(geographic, hemisphere):
    """Cap tiles sit poleward of UTM's limit, one of them holds the pole, and the cap and the
    6-degree zones meet without a gap: every place at the limit is in exactly one zone's tile."""
    zone = Zone.parse(f"UPS{hemisphere}")
    grid = TileGrid(128, 128, 250.0)
    sign = 1 if hemisphere == "N" else -1
    box = zone_box(geographic, zone, -180.0, -90.0, 180.0, 90.0)
    places = list(tile_places(geographic, zone, grid, *grid.covering(*box)))
    lats = np.array([p.lat for p in places])
    limit = 84.0 if hemisphere == "N" else 80.0
    assert (sign * lats >= limit).all()
    assert np.abs(lats).max() > 89.5
    px, py = to_zone(geographic, zone, 0.0, sign * 90.0)
    holding = []
    for p in places:
        xs, ys = grid.corners(p.row, p.col)
        if xs[0] <= px < xs[1] and ys[2] <= py < ys[0]:
            holding.append(p)
    assert len(holding) == 1
    # the number of cap tiles is about the cap's projected area over a tile's
    rho = abs(float(to_zone(geographic, zone, 0.0, sign * limit)[1]) - 2_000_000.0)
    expected = math.pi * rho**2 / (grid.size * grid.gsd) ** 2
    assert abs(len(places) - expected) < 0.02 * expected


@pytest.mark.parametrize("crs", ["IAU_2015:49900", "EPSG:4326", "EPSG:4269"])
def test_zone_conversions_equal_proj_operations(crs):
    """Zones that only project their body's lon/lat are converted by a pipeline built from the
    zone's own definition; it gives PROJ's operation between the two CRSs to the last bit (and
    another datum, NAD83 on WGS 84 zones, goes through PROJ's operation itself)."""
    import pyproj

    from lookalike.indexer.tiling import from_zone, to_zone, zone_crs

    geographic = pyproj.CRS(pyproj.CRS(crs).geodetic_crs.to_json_dict())
    rng = np.random.default_rng(0)
    for zone in (Zone(5, "N"), Zone(44, "S"), Zone(0, "N"), Zone(0, "S")):
        projected = zone_crs(geographic, zone)
        lat = rng.uniform(*np.clip(zone.lat_range, -89.9, 89.9), 200)
        lon = rng.uniform(*zone.lon_range, 200)
        want = pyproj.Transformer.from_crs(geographic, projected, always_xy=True).transform(lon, lat)
        np.testing.assert_array_equal(to_zone(geographic, zone, lon, lat), want)
        back = pyproj.Transformer.from_crs(projected, geographic, always_xy=True).transform(*want)
        np.testing.assert_array_equal(from_zone(geographic, zone, *want), back)
