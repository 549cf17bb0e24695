"""Hits as RFC 7946 GeoJSON: structure, ring orientation, the antimeridian, GIS readers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import shapely
from lookalike_testkit import check_rfc7946, make_index, ring_area, strict_json
from shapely.geometry import shape

from lookalike.indexer.export import PROPERTIES, footprint_geometry, hits_to_geojson, write_geojson
from lookalike.indexer.search import Filters, search_index


def test_footprint_orientation_is_counterclockwise():
    # clockwise from top-left, as the tiler produces
    geom = footprint_geometry(np.array([10.0, 12.0, 12.0, 10.0]), np.array([5.0, 5.0, 3.0, 3.0]))
    assert geom["type"] == "Polygon"
    ring = geom["coordinates"][0]
    assert ring_area(ring) == pytest.approx(4.0)
    assert shape(geom).equals(shapely.box(10, 3, 12, 5))
    # already counterclockwise input stays counterclockwise
    geom = footprint_geometry(np.array([10.0, 10.0, 12.0, 12.0]), np.array([5.0, 3.0, 3.0, 5.0]))
    assert ring_area(geom["coordinates"][0]) == pytest.approx(4.0)


@pytest.mark.parametrize(
    "lons, lats",
    [
        ([178.0, -178.0, -178.0, 178.0], [1.0, 1.0, -1.0, -1.0]),
        ([179.5, -179.0, -179.2, 179.8], [40.0, 40.2, 38.0, 37.9]),
        ([-179.0, 179.0, 179.0, -179.0], [-10.0, -10.0, -12.0, -12.0]),
    ],
)
def test_footprint_across_antimeridian_is_split(lons, lats):
    geom = footprint_geometry(np.array(lons), np.array(lats))
    assert geom["type"] == "MultiPolygon" and len(geom["coordinates"]) == 2
    check_rfc7946(
        {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": geom, "properties": {}}]}
    )
    parts = [shapely.Polygon(p[0]) for p in geom["coordinates"]]
    east = next(p for p in parts if p.bounds[0] > 0)
    west = next(p for p in parts if p.bounds[2] < 0)
    assert east.bounds[2] == pytest.approx(180.0) and west.bounds[0] == pytest.approx(-180.0)
    # the two halves together are the footprint drawn on an unwrapped longitude axis
    unwrapped = shapely.Polygon(zip(np.where(np.array(lons) < 0, np.array(lons) + 360, lons), lats))
    joined = shapely.union(east, shapely.affinity.translate(west, xoff=360))
    assert joined.symmetric_difference(unwrapped).area < 1e-9
    assert east.area + west.area == pytest.approx(unwrapped.area)


def _hits(tmp_path, k=30):
    index = make_index(tmp_path / "i", n=300, seed=4)
    return search_index(index, index.codes[0], k=k, filters=Filters(bbox=(-180, -60, 180, 60)))


def test_hits_to_geojson_structure_and_properties(tmp_path):
    hits = _hits(tmp_path)
    collection = hits_to_geojson(hits, filters={"bbox": [-180, -60, 180, 60]}, query={"tile_id": "t0"})
    text = json.dumps(collection, default=str)
    collection = strict_json(text)
    check_rfc7946(collection)
    assert len(collection["features"]) == len(hits) == 30
    for rank, (feature, rec) in enumerate(zip(collection["features"], hits.to_dict("records")), 1):
        props = feature["properties"]
        assert {"rank", "distance", "tile_id", "zone", "time", "source"} <= set(props)
        assert props["rank"] == rank and props["distance"] == rec["distance"]
        assert props["tile_id"] == rec["tile_id"] and props["zone"] == rec["zone"]
        assert set(props) <= set(PROPERTIES)
        if pd.isna(rec["time"]):
            assert props["time"] is None
        else:
            assert pd.Timestamp(props["time"]) == rec["time"]
        # the footprint holds the tile centre
        assert (
            shape(feature["geometry"]).buffer(1e-6).covers(shapely.Point(rec["lon"], rec["lat"]))
            or feature["geometry"]["type"] == "MultiPolygon"
        )
    distances = [f["properties"]["distance"] for f in collection["features"]]
    assert distances == sorted(distances)
    assert collection["lookalike"] == {"query": {"tile_id": "t0"}, "filters": {"bbox": [-180, -60, 180, 60]}}


def test_hits_without_footprints_become_points(tmp_path):
    hits = _hits(tmp_path, k=5).drop(columns=["lon0", "lon1", "lon2", "lon3"])
    collection = strict_json(json.dumps(hits_to_geojson(hits)))
    check_rfc7946(collection)
    assert {f["geometry"]["type"] for f in collection["features"]} == {"Point"}
    assert "lookalike" not in collection


def test_geojson_loads_in_shapely_and_geopandas(tmp_path):
    gpd = pytest.importorskip("geopandas")
    hits = _hits(tmp_path, k=50)
    # force one hit across the antimeridian
    hits.loc[3, ["lon0", "lon1", "lon2", "lon3"]] = [179.6, -179.4, -179.4, 179.6]
    hits.loc[3, "lon"] = 180.0 - 0.5 + 0.4
    path = tmp_path / "hits.geojson"
    write_geojson(path, hits_to_geojson(hits))
    collection = strict_json(path.read_text())
    check_rfc7946(collection)
    assert collection["features"][3]["geometry"]["type"] == "MultiPolygon"
    frame = gpd.read_file(path)
    assert len(frame) == 50
    assert frame["rank"].tolist() == list(range(1, 51))
    assert frame["tile_id"].tolist() == hits["tile_id"].tolist()
    assert frame.geometry.is_valid.all()
    assert frame.crs is not None and frame.crs.to_epsg() == 4326  # RFC 7946: WGS 84 lon/lat
    minx, miny, maxx, maxy = frame.total_bounds
    assert -180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90
    assert frame.geometry.iloc[3].geom_type == "MultiPolygon"


@pytest.mark.parametrize("body, hemisphere", [("mars", "N"), ("mars", "S"), ("earth", "N"), ("earth", "S")])
def test_footprint_around_a_pole_is_one_valid_polygon_holding_it(tmp_path, body, hemisphere):
    """The polar cap tile that holds the pole exports as one RFC 7946 polygon that contains the
    pole and the tile's centre, closed along the antimeridian, and reads back in geopandas."""
    gpd = pytest.importorskip("geopandas")
    import pyproj

    from lookalike.indexer.tiling import TileGrid, Zone, holds_pole, tile_places, zone_box

    geographic = pyproj.CRS("IAU_2015:49900" if body == "mars" else "EPSG:4326")
    zone, grid = Zone.parse(f"UPS{hemisphere}"), TileGrid(128, 64, 300.0)
    sign = 1.0 if hemisphere == "N" else -1.0
    south, north = (89.0, 90.0) if sign > 0 else (-90.0, -89.0)
    box = zone_box(geographic, zone, -180.0, south, 180.0, north)
    places = list(tile_places(geographic, zone, grid, *grid.covering(*box)))
    around = [p for p in places if holds_pole(np.array(p.corners_lon))]
    assert 1 <= len(around) <= 4  # overlapping tiles (stride < size): up to four hold the pole
    for p in around:
        geom = footprint_geometry(np.array(p.corners_lon), np.array(p.corners_lat))
        assert geom["type"] == "Polygon"
        collection = {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": geom, "properties": {}}],
        }
        check_rfc7946(collection)
        polygon = shape(geom)
        assert polygon.is_valid
        assert polygon.covers(shapely.Point(37.0, sign * 90.0))
        assert polygon.contains(shapely.Point(-120.0, sign * 89.999))
        assert not polygon.contains(shapely.Point(0.0, sign * 88.0))
        assert polygon.contains(shapely.Point(p.lon, p.lat)) or abs(p.lat) > 89.99
        frame = gpd.read_file(json.dumps(collection))
        assert frame.geometry.iloc[0].equals(polygon)
    # tiles next to the pole stay plain quadrilaterals
    others = [p for p in places if not holds_pole(np.array(p.corners_lon))]
    assert others
    for p in others[:20]:
        assert footprint_geometry(np.array(p.corners_lon), np.array(p.corners_lat))["type"] in (
            "Polygon",
            "MultiPolygon",
        )


def test_pole_ring_of_a_densified_outline():
    """A box drawn around the pole in a polar view, walked either way, becomes the same area."""
    from lookalike.indexer.export import pole_ring

    t = np.linspace(0, 360, 73)[:-1]
    lats = 85.0 + np.cos(np.radians(3 * t))  # wavy, never reaching the pole
    a = shapely.Polygon(pole_ring(t - 180.0 + 7.0, lats))
    b = shapely.Polygon(pole_ring((t - 180.0 + 7.0)[::-1], lats[::-1]))
    assert a.is_valid and b.is_valid
    assert a.symmetric_difference(b).area < 1e-9
    assert a.contains(shapely.Point(0.0, 89.0)) and not a.contains(shapely.Point(0.0, 83.0))
