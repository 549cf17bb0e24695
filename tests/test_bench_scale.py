"""``lookalike bench scale`` at a small N: the grown table, the cached build, the JSON the issue of
scale asks for, and filtered hits checked against filtering the whole table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import run_main

from lookalike.bench.scale import (
    chosen_filters,
    reference_mask,
    reference_rows,
    synthetic_tiles,
)
from lookalike.indexer.store import open_index

pytestmark = pytest.mark.slow  # a real index and two fresh processes


def test_the_grown_table_repeats_real_tiles_as_other_dated_acquisitions(mars_index):
    real = open_index(mars_index, verify=False).tiles
    n = 2 * len(real) + 5
    tiles = synthetic_tiles(real, n, seed=3)
    assert len(tiles) == n and tiles["tile_id"].is_unique
    acquisition = tiles["tile_id"].str.split(":").str[0]
    assert acquisition.nunique() == 3 and tiles.groupby(acquisition)["time"].nunique().eq(1).all()
    again = tiles.iloc[len(real) : 2 * len(real)].reset_index(drop=True)
    # the same source, row and column: thumbnails are drawn from the real source
    for column in ("source", "lon", "lat", "zone", "row", "col", "lon0", "lat3"):
        assert (again[column].astype(str) == real[column].astype(str)).all(), column
    assert (
        tiles["time"]
        .between(pd.Timestamp("2010-01-01", tz="UTC"), pd.Timestamp("2020-01-01", tz="UTC"))
        .all()
    )


def test_reference_ranks_by_distance_then_row():
    codes = np.array([[0b1111], [0b0001], [0b0011], [0b0001], [0b0000]], np.uint8)
    keep = np.array([True, True, True, False, True])
    assert reference_rows(codes, np.array([0], np.uint8), keep, 3).tolist() == [4, 1, 2]


def test_bench_scale_json_cache_and_identical_filters(mars_index, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    n = 3 * open_index(mars_index, verify=False).n + 17
    args = ["bench", "scale", "--n", str(n), "--source-index", str(mars_index), "--queries", "4", "--k", "50"]
    code, stdout, stderr = run_main([*args, "--json", tmp_path / "scale.json"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert json.loads((tmp_path / "scale.json").read_text()) == result
    for key in ("n", "bits", "open_s", "rss_open_mb", "search_p50_s", "filters", "build_s", "peak_rss_mb"):
        assert key in result, key
    assert result["n"] == n and result["bits"] == 128 and result["built_now"] is True
    assert [f["name"] for f in result["filters"]] == ["zone", "time", "bbox"]
    for f in result["filters"]:
        assert set(f) >= {"name", "share", "p50_s", "identical"} and f["identical"] is True, f
        assert 0 < f["share"] < 1
    index = open_index(tmp_path / "cache" / "scale" / result["index"])
    assert index.n == n
    real = open_index(mars_index, verify=False).manifest
    for key in ("body", "tiling", "sources"):  # the explorer serves it as it serves its source
        assert index.manifest[key] == real[key], key
    for f in result["filters"]:  # the filter the JSON names keeps the share it states
        spec = {key: value for key, value in f.items() if key not in ("name", "share", "p50_s", "identical")}
        assert reference_mask(index.tiles, spec).mean() == pytest.approx(f["share"], abs=1e-4)
    assert set(chosen_filters(index.tiles)) == {"zone", "time", "bbox"}
    code, stdout, stderr = run_main(args)  # built once: the second run measures the cached index
    assert code == 0, stderr
    again = json.loads(stdout)
    assert (
        again["built_now"] is False
        and again["build_s"] == result["build_s"]
        and again["index"] == result["index"]
    )
