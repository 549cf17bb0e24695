"""The scan locator for large tables finds the tile the footprint trees find, ties included."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import synthetic_tiles

from lookalike.errors import IndexCorruptError
from lookalike.indexer import locate_scan, search
from lookalike.indexer.cells import Cells, write_cells
from lookalike.indexer.filter_columns import FilterColumns
from lookalike.indexer.locate import FootprintLocator
from lookalike.indexer.store import open_index
from lookalike.indexer.tile_table import (
    FrameTable,
    MappedTable,
    TileBatches,
    read_filter_columns,
    write_filter_columns,
    write_table,
)


def mapped(tmp_path, tiles: pd.DataFrame, batch: int) -> MappedTable:
    """``tiles`` written as an Arrow table of several batches, read through its memory map."""
    frames = (tiles.iloc[i : i + batch].reset_index(drop=True) for i in range(0, len(tiles), batch))
    write_table(tmp_path / "tiles.arrow", TileBatches(frames, len(tiles)))
    return MappedTable(tmp_path / "tiles.arrow")


def mixed_tiles() -> pd.DataFrame:
    """Tiles of two sizes, each tile also repeated later (equal centres: ties go to the lower
    row), and a tile across 180 degrees."""
    small, large = synthetic_tiles(400, seed=3, half=1.0), synthetic_tiles(60, seed=4, half=6.0)
    tiles = pd.concat([small, large, small.iloc[:100]], ignore_index=True)
    tiles["tile_id"] = [f"t{i}" for i in range(len(tiles))]
    tiles.loc[0, ["lon", "lat"]] = [179.5, 0.0]
    for i, (x, y) in enumerate([(178.5, 1), (-179.5, 1), (-179.5, -1), (178.5, -1)]):
        tiles.loc[0, [f"lon{i}", f"lat{i}"]] = [x, y]
    return tiles


def points(tiles: pd.DataFrame, seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Points anywhere, points near tile centres, and three by the tile across 180 degrees."""
    rng = np.random.default_rng(seed)
    near = rng.choice(len(tiles), n)
    lon = np.r_[rng.uniform(-180, 180, n), tiles["lon"].to_numpy()[near] + rng.uniform(-0.8, 0.8, n)]
    lat = np.r_[rng.uniform(-75, 75, n), tiles["lat"].to_numpy()[near] + rng.uniform(-0.8, 0.8, n)]
    return np.r_[(lon + 180) % 360 - 180, -179.8, 179.0, 170.0], np.r_[lat, 0.2, 0.0, 0.0]


@pytest.mark.parametrize(
    "how, first_batch, slots",
    [("frame", 256, 4096), ("mapped", 256, 4096), ("mapped", 2, 1), ("cells", 256, 4096), ("cells", 2, 1)],
)
def test_scan_finds_the_tile_the_trees_find(tmp_path, monkeypatch, how, first_batch, slots):
    monkeypatch.setattr(locate_scan, "FIRST_BATCH", first_batch)  # 2: nearest first across batches
    monkeypatch.setattr(locate_scan, "CHUNK_SLOTS", slots)  # 1: the scan's second pass
    tiles = mixed_tiles()
    table = FrameTable(tiles) if how == "frame" else mapped(tmp_path, tiles, batch=97)
    cells = None
    if how == "cells":  # the tiles near a point from the sorted cell keys instead of a scan
        columns = table.filter_columns()
        write_cells(tmp_path / "cells.npy", columns.lon, columns.lat, columns.reach)
        cells = Cells(tmp_path / "cells.npy", len(tiles))
    locator = locate_scan.ScanLocator(table, table.filter_columns(), cells)
    lon, lat = points(tiles, 0)
    expected = FootprintLocator(tiles).rows_under(lon, lat)
    np.testing.assert_array_equal(locator.rows_under(lon, lat), expected)
    assert (expected >= 0).sum() > 300 and (expected == -1).sum() > 50  # both cases are tried
    # rows 461-559 repeat rows 1-99 (row 0 was moved): ties go to the lower row
    assert (expected > len(tiles) - 100).sum() == 0 and (expected < 100).sum() > 20
    assert expected[-2] == 0  # the tile across 180 degrees
    assert locator.reach == pytest.approx(np.radians(6.0 * np.sqrt(2)), rel=0.02)


def test_scan_tests_candidates_in_growing_batches(monkeypatch):
    """A point whose nearest centres are all small tiles not holding it is still found in a
    large tile further away (the batches grow until one holds it)."""
    big = synthetic_tiles(1, half=5.0)
    big.loc[0, ["lon", "lat"]] = [0.0, 0.0]
    for i, (x, y) in enumerate([(-5, 5), (5, 5), (5, -5), (-5, -5)]):
        big.loc[0, [f"lon{i}", f"lat{i}"]] = [x, y]
    ring = synthetic_tiles(40, half=0.01)
    angle = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    ring["lon"], ring["lat"] = 3.0 + 0.5 * np.cos(angle), 0.5 * np.sin(angle)
    for i, (dx, dy) in enumerate([(-0.01, 0.01), (0.01, 0.01), (0.01, -0.01), (-0.01, -0.01)]):
        ring[f"lon{i}"], ring[f"lat{i}"] = ring["lon"] + dx, ring["lat"] + dy
    tiles = pd.concat([ring, big], ignore_index=True)
    monkeypatch.setattr(locate_scan, "FIRST_BATCH", 4)
    table = FrameTable(tiles)
    assert locate_scan.ScanLocator(table, table.filter_columns()).row_under(3.0, 0.0) == 40


def test_scan_keeps_only_the_rows_asked_for():
    tiles = mixed_tiles()
    table = FrameTable(tiles)
    keep = (tiles["source"] == "alpha").to_numpy()
    lon, lat = points(tiles, 1)
    expected = FootprintLocator(tiles[keep].reset_index(drop=True)).rows_under(lon, lat)
    expected = np.where(expected >= 0, np.flatnonzero(keep)[expected], -1)
    got = locate_scan.ScanLocator(table, table.filter_columns()).rows_under(lon, lat, keep)
    np.testing.assert_array_equal(got, expected)


def test_a_table_without_footprints_has_no_tile_under_a_point():
    tiles = synthetic_tiles(10).drop(columns=[f"lon{i}" for i in range(4)])
    table = FrameTable(tiles)
    assert locate_scan.ScanLocator(table, table.filter_columns()).row_under(0.0, 0.0) == -1


def test_tile_at_scans_large_indexes(mars_index, monkeypatch):
    """``tile_at`` on a real index gives the same tiles by scan as by footprint trees."""
    index = open_index(mars_index)
    tiles = index.tiles
    rng = np.random.default_rng(5)
    lon = np.r_[tiles["lon"].to_numpy()[::37], rng.uniform(-180, 180, 40)]
    lat = np.r_[tiles["lat"].to_numpy()[::37] + 0.3, rng.uniform(-60, 60, 40)]
    expected = FootprintLocator(tiles).rows_under(lon, lat)
    monkeypatch.setattr(search, "TREE_ROWS", 10)
    assert isinstance(search.tile_locator(index), locate_scan.ScanLocator)
    for x, y, row in zip(lon, lat, expected):
        if row < 0:
            with pytest.raises(search.LookalikeError, match="no indexed tile covers"):
                search.tile_at(index, x, y)
        else:
            assert search.tile_at(index, x, y) == row


def test_the_reach_is_kept_with_the_filter_columns(tmp_path):
    """Written with the columns file at build time; read from the table for older files."""
    tiles = mixed_tiles()
    columns = FilterColumns.of(tiles)
    write_filter_columns(tmp_path / "columns.arrow", columns)
    assert read_filter_columns(tmp_path / "columns.arrow", len(tiles)).reach == columns.reach
    table = mapped(tmp_path, tiles, batch=50)
    older = dataclasses.replace(columns, reach=None)
    assert locate_scan.ScanLocator(table, older).reach == pytest.approx(columns.reach, rel=1e-9)
    halves = [FilterColumns.of(tiles.iloc[:300]), FilterColumns.of(tiles.iloc[300:])]
    assert FilterColumns.concat(halves).reach == columns.reach
    write_filter_columns(tmp_path / "bad.arrow", dataclasses.replace(columns, reach=7.0))
    with pytest.raises(IndexCorruptError, match="not an angle"):
        read_filter_columns(tmp_path / "bad.arrow", len(tiles))
