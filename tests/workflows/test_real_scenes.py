"""Real scenes indexed as a user would: the body of each, positions against the footprints the
products state, dates from names and labels, Sentinel-2 band files as one source, and one clear
error for a source smaller than a tile."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
from lookalike_testkit import assert_user_error, run_main

from lookalike.data.hirise import load_hirise_footprints
from lookalike.errors import LookalikeError
from lookalike.indexer.store import open_index

pytestmark = pytest.mark.slow
MARS_RADIUS_M = 3_396_190.0


@pytest.fixture(scope="module")
def scenes(data_dir):
    path = data_dir / "scenes"
    if not path.is_dir():
        pytest.skip(f"{path} not found in the shared data folder")
    return path


def index(tmp_path, name: str, *args: str) -> tuple[dict, pd.DataFrame]:
    out = tmp_path / name
    code, stdout, stderr = run_main(["index", *args, "--out", str(out)])
    assert code == 0, stderr
    code, info, stderr = run_main(["info", str(out)])
    assert code == 0, stderr
    return json.loads(info), open_index(out).tiles


def inside(
    tiles: pd.DataFrame,
    west: float,
    south: float,
    east: float,
    north: float,
    margin_m: float = 0.0,
    radius_m: float = MARS_RADIUS_M,
) -> bool:
    """Whether every tile centre lies in the box, widened by ``margin_m`` metres of ground."""
    lat_margin = np.degrees(margin_m / radius_m)
    lon_margin = lat_margin / max(np.cos(np.radians(max(abs(south), abs(north)))), 1e-6)
    return bool(
        (
            (tiles["lon"] >= west - lon_margin)
            & (tiles["lon"] <= east + lon_margin)
            & (tiles["lat"] >= south - lat_margin)
            & (tiles["lat"] <= north + lat_margin)
        ).all()
    )


def footprint(observation: str) -> tuple[float, float, float, float]:
    row = load_hirise_footprints().set_index("observation_id").loc[observation]
    return row["west"], row["south"], row["east"], row["north"]


# The PDS index's footprints and the cubes' own map projections disagree by up to about 1 km
# (measured on the shared cubes: 0.6-0.9 km in longitude), a tenth of an observation's length:
# positions are checked against the footprint widened by 2 km.
FOOTPRINT_SLACK_M = 2_000.0


def test_hirise_cube_lies_in_its_pds_footprint_on_mars_with_its_date(tmp_path, scenes):
    cube = scenes / "mars_hirise_red_25cm" / "ESP_014038_1415_RED0.30421_33069.boulder_shift.before.cub"
    info, tiles = index(tmp_path, "cube", str(cube))
    assert info["body"] == "mars" and info["count"] > 10
    assert inside(tiles, *footprint("ESP_014038_1415"), margin_m=FOOTPRINT_SLACK_M)
    assert not inside(tiles, *footprint("ESP_012024_1440"), margin_m=FOOTPRINT_SLACK_M)  # elsewhere
    assert set(tiles["time"].dt.strftime("%Y-%m-%d")) == {"2009-07-25"}  # the PDS index's time
    assert tiles["gsd"].iloc[0] == pytest.approx(0.25, abs=0.01)


def test_a_renamed_cube_takes_its_date_from_its_isis_label(tmp_path, scenes):
    info, tiles = index(tmp_path, "before", str(scenes / "mars_hirise_red_25cm" / "no_change_before.cub"))
    assert info["body"] == "mars"
    assert set(tiles["time"].dt.strftime("%Y-%m-%d")) == {"2009-02-18"}  # ESP_012024_1440
    assert inside(tiles, *footprint("ESP_012024_1440"), margin_m=FOOTPRINT_SLACK_M)


def test_hirise_cog_without_nodata_is_placed_inside_its_own_extent(tmp_path, scenes):
    cog = scenes / "mars_hirise_colour_5m" / "cog_hirise_mars.tif"
    info, tiles = index(tmp_path, "cog", str(cog))
    assert info["body"] == "mars"
    with rasterio.open(cog) as src:
        to_mars = pyproj.Transformer.from_crs(pyproj.CRS(src.crs.to_wkt()), "IAU_2015:49900", always_xy=True)
        west, south, east, north = to_mars.transform_bounds(*src.bounds, densify_pts=21)
    assert inside(tiles, west, south, east, north)
    assert -15.5 < tiles["lat"].mean() < -13.5 and -55 < tiles["lon"].mean() < -53  # 14.5 S, 306 E


def test_sentinel2_band_files_are_one_true_colour_source_on_earth(tmp_path, scenes):
    folder = scenes / "earth_sentinel2_10m"
    bands = ",".join(str(folder / f"s2_{b}.jp2") for b in ("B04", "B03", "B02"))
    with rasterio.open(folder / "s2_B04.jp2") as src:
        to_wgs84 = pyproj.Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        west, south, east, north = to_wgs84.transform_bounds(*src.bounds, densify_pts=21)
    box = f"{west + 0.02},{south + 0.02},{west + 0.07},{south + 0.06}"
    info, tiles = index(tmp_path, "s2", "--stack", bands, "--bbox", box)
    assert info["body"] == "earth" and info["sources"] == ["s2_B04+B03+B02"]
    assert len(tiles) > 4 and inside(tiles, west, south, east, north)  # in degrees: no slack
    assert set(tiles["zone"]) == {"18N"}


def test_naip_dates_from_file_names_filter_a_search(tmp_path, scenes):
    files = sorted((scenes / "earth_naip_5m_2009_2020").glob("m_*.tif"))[:2]
    box = "-99.17,47.01,-99.15,47.025"
    info, tiles = index(tmp_path, "naip", *map(str, files), "--bbox", box)
    assert info["body"] == "earth" and len(info["sources"]) == 2
    assert sorted(tiles["time"].dt.strftime("%Y-%m-%d").unique()) == ["2009-08-18", "2010-06-29"]
    out = tmp_path / "hits.json"
    code, _, stderr = run_main(
        [
            "search",
            str(tmp_path / "naip"),
            "--lonlat",
            "-99.16,47.017",
            "--k",
            "20",
            "--start",
            "2010-01-01",
            "--json",
            str(out),
        ]
    )
    assert code == 0, stderr
    hits = json.loads(out.read_text())
    times = [str(h["time"]) for h in hits["hits"]]
    assert times and all(t.startswith("2010-06-29") for t in times)


def test_a_source_smaller_than_a_tile_is_one_error_line(tmp_path, scenes):
    crop = scenes / "mars_hirise_ortho_crops" / "PSP_002118_1510_1m_o_forPDS_cropped.cub"
    code, _, stderr = run_main(["index", str(crop), "--out", str(tmp_path / "crop")])
    assert_user_error(code, stderr, "smaller than one tile", "50x50 px")
    assert not (tmp_path / "crop" / "manifest.json").exists()


def test_mixed_bodies_in_one_index_are_refused(tmp_path, scenes):
    cube = scenes / "mars_hirise_red_25cm" / "no_change_after.cub"
    naip = sorted((scenes / "earth_naip_5m_2009_2020").glob("m_*.tif"))[0]
    code, _, stderr = run_main(["index", str(cube), str(naip), "--out", str(tmp_path / "mixed")])
    assert_user_error(code, stderr, "one body")
    assert not (tmp_path / "mixed" / "manifest.json").exists()


def test_registered_scene_collections_match_the_data_cache(scenes, monkeypatch):
    from lookalike.data.scenes import SCENE_COLLECTIONS, fetch_scenes, missing_files

    monkeypatch.setenv("LOOKALIKE_DATA", str(scenes.parent))
    for collection in SCENE_COLLECTIONS.values():
        assert missing_files(collection) == [], collection.name  # every registered sha256 holds
        assert all(p.is_file() for p in fetch_scenes(collection.name, download=False))
    monkeypatch.setenv("LOOKALIKE_DATA", str(scenes.parent / "nowhere"))
    with pytest.raises(LookalikeError, match="lookalike fetch naip_5m"):
        fetch_scenes("naip_5m", download=False)


def test_the_demo_catalogues_the_hirise_cog_at_the_classifier_scale(tmp_path, scenes, monkeypatch):
    """`lookalike demo`'s Mars collections: the colour COG gets a landmark catalogue found at the
    classifier's ground scale, inside the scene; built once (a second call changes nothing)."""
    from lookalike.models.defaults import LANDMARK_GROUND_SCALES_M
    from lookalike.workflows.demo import scene_collections

    monkeypatch.setenv("LOOKALIKE_DATA", str(scenes.parent))
    paths = {p.name: p for p in scene_collections("mars", tmp_path, progress=False)}
    assert set(paths) == {"hirise_red_25cm", "hirise_colour_5m"}
    cog = open_index(paths["hirise_colour_5m"])
    assert cog.manifest["landmarks"]["ground_scale_m"] == LANDMARK_GROUND_SCALES_M["hirise"]
    landmarks = cog.landmarks
    assert len(landmarks) > 0 and (landmarks["row"] >= 0).all()  # each on a tile of the scene
    tiles = cog.tiles
    assert landmarks["lon"].between(tiles["lon0"].min() - 0.05, tiles["lon0"].max() + 0.05).all()
    assert open_index(paths["hirise_red_25cm"]).landmarks is None  # the cubes: no catalogue asked
    generation = cog.manifest["generation"]
    scene_collections("mars", tmp_path, progress=False)
    assert open_index(paths["hirise_colour_5m"]).manifest["generation"] == generation
