"""Filters over the compact columns give exactly the rows the pandas table gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookalike.indexer.filter_columns import FilterColumns
from lookalike.indexer.search import Filters, filter_mask


def table(n: int, seed: int, categorical: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    zones = np.array(["10N", "11N", "12S", "UPSN", None], dtype=object)[rng.integers(0, 5, n)]
    sources = np.array(["a", "b", "c~1", None], dtype=object)[rng.integers(0, 4, n)]
    days = rng.integers(0, 4000, n)
    times = pd.Series(pd.Timestamp("2010-01-01", tz="UTC") + pd.to_timedelta(days, unit="D"))
    times[rng.random(n) < 0.2] = pd.NaT
    tiles = pd.DataFrame(
        dict(
            zone=zones,
            source=sources,
            time=times.astype("datetime64[ms, UTC]"),
            lon=rng.uniform(-180, 180, n),
            lat=rng.uniform(-90, 90, n),
        )
    )
    if categorical:
        tiles["zone"], tiles["source"] = tiles["zone"].astype("category"), tiles["source"].astype("category")
    return tiles


def pandas_mask(tiles: pd.DataFrame, f: Filters) -> np.ndarray:
    """The filters written with pandas alone, as the reference."""
    mask = np.ones(len(tiles), bool)
    if f.zones:
        mask &= tiles["zone"].isin(f.zones).to_numpy()
    if f.sources:
        mask &= tiles["source"].isin(f.sources).to_numpy()
    if f.time_range:
        start, end = (None if t is None else pd.Timestamp(t, tz="UTC") for t in f.time_range)
        times = tiles["time"]
        ok = times.notna().to_numpy().copy()
        ok &= True if start is None else (times >= start).fillna(False).to_numpy()
        ok &= True if end is None else (times <= end).fillna(False).to_numpy()
        mask &= ok
    if f.bbox:
        west, south, east, north = f.bbox
        mask &= (
            (tiles.lon >= west) & (tiles.lon <= east) & (tiles.lat >= south) & (tiles.lat <= north)
        ).to_numpy()
    return mask


@pytest.mark.parametrize("categorical", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compact_columns_keep_the_rows_pandas_keeps(categorical, seed):
    tiles = table(5000, seed, categorical)
    columns = FilterColumns.of(tiles)
    for f in (
        Filters(zones=["10N", "UPSN"]),
        Filters(sources=["c~1", "a"]),
        Filters(time_range=("2012-03-01", "2014-12-31T23:59:59")),
        Filters(time_range=(None, "2011-01-01")),
        Filters(time_range=("2019-06-01", None)),
        Filters(time_range=("1066-10-14", "2011-01-01")),  # dates nanoseconds cannot hold
        Filters(time_range=("2012-01-01", "2263-01-01")),
        Filters(bbox=(-20.0, -10.0, 35.0, 40.0)),
        Filters(
            zones=["11N"], sources=["b"], time_range=("2013-01-01", "2016-01-01"), bbox=(-90, -45, 90, 45)
        ),
    ):
        expected = pandas_mask(tiles, f)
        assert 0 < expected.sum() < len(tiles), f
        np.testing.assert_array_equal(filter_mask(tiles, f, columns=columns), expected)
        np.testing.assert_array_equal(filter_mask(tiles, f), expected)  # columns made on the fly


def test_columns_are_read_only_and_leave_the_table_alone():
    tiles = table(100, 0, True)
    before = tiles.copy()
    columns = FilterColumns.of(tiles)
    for array in (columns.zone_codes, columns.source_codes, columns.times, columns.lon, columns.lat):
        assert not array.flags.writeable
    pd.testing.assert_frame_equal(tiles, before)
    assert not FilterColumns.of(tiles.drop(columns="time")).times_within(None, None).any()  # no times
    columns = FilterColumns.of(tiles)
    assert not columns.times_within(pd.Timestamp("2263-01-01", tz="UTC"), None).any()
    np.testing.assert_array_equal(
        columns.times_within(None, pd.Timestamp("2263-01-01", tz="UTC")), tiles["time"].notna().to_numpy()
    )


@pytest.mark.parametrize(
    "box",
    [
        (-30.0, -10.0, 40.0, 25.0),
        (150.0, -60.0, -150.0, 60.0),
        (0.0, 0.0, 0.0, 0.0),
        (-180.0, -90.0, 180.0, 90.0),
    ],
)
def test_box_test_is_the_bbox_modules(box):
    """``FilterColumns.in_box`` keeps what ``indexer.bbox.in_bbox`` keeps: edges included, boxes
    across 180, missing centres in none."""
    from lookalike.indexer.bbox import in_bbox

    tiles = table(4000, 5, True)
    tiles.loc[::97, "lon"] = np.nan
    tiles.loc[::89, "lat"] = np.nan
    tiles.loc[1, ["lon", "lat"]] = box[0], box[1]  # on a corner
    columns = FilterColumns.of(tiles)
    want = in_bbox(tiles["lon"].to_numpy(), tiles["lat"].to_numpy(), box)
    np.testing.assert_array_equal(columns.in_box(*box), want)
    assert want[1]


def test_a_table_without_centres_is_in_no_box():
    """Picture folders not placed on a body have no lon/lat: zone and date filters still work,
    and no tile lies in a box."""
    tiles = table(300, 7, True).drop(columns=["lon", "lat"])
    columns = FilterColumns.of(tiles)
    assert not columns.in_box(-180, -90, 180, 90).any()
    np.testing.assert_array_equal(columns.zones_in({"10N"}), (tiles["zone"] == "10N").to_numpy())
    assert columns.zone_count() == 4


@pytest.mark.parametrize("n", [0, 1000, 3_000_000])  # 3 M: the kernels' rows split in chunks
def test_summaries_equal_pandas(n):
    tiles = table(n, seed=9, categorical=True)
    tiles.loc[tiles.index[::11], ["lon"]] = np.nan  # a chip without a place
    cols = FilterColumns.of(tiles)
    assert cols.zones_present() == [z for z in cols.zone_names if (tiles["zone"] == z).any()]
    times = tiles["time"].dropna()
    assert cols.time_span() == ((times.min(), times.max()) if len(times) else None)
    placed = tiles.dropna(subset=["lon", "lat"])
    extreme = cols.extreme_rows()
    if n:
        assert set(extreme) == {
            placed["lon"].idxmin(),
            placed["lat"].idxmin(),
            placed["lon"].idxmax(),
            placed["lat"].idxmax(),
        }
    else:
        assert len(extreme) == 0
    summary = cols.source_summary()
    if n == 0:
        assert summary.empty
        return
    groups = placed.groupby(placed["source"].astype(str), observed=True)
    expected = pd.DataFrame(
        dict(
            west=groups["lon"].min(),
            south=groups["lat"].min(),
            east=groups["lon"].max(),
            north=groups["lat"].max(),
            first=groups["time"].min().dt.as_unit("ns"),
            count=groups.size(),
        )
    )
    expected.index.name = "source"
    pd.testing.assert_frame_equal(summary.sort_index(), expected.sort_index(), check_dtype=False)
