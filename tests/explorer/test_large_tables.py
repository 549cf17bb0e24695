"""A session on an index too large to read whole: the map, the sidebar, a click, filters, pages,
outlines and thumbnails read the rows they show and the filter columns, never the whole table.

The thresholds above which the explorer samples and scans are lowered to the size of a small real
index, so a table read whole fails the test instead of filling the memory of a large machine.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from lookalike.explorer import panel_internals
from lookalike.explorer import served as served_module
from lookalike.explorer.acquisitions import acquisitions
from lookalike.explorer.collection_controls import enter_body
from lookalike.explorer.map_view import MapView
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.sidebar import date_inputs, zone_options
from lookalike.explorer.state import MAP_LAYERS, ExplorerState
from lookalike.indexer import index as index_module
from lookalike.indexer import search
from lookalike.indexer.store import open_index
from lookalike.indexer.thumbnails import render_thumbnail
from lookalike.indexer.tile_table import MappedTable


@pytest.fixture
def small(mars_index):
    """What the small-table paths show for the same index (read whole)."""
    index = open_index(mars_index)
    assert index.landmarks is None  # a landmark facet reads the whole table by design
    index.tiles, acquisitions(index)  # read (and kept) before whole-table reads are refused
    return index


@pytest.fixture
def large(mars_index, small, monkeypatch):
    """The same index, opened afresh, with every whole-table read refused."""
    monkeypatch.setattr(index_module, "SUMMARY_ROWS", 40)
    monkeypatch.setattr(search, "TREE_ROWS", 40)

    read_whole = MappedTable.frame

    def refused(self):
        if self._frame is None:  # ``small`` read its table before
            raise AssertionError("the whole tile table was read")
        return read_whole(self)

    monkeypatch.setattr(MappedTable, "frame", refused)
    index = open_index(mars_index)
    assert isinstance(index.table, MappedTable) and index.large and index.n > 40
    return index


def test_summaries_come_from_the_filter_columns(small, large):
    assert large.zones() == small.zones() == ["30N", "31N"]
    assert large.time_span() == small.time_span()
    sample = large.sample()
    assert 40 <= len(sample) <= 44 and "tile_id" not in sample  # runs, and the extreme rows
    for column in ("lon", "lat"):  # the sample's bounds are the table's
        assert sample[column].min() == small.tiles[column].min()
        assert sample[column].max() == small.tiles[column].max()
    state = ExplorerState(index=large, index_name="m")
    assert zone_options(state) == ["30N", "31N"]
    date_inputs(state)
    exact = {a.source: a for a in acquisitions(small)}
    assert {a.source for a in acquisitions(large)} == set(exact)
    for a in acquisitions(large):  # bounds of the centres widened by the largest reach: wider
        west, south, east, north = exact[a.source].bounds
        assert a.bounds[0] <= west and a.bounds[1] <= south and a.bounds[2] >= east and a.bounds[3] >= north
        assert a.time == exact[a.source].time


def test_a_session_reads_only_the_rows_it_shows(mars_index, small, large, monkeypatch):
    hv.extension("bokeh", logo=False)
    monkeypatch.setattr(served_module, "cached_index", lambda path: large)  # as the server holds it
    served = ServedIndexes([mars_index])
    body = served[served.default].body
    state = ExplorerState(layers=list(MAP_LAYERS))
    enter_body(state, served, body)
    view = MapView(state, served, body)
    pane = view.panel()
    root = pane.get_root()
    row = small.n // 2
    tile = small.tiles.iloc[row]
    state.click(float(tile["lon"]), float(tile["lat"]))
    assert state.error == ""
    assert state.query_tile == small.tile_id_at(search.tile_at(small, tile["lon"], tile["lat"]))
    expected = search.search_index(small, search.Query(tile_id=state.query_tile), k=state.k)
    pd.testing.assert_series_equal(state.hits["tile_id"], expected["tile_id"])
    state.param.update(zones=["31N"], page=1)
    assert set(state.hits["zone"].astype(str)) == {"31N"}
    data = view.data.all()
    assert len(data["hit_outlines"]["xs"]) == len(state.page_hits())
    assert data["density"] is not None
    assert state.tile(state.query_tile)["tile_id"] == state.query_tile
    assert render_thumbnail(large, state.tile(state.query_tile).to_dict())[:2] == b"\xff\xd8"
    state.click(-120.0, -40.0)  # outside the indexed zones
    assert "no tile" in state.error or "No collection" in state.error
    panel_internals.release_offline_root(pane, root)


def test_outside_the_index_and_an_empty_result(large):
    state = ExplorerState(index=large, index_name="m")
    state.click(-120.0, -40.0)
    assert state.hits is None and "no indexed tile" in state.error
    state.click(*large.tile(0)[["lon", "lat"]].astype(float))
    state.time_start = "2999-01-01"
    assert len(state.hits) == 0 and list(state.hits.columns[:2]) == ["rank", "distance"]
    assert np.array_equal(state.hits.columns[2:], large.tile_rows(np.zeros(0, np.int64)).columns)
