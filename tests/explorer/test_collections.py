"""Collections on a body, without a browser: grouping by body, the finest collection under a
click, the acquisitions drawn per date, and the true-shape maths of the planet's map."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lookalike.explorer.acquisitions import Acquisition, date_options, drawn_sources, finest, places
from lookalike.explorer.true_shape import ground_px_ratio, shape_weight, true_shape_x_span, x_scale


def _acq(source: str, date: str | None, bounds=(0.0, 0.0, 1.0, 1.0), gsd: float = 5.0) -> Acquisition:
    return Acquisition(source, None if date is None else pd.Timestamp(date, tz="UTC"), bounds, gsd)


def test_places_and_dates_of_overlapping_scenes():
    pair = [_acq("before", "2009-02-18"), _acq("after", "2010-12-23")]
    other = [_acq("b2", "2009-07-25", (10, 10, 11, 11)), _acq("a2", "2013-03-09", (10.5, 10.5, 11, 11))]
    lone = [_acq("lone", "2015-01-01", (50, 50, 51, 51))]
    acqs = pair + other + lone
    assert sorted(map(sorted, places(acqs))) == [[0, 1], [2, 3], [4]]
    # the lone scene overlaps nothing in time: it is always drawn, and offers no date
    assert date_options(acqs) == ["2009-02-18", "2009-07-25", "2010-12-23", "2013-03-09"]
    assert set(drawn_sources(acqs)) == {"after", "a2", "lone"}  # the latest of each place
    assert set(drawn_sources(acqs, "2010-01-01")) == {"before", "b2", "lone"}
    assert set(drawn_sources(acqs, "2009-03-01")) == {"before", "b2", "lone"}  # b2 is the earliest
    # the date filter leaves out what it excludes, and the choice picks among the rest
    start, end = pd.Timestamp("2009-01-01", tz="UTC"), pd.Timestamp("2010-12-31", tz="UTC")
    assert set(drawn_sources(acqs, "", start, end)) == {"after", "b2"}
    assert date_options(lone) == []


def test_drawn_sources_put_finer_scenes_last():
    acqs = [_acq("fine", "2010-01-01", (0, 0, 1, 1), 0.25), _acq("coarse", None, (5, 5, 6, 6), 100.0)]
    assert drawn_sources(acqs) == ["coarse", "fine"]


def test_finest_collection_wins_and_unknown_resolution_comes_last():
    assert finest([("mosaic", 2600.0), ("cube", 0.25), ("colour", 5.0)]) == "cube"
    assert finest([("chips", math.nan), ("mosaic", 2600.0)]) == "mosaic"
    assert finest([("a", 5.0), ("b", 5.0)]) == "a"  # ties in the order given
    assert finest([("chips", math.nan)]) == "chips" and finest([]) is None


@pytest.mark.parametrize("lat0", [0.0, -35.7, 47.0, 70.0])
def test_a_local_view_has_true_shape(lat0):
    width, height = 1200, 600
    y_span = 0.01  # a view a few hundred metres tall
    x_span = true_shape_x_span(y_span, lat0, width, height)
    assert ground_px_ratio(x_span, y_span, lat0, width, height) == pytest.approx(1.0, rel=1e-9)
    assert x_scale(y_span, lat0) == pytest.approx(1 / math.cos(math.radians(lat0)))


def test_the_whole_planet_stays_two_to_one_and_views_between_blend():
    assert true_shape_x_span(180.0, 0.0, 1200, 600) == 360.0
    assert true_shape_x_span(180.0, 60.0, 1200, 600) == 360.0  # the globe is not stretched
    assert shape_weight(90.0) == 0.0 and shape_weight(5.0) == 1.0
    spans = [60.0, 45.0, 30.0, 20.0, 10.0, 1.0]
    scales = [x_scale(s, 50.0) for s in spans]
    assert scales == sorted(scales) and scales[0] == 1.0  # grows smoothly as the view narrows
    assert scales[-1] == pytest.approx(1 / math.cos(math.radians(50.0)))


@pytest.mark.slow  # builds real scene indexes
def test_bodies_group_collections(explorer_index, scene_indexes):
    from lookalike.explorer.served import ServedIndexes

    served = ServedIndexes([explorer_index, *scene_indexes.values()])
    assert served.labels() == {"Mars": "mars", "Earth": "earth"}  # bodies only
    assert served.body("mars").collections == ["mars_small", "hirise_cubes", "hirise5m"]
    assert served.body("mars").base == "mars_small"  # the mosaic is the basemap
    assert served.body("earth").collections == ["naip"] and served.body("earth").base is None
    assert served["naip"].body == "earth" and served["hirise_cubes"].is_mars


@pytest.mark.slow  # builds real scene indexes
def test_a_click_searches_the_finest_collection_under_it(explorer_index, scene_indexes):
    from lookalike.explorer.acquisitions import acquisitions
    from lookalike.explorer.collection_controls import enter_body
    from lookalike.explorer.served import ServedIndexes
    from lookalike.explorer.state import ExplorerState

    served = ServedIndexes([explorer_index, *scene_indexes.values()])
    state = ExplorerState()
    enter_body(state, served, "mars")
    cube = next(a for a in acquisitions(served["hirise_cubes"].index) if a.source == "no_change_before")
    lon, lat = (cube.bounds[0] + cube.bounds[2]) / 2, (cube.bounds[1] + cube.bounds[3]) / 2
    state.click(lon, lat)
    assert state.index_name == "hirise_cubes" and "Searching hirise_cubes" in state.searched_note
    assert set(state.hits["source"]) <= {a.source for a in acquisitions(state.index)}  # one collection
    state.click(5.0, 20.0)  # the mosaic's zones only
    assert state.index_name == "mars_small"
    state.search_in = "hirise5m"
    state.click(5.0, 20.0)
    assert state.index_name == "mars_small" and "no tile" in state.error  # the chosen one has none there
    assert state.undo() is True


class _FakeIndex:
    """What ``acquisitions`` reads of an index: its tile table and manifest."""

    large = False

    def __init__(self, tiles: pd.DataFrame, sources: dict) -> None:
        self.tiles, self.manifest = tiles, {"sources": sources}

    def cached(self, name, make):
        return make()


def test_image_chips_are_not_a_scene_to_draw():
    """A folder of chips placed on the planet (the HiRISE landmark layer) has no picture of its
    own to decode: only raster sources are acquisitions (served with scenes, the demo's warm-up
    decoded the chips' 'scene' and failed)."""
    from lookalike.explorer.acquisitions import acquisitions

    square = dict(lon0=10.0, lon1=11.0, lon2=11.0, lon3=10.0, lat0=20.0, lat1=20.0, lat2=21.0, lat3=21.0)
    tiles = pd.DataFrame(
        [dict(source=name, lon=10.5, lat=20.5, gsd=5.0, **square) for name in ("chips", "scene")]
    )
    sources = {"chips": {"root": "/data/hirise_v1", "image_size": 224}, "scene": {"path": "/data/s.tif"}}
    assert [a.source for a in acquisitions(_FakeIndex(tiles, sources))] == ["scene"]
    assert [a.source for a in acquisitions(_FakeIndex(tiles, {}))] == ["chips", "scene"]  # undescribed: kept
