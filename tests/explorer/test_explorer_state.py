"""ExplorerState without a browser: searching, filters, examples, undo, URLs, export, errors."""

from __future__ import annotations

import pandas as pd
import pytest
from explorer_testkit import (
    FIRST_DATE,
    LANDMARK_CLASSES,
    SECOND_DATE,
    fixture_landmarks,
)

from lookalike.errors import LookalikeError
from lookalike.explorer.results import thumbnail_items
from lookalike.explorer.served import ServedIndexes, cached_index
from lookalike.explorer.sidebar import parse_bbox
from lookalike.explorer.state import ExplorerState


@pytest.fixture
def state(explorer_index) -> ExplorerState:
    return ExplorerState(index=cached_index(explorer_index), index_name="mars_small")


def clicked(state: ExplorerState) -> ExplorerState:
    state.click(3.0, 40.0)  # inside zone 31N of the fixture index
    return state


def test_no_query_no_hits(state):
    assert state.hits is None and state.error == ""
    assert state.url_params() == {"index": "mars_small"}


def test_click_searches(state):
    clicked(state)
    assert state.query_tile.startswith("mars_8k:31N:")
    assert len(state.hits) == len(state.index.tiles)  # k=1000 > 138 tiles
    assert state.hits["tile_id"].iat[0] == state.query_tile and state.hits["distance"].iat[0] == 0
    assert state.hits["distance"].is_monotonic_increasing


def test_click_outside_index_is_a_message(state):
    state.click(-120.0, -40.0)
    assert state.hits is None and "no indexed tile" in state.error


def test_filters(state):
    clicked(state)
    state.k = 10
    assert len(state.hits) == 10
    state.param.update(k=1000, time_start="2012-01-01")
    assert (state.hits["time"] == pd.Timestamp(SECOND_DATE, tz="UTC")).all()
    state.param.update(time_start="", time_end="2012-12-31")
    assert (state.hits["time"] == pd.Timestamp(FIRST_DATE, tz="UTC")).all()
    state.param.update(time_end="", zones=["30N"])
    assert set(state.hits["zone"]) == {"30N"}
    state.param.update(zones=[], bbox=(0.0, 20.0, 10.0, 60.0))
    assert state.hits["lon"].between(0, 10).all() and state.hits["lat"].between(20, 60).all()
    state.param.update(
        bbox=None, boxes=[(-10.0, 0.0, 0.0, 30.0)], polygons=[[(5.0, 50.0), (12.0, 50.0), (12.0, 70.0)]]
    )
    region = state.region()
    assert all(
        region.intersects(__import__("shapely").Point(x, y))
        for x, y in zip(state.hits["lon"], state.hits["lat"])
    )
    assert "2 drawn region(s)" in state.describe_filters()
    state.clear_regions()
    assert len(state.hits) == len(state.index.tiles)


def test_filter_errors_are_messages(state):
    clicked(state)
    state.time_start = "not a date"
    assert "not a date" in state.error and len(state.hits) == 0
    state.param.update(time_start="2020-01-01", time_end="2010-01-01")
    assert "empty" in state.error
    state.param.update(time_start="2030-01-01", time_end="")
    assert "No tiles match" in state.error and len(state.hits) == 0
    state.time_start = ""
    assert state.error == "" and len(state.hits) > 0


def test_examples_and_undo(state):
    clicked(state)
    first = state.hits["tile_id"].tolist()
    state.mark(first[3], "positive")
    assert state.positives == [state.query_tile, first[3]]
    assert state.hits["tile_id"].tolist() == first  # marking alone does not search
    state.mark(first[5], "negative")
    state.mark(first[5], "negative")  # unmark
    state.mark(first[6], "negative")
    assert state.negatives == [first[6]]
    state.search_examples()
    assert state.use_examples and state.query().positives == [state.query_tile, first[3]]
    combined = state.hits["tile_id"].tolist()
    assert combined != first
    assert state.undo()  # back to before the example search
    assert not state.use_examples and state.hits["tile_id"].tolist() == first
    while state.undo():
        pass
    assert state.positives == [] and state.negatives == []
    assert not state.can_undo


def test_search_examples_needs_a_positive(state):
    clicked(state)
    state.search_examples()
    assert "positive" in state.error


def test_url_round_trip(state, explorer_index):
    clicked(state)
    state.param.update(
        k=50,
        zones=["31N", "32N"],
        time_start="2009-01-01",
        bbox=(-6.0, 0.0, 12.0, 80.0),
        boxes=[(0.0, 0.0, 10.0, 60.0)],
    )
    state.mark(state.hits["tile_id"].iat[2], "positive")
    params = state.url_params()
    assert params["tile"] == state.query_tile and params["zones"] == "31N,32N"
    other = ExplorerState(index=cached_index(explorer_index), index_name="mars_small")
    other.apply_url_params(params)
    assert other.snapshot() == state.snapshot()
    assert other.hits["tile_id"].tolist() == state.hits["tile_id"].tolist()


def test_malformed_url_is_a_message(state):
    state.apply_url_params({"bbox": "1,2,3"})
    assert "malformed" in state.error


def test_geojson_export(state):
    clicked(state)
    state.time_start = "2012-01-01"
    collection = state.geojson()
    assert len(collection["features"]) == len(state.hits)
    assert collection["lookalike"]["query"] == {"tile_id": state.query_tile}
    assert collection["lookalike"]["filters"]["time_range"][0].startswith("2012-01-01")


def test_paging_and_thumbnail_items(state):
    clicked(state)
    state.page_size = 50
    assert state.n_pages == 3
    items = thumbnail_items(state, state.hits, 2, [], [])
    assert [i["rank"] for i in items] == list(range(101, len(state.hits) + 1))
    assert items[0]["src"].startswith("thumb/mars_small/")


def test_states_are_independent(explorer_index):
    a = ExplorerState(index=cached_index(explorer_index))
    b = ExplorerState(index=cached_index(explorer_index))
    a.click(3.0, 40.0)
    b.click(9.0, 60.0)
    a.time_start = "2012-01-01"
    assert a.query_tile != b.query_tile and b.time_start == ""
    assert b.hits["tile_id"].iat[0] == b.query_tile
    assert a.index is b.index  # one shared, memory-mapped index


def test_served_indexes_and_bbox_parsing(explorer_index):
    served = ServedIndexes([explorer_index])
    assert served.default == "mars_small" and served["mars_small"].is_mars
    assert served.labels() == {"Mars": "mars"}  # the Body selector lists bodies
    assert served.collections("mars") == {"mars_small": served["mars_small"]}
    assert served.body("mars").base == "mars_small"  # a mosaic index is its body's basemap
    with pytest.raises(LookalikeError):
        served["nope"]
    assert parse_bbox(" 0, 1 ,2,3 ") == (0.0, 1.0, 2.0, 3.0) and parse_bbox("") is None
    for bad in ("1,2,3", "a,b,c,d", "0,50,10,40"):
        with pytest.raises(LookalikeError):
            parse_bbox(bad)


def test_k_typed_out_of_bounds_is_a_message_and_the_box_is_put_back(state, explorer_index):
    import panel as pn

    from lookalike.explorer.sidebar import controls

    sidebar = controls(state, ServedIndexes([explorer_index]))
    layers = next(w for w in sidebar.select(pn.widgets.CheckBoxGroup) if w.name == "Layers")
    assert "hirise" in layers.options.values()  # the HiRISE layer is offered on Mars
    box = next(w for w in sidebar.select(pn.widgets.IntInput) if w.name == "Number of hits (k)")
    clicked(state)
    for bad in (0, -5, 100_000):
        box.value = bad
        assert state.k == 1000 and box.value == 1000
        assert "k must be a whole number from 1 to" in state.error and "1000 hits" in state.error
    box.value = 50
    assert state.k == 50 and len(state.hits) == 50
    state.k = 70  # from elsewhere (a link, undo): the box follows
    assert box.value == 70


def test_thumbnails_match_the_raster_reader(explorer_index):
    import numpy as np

    from lookalike.indexer.sources import RasterSource
    from lookalike.indexer.thumbnails import index_grid, index_source_image, thumbnail_jpeg
    from lookalike.indexer.tiling import Zone

    index = cached_index(explorer_index)
    tile = index.tiles.iloc[40]
    source = RasterSource.from_description(tile["source"], index.manifest["sources"][tile["source"]])
    grid = index_grid(index)
    slow = source.read_tile(Zone.parse(tile["zone"]), grid, int(tile["row"]), int(tile["col"]))
    fast = index_source_image(index).tile(tile["zone"], grid, int(tile["row"]), int(tile["col"]))
    assert fast.shape == slow.shape
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 2.0
    assert thumbnail_jpeg(index, tile.to_dict())[:2] == b"\xff\xd8"


def test_hirise_footprints(explorer_env, tmp_path, monkeypatch):
    from lookalike.data.hirise import in_time_range, load_hirise_footprints

    monkeypatch.setenv("LOOKALIKE_DATA", explorer_env["LOOKALIKE_DATA"])
    table = load_hirise_footprints()
    assert len(table) > 70_000
    assert table["west"].between(-180, 180).all() and (table["east"] >= table["west"]).all()
    some = in_time_range(table, "2010-01-01", "2010-12-31")
    assert 0 < len(some) < len(table) and (some["time"].dt.year == 2010).all()
    monkeypatch.setenv("LOOKALIKE_DATA", str(tmp_path))
    with pytest.raises(LookalikeError, match="hirise_observations.csv"):
        load_hirise_footprints()


# ------------------------------------------------------------------ landmarks
def _expected_counts(tiles, min_confidence, zones=None, min_n=1):
    """By hand from the fixture's rule: every tile is its own scene with one landmark."""
    lm = fixture_landmarks(tiles)
    keep = lm["posterior"] >= min_confidence
    if zones:
        keep &= tiles["zone"].isin(zones).to_numpy()
    return {c: int(((lm["label"] == c) & keep).sum()) if min_n <= 1 else 0 for c in LANDMARK_CLASSES}


def test_facet_counts_follow_the_other_filters(state):
    tiles = state.index.tiles
    assert state.landmark_class_names() == LANDMARK_CLASSES
    assert state.facet_counts() == _expected_counts(tiles, 0.5)
    assert sum(state.facet_counts().values()) == len(tiles)  # every posterior is >= 0.5
    state.min_confidence = 0.9
    assert state.facet_counts() == _expected_counts(tiles, 0.9)
    state.zones = ["32N"]
    assert state.facet_counts() == _expected_counts(tiles, 0.9, ["32N"])
    state.landmark_classes = ["crater"]  # a facet's own choice does not change its counts
    assert state.facet_counts() == _expected_counts(tiles, 0.9, ["32N"])
    state.min_landmarks = 2  # one landmark per tile: no tile has two
    assert state.facet_counts() == _expected_counts(tiles, 0.9, ["32N"], 2)


def test_class_facet_filters_hits_and_boxes(state):
    clicked(state)
    lm = fixture_landmarks(state.index.tiles)
    state.landmark_classes = ["crater"]
    craters = set(state.index.tiles["tile_id"][(lm["label"] == "crater").to_numpy()])
    assert len(state.hits) == len(craters) and set(state.hits["tile_id"]) == craters
    assert "crater" in " ".join(state.describe_filters())
    assert set(state.visible_landmarks()["label"]) == {"crater"}
    state.min_confidence = 0.8
    confident = (lm["label"] == "crater") & (lm["posterior"] >= 0.8)
    assert len(state.hits) == int(confident.sum()) == len(state.visible_landmarks())
    state.landmark_classes = []
    assert len(state.hits) == len(state.index.tiles)
    assert len(state.visible_landmarks()) == int((lm["posterior"] >= 0.8).sum())
    state.undo()
    assert state.landmark_classes == ["crater"]


def test_class_text_box(state):
    state.apply_class_text("Craters")
    assert state.landmark_classes == ["crater"] and state.error == ""
    state.apply_class_text("dune, streak")
    assert state.landmark_classes == ["dark_dune", "streak"]
    state.apply_class_text("volcano")
    assert state.landmark_classes == ["dark_dune", "streak"] and "volcano" in state.error
    state.apply_class_text("")
    assert state.landmark_classes == []


def test_landmark_filters_in_urls(state, explorer_index):
    clicked(state)
    state.param.update(landmark_classes=["streak"], min_confidence=0.7, min_landmarks=1)
    params = state.url_params()
    assert params["classes"] == "streak" and params["conf"] == "0.7" and "min_n" not in params
    other = ExplorerState(index=cached_index(explorer_index), index_name="mars_small")
    other.apply_url_params(params)
    assert other.landmark_classes == ["streak"] and other.min_confidence == 0.7
    assert other.hits["tile_id"].tolist() == state.hits["tile_id"].tolist()
    bad = ExplorerState(index=cached_index(explorer_index), index_name="mars_small")
    bad.apply_url_params({**params, "conf": "7"})
    assert "malformed" in bad.error
    foreign = ExplorerState(index=cached_index(explorer_index), index_name="mars_small")
    foreign.apply_url_params({**params, "classes": "streak,volcano"})
    assert foreign.landmark_classes == ["streak"] and "volcano" in foreign.error
    assert foreign.hits["tile_id"].tolist() == state.hits["tile_id"].tolist()


def test_sliders_without_a_class_do_not_search_again(state):
    clicked(state)
    hits, steps = state.hits, len(state._history)
    state.min_confidence = 0.8
    state.min_landmarks = 3
    assert state.hits is hits  # the same result object: no search ran
    assert len(state._history) == steps + 2  # still undoable, like any change of a widget


def test_rebuilt_views_release_their_watchers(state, explorer_index):
    """The sidebar and the map are rebuilt on every change of index; old ones stop following."""
    import panel as pn

    from lookalike.explorer.served import ServedIndexes
    from lookalike.explorer.sidebar import controls

    served = ServedIndexes([explorer_index])
    builds = [controls(state, served) for _ in range(3)]
    assert (
        len(state._view_watchers["sidebar"]) == 6
    )  # body, k, bbox, facet, recount, layers: one build's worth
    facets = [b.select(pn.widgets.CheckBoxGroup)[0] for b in builds]
    state.landmark_classes = ["crater"]
    assert facets[-1].value == ["crater"] and facets[0].value == []  # only the live sidebar follows
    facets[-1].value = ["streak"]  # and the live facet drives the state
    assert state.landmark_classes == ["streak"]
    switches = [next(w for w in b.select(pn.widgets.CheckBoxGroup) if w.name == "Layers") for b in builds]
    state.layers = ["basemap", "hits"]
    assert switches[-1].value == ["basemap", "hits"] and switches[0].value != ["basemap", "hits"]
    switches[-1].value = ["hits", "zones"]
    assert state.layers == ["zones", "hits"]  # in drawing order


def test_cached_index_follows_new_generations(tmp_path):
    """An index rewritten on disk (an append) is opened anew for whoever asks next; an
    unreadable manifest keeps the generation that could be opened."""
    import numpy as np
    from lookalike_testkit import make_index, synthetic_tiles

    from lookalike.indexer.store import write_index

    path = tmp_path / "idx"
    make_index(path, n=50, bits=64)
    first = cached_index(path)
    assert cached_index(path) is first and first.n == 50
    more = synthetic_tiles(60).iloc[50:].reset_index(drop=True)
    write_index(path, np.zeros((10, 8), np.uint8), more, bits=64, append=True)
    second = cached_index(path)
    assert second is not first and second.n == 60 and first.n == 50
    (path / "manifest.json").write_text("{ not json")
    assert cached_index(path) is second


# ------------------------------------------------------------------ map layers and legend
def test_layers_default_and_focus_cleared_by_a_new_search(state):
    from lookalike.explorer.state import DEFAULT_LAYERS

    assert state.layers == DEFAULT_LAYERS and "zones" not in state.layers and "hirise" not in state.layers
    clicked(state)
    state.focus_tile = state.hits["tile_id"].iat[3]
    state.mark(state.hits["tile_id"].iat[2], "positive")  # not a new search: the focus stays
    assert state.focus_tile
    state.time_start = "2012-01-01"  # a new search
    assert state.focus_tile == ""
    state.layers = ["hits"]  # a view setting: no search, nothing recorded
    assert state.url_params().get("from") == "2012-01-01" and state.can_undo


def test_map_view_in_urls(state, explorer_index):
    """The map's view travels in the link; a view that does not exist is a message, not a crash."""
    clicked(state)
    state.projection = "south"
    params = state.url_params()
    assert params["view"] == "south"
    other = ExplorerState(index=cached_index(explorer_index), index_name="mars_small")
    other.apply_url_params(params)
    assert other.projection == "south" and other.error == ""
    assert other.hits["tile_id"].tolist() == state.hits["tile_id"].tolist()
    state.projection = "global"
    assert "view" not in state.url_params()
    bad = ExplorerState(index=cached_index(explorer_index), index_name="mars_small")
    bad.apply_url_params({**params, "view": "<b>sideways</b>"})
    assert bad.projection == "global" and "malformed" in bad.error and "<b>" not in bad.error
