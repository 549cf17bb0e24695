"""The landmark catalogue: facet counts against a hand-computed example, class filters in search,
tiles under points, free-text classes, HiRISE placement, and the catalogue in the index files.

HiRISE chips indexed, classified and placed through the CLI are tested in
tests/workflows/test_hirise_chips.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import make_index, popcount_reference, random_codes, synthetic_tiles

from lookalike.errors import IndexCorruptError, LookalikeError
from lookalike.indexer import catalogue, locate
from lookalike.indexer.search import Filters, Query, filter_mask, search_index
from lookalike.indexer.store import open_index, update_tables, write_index

CLASSES = ["crater", "dark_dune", "streak", "edge"]


def hand_example() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six tiles in three scenes; landmarks chosen so every count below can be done by hand."""
    tiles = pd.DataFrame({"tile_id": [f"t{i}" for i in range(6)], "scene": ["A", "A", "B", "B", "C", "C"]})
    rows = [0, 0, 1, 2, 3, 4, -1]
    labels = ["crater", "crater", "crater", "dark_dune", "crater", "streak", "edge"]
    posterior = [0.95, 0.60, 0.92, 0.99, 0.40, 0.80, 0.99]
    lm = pd.DataFrame(
        {
            "row": rows,
            "label": labels,
            "posterior": posterior,
            "lon": 0.0,
            "lat": 0.0,
            "lon_min": 0.0,
            "lat_min": 0.0,
            "lon_max": 1.0,
            "lat_max": 1.0,
        }
    )
    for c in CLASSES:
        lm[f"p_{c}"] = 0.0
    return tiles, lm


def test_facet_counts_match_hand_computed_example():
    tiles, lm = hand_example()
    # A: 3 craters (0.95, 0.60, 0.92); B: dark_dune 0.99, crater 0.40; C: streak 0.80; edge: no tile
    assert catalogue.facet_counts(tiles, lm, 0.5) == {"crater": 1, "dark_dune": 1, "streak": 1, "edge": 0}
    assert catalogue.facet_counts(tiles, lm, 0.3) == {"crater": 2, "dark_dune": 1, "streak": 1, "edge": 0}
    assert catalogue.facet_counts(tiles, lm, 0.5, min_count=2) == {
        "crater": 1,
        "dark_dune": 0,
        "streak": 0,
        "edge": 0,
    }
    assert catalogue.facet_counts(tiles, lm, 0.93, min_count=1)["crater"] == 1
    assert catalogue.facet_counts(tiles, lm, 0.93, min_count=2)["crater"] == 0
    # the other filters drop tile 0: scene A keeps one crater
    mask = np.array([False, True, True, True, True, True])
    assert catalogue.facet_counts(tiles, lm, 0.5, 2, tile_mask=mask)["crater"] == 0
    assert catalogue.facet_counts(tiles, lm, 0.5, 1, tile_mask=mask)["crater"] == 1


def test_landmark_mask_is_per_scene_and_per_class():
    tiles, lm = hand_example()
    np.testing.assert_array_equal(
        catalogue.landmark_mask(tiles, lm, ["crater"], 0.5, 2), [True, True, False, False, False, False]
    )
    np.testing.assert_array_equal(
        catalogue.landmark_mask(tiles, lm, ["dark_dune", "streak"], 0.5, 1),
        [False, False, True, True, True, True],
    )
    # crater + dark_dune in B is 2 landmarks, but of two classes: N counts per class
    assert not catalogue.landmark_mask(tiles, lm, ["crater", "dark_dune"], 0.3, 2)[2]
    assert not catalogue.landmark_mask(tiles, lm, ["edge"], 0.0, 1).any()  # its tile is unknown
    with pytest.raises(LookalikeError, match="unknown landmark class"):
        catalogue.landmark_mask(tiles, lm, ["volcano"])
    with pytest.raises(LookalikeError, match="no landmark catalogue"):
        catalogue.landmark_mask(tiles, None, ["crater"])


def test_tiles_without_scene_are_their_own_scene():
    tiles, lm = hand_example()
    tiles = tiles.drop(columns="scene")
    assert catalogue.facet_counts(tiles, lm, 0.5)["crater"] == 2  # tiles 0 and 1
    assert catalogue.facet_counts(tiles, lm, 0.5, min_count=2)["crater"] == 1  # tile 0 only


def test_visible_landmarks():
    tiles, lm = hand_example()
    assert len(catalogue.visible_landmarks(lm, [], 0.5)) == 5  # 0.40 and the tileless one drop
    assert set(catalogue.visible_landmarks(lm, ["crater"], 0.0)["posterior"]) == {0.95, 0.60, 0.92, 0.40}
    mask = np.array([True, False, False, False, False, True])
    assert len(catalogue.visible_landmarks(lm, [], 0.0, mask)) == 2
    assert len(catalogue.visible_landmarks(None)) == 0


def test_parse_classes():
    known = ["other", "edge", "crater", "dark_dune", "bright_dune", "streak"]
    assert catalogue.parse_classes("Crater", known) == ["crater"]
    assert catalogue.parse_classes("craters", known) == ["crater"]
    assert catalogue.parse_classes("dunes", known) == ["dark_dune", "bright_dune"]
    assert catalogue.parse_classes("dark dune, slope streak", known) == ["dark_dune", "streak"]
    assert catalogue.parse_classes(" ", known) == []
    with pytest.raises(LookalikeError, match="no landmark class matches 'volcano'"):
        catalogue.parse_classes("volcano", known)


def test_tiles_under_picks_the_nearest_containing_tile():
    tiles = synthetic_tiles(300, seed=3, half=2.0)
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-180, 180, 400), rng.uniform(-70, 70, 400)
    rows = locate.tiles_under(tiles, lon, lat)
    centre_lon, centre_lat = tiles["lon"].to_numpy(), tiles["lat"].to_numpy()
    for p in range(len(lon)):  # brute force: footprints are +-2 degree squares around centres
        dlon = (centre_lon - lon[p] + 180) % 360 - 180
        inside = np.flatnonzero((np.abs(dlon) <= 2.0 + 1e-4) & (np.abs(centre_lat - lat[p]) <= 2.0 + 1e-4))
        if len(inside) == 0:
            assert rows[p] == -1
            continue
        cos = np.sin(np.radians(centre_lat[inside])) * np.sin(np.radians(lat[p])) + np.cos(
            np.radians(centre_lat[inside])
        ) * np.cos(np.radians(lat[p])) * np.cos(np.radians(dlon[inside]))
        assert rows[p] == inside[np.argmax(cos)]
    assert (rows >= 0).sum() > 20 and (rows == -1).sum() > 20


def test_tiles_under_across_the_antimeridian():
    tiles = synthetic_tiles(1, half=1.0)
    tiles.loc[0, ["lon", "lat"]] = [179.5, 0.0]
    for i, (x, y) in enumerate([(178.5, 1), (-179.5, 1), (-179.5, -1), (178.5, -1)]):
        tiles[f"lon{i}"], tiles[f"lat{i}"] = np.float32(x), np.float32(y)
    np.testing.assert_array_equal(
        locate.tiles_under(tiles, [-179.8, 179.0, 170.0], [0.2, 0.0, 0.0]), [0, 0, -1]
    )
    # a chip with no known footprint (NaN corners) is skipped, rows still count in the full table
    unplaced = tiles.copy()
    unplaced[[f"lon{i}" for i in range(4)] + ["lon", "lat"]] = np.nan
    both = pd.concat([unplaced, tiles], ignore_index=True)
    np.testing.assert_array_equal(locate.tiles_under(both, [179.0, 0.0], [0.0, 0.0]), [1, -1])


def _landmarks_for(tiles: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tiles), 120)
    lm = pd.DataFrame(
        {
            "landmark_id": [f"l{i}" for i in range(len(pick))],
            "scene": "s",
            "label": rng.choice(CLASSES, len(pick)),
            "posterior": rng.uniform(0.3, 1.0, len(pick)),
            "lon": tiles["lon"].to_numpy()[pick],
            "lat": tiles["lat"].to_numpy()[pick],
        }
    )
    lm["lon_min"], lm["lon_max"] = lm["lon"] - 0.1, lm["lon"] + 0.1
    lm["lat_min"], lm["lat_max"] = lm["lat"] - 0.1, lm["lat"] + 0.1
    return lm


def test_search_with_class_filter_equals_brute_force(tmp_path):
    index = make_index(tmp_path / "ix", n=400, bits=64, values=4)
    lm = catalogue.attach_to_index(index.path, _landmarks_for(index.tiles))
    index = open_index(index.path)
    assert index.landmarks is not None and len(index.landmarks) == len(lm)
    filters = Filters(landmark_classes=["crater"], min_confidence=0.6, min_landmarks=1)
    allowed = catalogue.landmark_mask(index.tiles, index.landmarks, ["crater"], 0.6, 1)
    expected_rows = set(index.landmarks.query("label == 'crater' and posterior >= 0.6 and row >= 0")["row"])
    assert set(np.flatnonzero(allowed)) == expected_rows
    np.testing.assert_array_equal(filter_mask(index.tiles, filters, index.landmarks), allowed)
    hits = search_index(index, Query(code=index.codes[0]), k=50, filters=filters)
    rows = np.flatnonzero(allowed)
    dist = popcount_reference(np.asarray(index.codes)[rows], np.asarray(index.codes[0]))
    order = np.lexsort((rows, dist))[:50]
    np.testing.assert_array_equal(hits.attrs["index_row"], rows[order])
    with pytest.raises(LookalikeError, match="no landmark catalogue"):
        search_index(make_index(tmp_path / "plain", n=20), Query(tile_id="t00000"), k=5, filters=filters)


def test_catalogue_is_checksummed_and_survives_append(tmp_path):
    index = make_index(tmp_path / "ix", n=100, bits=64)
    catalogue.attach_to_index(index.path, _landmarks_for(index.tiles))
    manifest = json.loads((index.path / "manifest.json").read_text())
    name = manifest["files"]["landmarks"]["name"]
    # appending tiles keeps the catalogue
    more = synthetic_tiles(10, seed=9).assign(tile_id=[f"new{i}" for i in range(10)])
    write_index(index.path, random_codes(10, 64, seed=9), more, bits=64, append=True)
    again = open_index(index.path)
    assert again.n == 110 and len(again.landmarks) == 120
    # a replaced catalogue leaves no stale files; a flipped byte is caught
    update_tables(index.path, landmarks=again.landmarks.iloc[:5].copy())
    assert not (index.path / name).exists() and len(open_index(index.path).landmarks) == 5
    path = index.path / json.loads((index.path / "manifest.json").read_text())["files"]["landmarks"]["name"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="landmarks"):
        open_index(index.path)


def test_update_tables_refuses_bad_tables(tmp_path):
    index = make_index(tmp_path / "ix", n=30, bits=64)
    lm = _landmarks_for(index.tiles).assign(row=31)
    with pytest.raises(LookalikeError, match="row of its tile"):
        update_tables(index.path, landmarks=lm)
    with pytest.raises(LookalikeError, match="keep the index's tiles"):
        update_tables(index.path, tiles=index.tiles.iloc[::-1])
    assert open_index(index.path).landmarks is None  # nothing was half written


def test_crop_landmarks_and_observation_placement():
    tiles = pd.DataFrame(
        {
            "tile_id": ["a.jpg", "b.jpg", "c.jpg"],
            "path": ["a.jpg", "b.jpg", "c.jpg"],
            "source_image": ["ESP_011283_2265_RED", "PSP_001_002_RED", "ESP_9_9_RED"],
            "source": "hirise",
            "zone": "",
            "time": pd.NaT,
        }
    )
    observations = pd.DataFrame(
        {
            "observation_id": ["ESP_011283_2265", "PSP_001_002"],
            "west": [10.0, -170.0],
            "south": [40.0, -5.0],
            "east": [10.2, -169.8],
            "north": [41.0, -4.0],
            "time": pd.to_datetime(["2009-01-02", "2007-03-04"], utc=True),
        }
    )
    placed, unplaced = catalogue.place_at_observations(tiles, observations)
    assert unplaced == 1
    assert placed["scene"].tolist() == ["ESP_011283_2265", "PSP_001_002", "ESP_9_9"]
    assert placed["lon"].iloc[0] == pytest.approx(10.1) and placed["lat"].iloc[1] == pytest.approx(-4.5)
    assert placed["zone"].tolist()[:2] == ["32N", "2S"] and placed["zone"].iloc[2] == ""
    assert placed["time"].iloc[0] == pd.Timestamp("2009-01-02", tz="UTC") and pd.isna(placed["time"].iloc[2])
    probabilities = np.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]])
    lm = catalogue.crop_landmarks(placed, probabilities, ["crater", "edge"])
    assert lm["label"].tolist() == ["edge", "crater", "crater"]
    np.testing.assert_allclose(lm["posterior"], [0.9, 0.7, 0.5], rtol=1e-6)
    assert lm["row"].tolist() == [0, 1, 2] and lm["lon_min"].iloc[0] == pytest.approx(10.0)
    assert catalogue.classes_of(lm) == ["crater", "edge"]
    with pytest.raises(LookalikeError, match="source_image"):
        catalogue.place_at_observations(tiles.drop(columns="source_image"), observations)


def test_attach_requires_columns():
    with pytest.raises(LookalikeError, match="lacks column"):
        catalogue.attach(synthetic_tiles(3), pd.DataFrame({"label": ["crater"]}))


def test_review_edge_cases(tmp_path):
    """No placed tile at all; an empty catalogue keeps its classes; foreign files survive."""
    tiles = synthetic_tiles(2)
    tiles[[f"lon{i}" for i in range(4)]] = np.nan
    np.testing.assert_array_equal(locate.tiles_under(tiles, [0.0], [0.0]), [-1])
    _, lm = hand_example()
    empty = lm.iloc[:0]
    assert catalogue.classes_of(empty) == CLASSES
    assert not catalogue.landmark_mask(hand_example()[0], empty, ["crater"]).any()
    assert catalogue.parse_classes("grass", ["gras"]) == ["gras"]  # one plural s only
    index = make_index(tmp_path / "ix", n=20, bits=64)
    keep = [index.path / "landmarks-raw.parquet", index.path / "tiles-notes.txt"]
    for f in keep:
        f.write_text("mine")
    catalogue.attach_to_index(index.path, _landmarks_for(index.tiles))
    assert all(f.read_text() == "mine" for f in keep)
