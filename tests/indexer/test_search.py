"""Exact Hamming search: distances, ranking, filters before ranking, query kinds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from lookalike_testkit import make_index, popcount_reference, random_codes, stable_top_k, synthetic_tiles
from shapely.geometry import Point, box

from lookalike.errors import CodeLengthError, LookalikeError
from lookalike.indexer import search as search_mod
from lookalike.indexer.search import (
    Filters,
    Query,
    combine_examples,
    filter_mask,
    hamming_distances,
    search_index,
    tile_at,
    top_k,
)
from lookalike.indexer.store import Index


# ------------------------------------------------------------------ distances
@pytest.mark.parametrize("bits", [8, 24, 64, 128, 512, 520])
def test_hamming_distances_match_reference(bits):
    codes = random_codes(300, bits, seed=bits)
    query = random_codes(1, bits, seed=bits + 1)[0]
    got = hamming_distances(codes, query)
    np.testing.assert_array_equal(got, popcount_reference(codes, query))
    assert hamming_distances(codes, codes[17])[17] == 0
    # the complement is at the maximum distance
    assert hamming_distances(codes, ~codes[5])[5] == bits


def test_hamming_distances_in_blocks(monkeypatch):
    """The scan in row blocks gives the same answer as one pass (block edges not aligned)."""
    codes = random_codes(1000, 128, seed=3)
    query = codes[0]
    full = hamming_distances(codes, query)
    monkeypatch.setattr(search_mod, "SCAN_ROWS", 97)
    np.testing.assert_array_equal(hamming_distances(codes, query), full)
    np.testing.assert_array_equal(full, popcount_reference(codes, query))


def test_hamming_distances_on_non_contiguous_and_memmap(tmp_path):
    codes = random_codes(200, 64, seed=4)
    np.save(tmp_path / "c.npy", codes)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    np.testing.assert_array_equal(hamming_distances(mm[::3], mm[7]), popcount_reference(codes[::3], codes[7]))


@pytest.mark.parametrize("query_bits", [56, 72, 128])
def test_hamming_distances_wrong_length(query_bits):
    with pytest.raises(CodeLengthError):
        hamming_distances(random_codes(10, 64), np.zeros(query_bits // 8, np.uint8))


# ------------------------------------------------------------------ top_k
@pytest.mark.parametrize(
    "n, k, values", [(500, 10, 4), (500, 100, 2), (50, 200, 256), (1, 1, 2), (300, 300, 3), (1000, 999, 1)]
)
def test_top_k_matches_stable_sort(n, k, values):
    codes = random_codes(n, 64, seed=n + k, values=values)  # few values: many ties
    d = hamming_distances(codes, codes[0])
    rows, dist = top_k(d, k)
    ref_rows, ref_dist = stable_top_k(d, k)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(dist, ref_dist)
    assert len(rows) == min(k, n)


def test_top_k_with_row_names_and_empty():
    d = np.array([5, 1, 1, 3, 1, 0], np.uint16)
    names = np.array([10, 20, 30, 40, 50, 60])
    rows, dist = top_k(d, 4, rows=names)
    assert rows.tolist() == [60, 20, 30, 50] and dist.tolist() == [0, 1, 1, 1]
    rows, dist = top_k(d, 0)
    assert len(rows) == 0 and len(dist) == 0
    rows, _ = top_k(np.zeros(0, np.uint16), 5)
    assert len(rows) == 0


# ------------------------------------------------------------------ combine_examples
def _vote_reference(pos_bits: np.ndarray, neg_bits: np.ndarray | None, w: float = 0.5):
    out = []
    for j in range(pos_bits.shape[1]):
        vote = sum(1 if b else -1 for b in pos_bits[:, j])
        if neg_bits is not None:
            vote -= w * sum(1 if b else -1 for b in neg_bits[:, j])
        out.append(pos_bits[0, j] if vote == 0 else vote > 0)
    return np.packbits(np.array(out, bool))


def test_combine_examples_majority_of_positives():
    pos = np.unpackbits(random_codes(3, 64, seed=1), axis=1).astype(bool)
    got = combine_examples(np.packbits(pos, axis=1))
    majority = pos.sum(0) >= 2
    np.testing.assert_array_equal(got, np.packbits(majority))


def test_combine_examples_tie_keeps_first_positive():
    a = np.packbits([1, 1, 0, 0, 1, 0, 1, 0])
    b = np.packbits([0, 1, 1, 0, 0, 1, 1, 0])
    got = combine_examples(np.stack([a, b]))
    np.testing.assert_array_equal(got, a)  # every disagreement is a tie
    got = combine_examples(np.stack([b, a]))
    np.testing.assert_array_equal(got, b)


def test_combine_examples_negative_weight():
    one = np.packbits([1] * 8)
    zero = np.packbits([0] * 8)
    # one negative (weight 0.5) cannot outvote one positive
    np.testing.assert_array_equal(combine_examples(one[None], zero[None]), one)
    # two positives split 1:1, a negative breaks the tie away from itself
    mixed = np.stack([one, zero])
    np.testing.assert_array_equal(combine_examples(mixed, one[None]), zero)
    np.testing.assert_array_equal(combine_examples(mixed, zero[None]), one)
    # two negatives exactly cancel one positive: a tie, which keeps the positive's bit
    np.testing.assert_array_equal(combine_examples(one[None], np.stack([zero, zero])), one)


@pytest.mark.parametrize("n_pos, n_neg", [(1, 0), (2, 1), (3, 2), (4, 4), (5, 1), (2, 5)])
def test_combine_examples_matches_vote_reference(n_pos, n_neg):
    rng = np.random.default_rng(n_pos * 10 + n_neg)
    pos = rng.random((n_pos, 32)) < 0.5
    neg = rng.random((n_neg, 32)) < 0.5 if n_neg else None
    got = combine_examples(np.packbits(pos, axis=1), None if neg is None else np.packbits(neg, axis=1))
    np.testing.assert_array_equal(got, _vote_reference(pos, neg))


def test_combine_examples_errors():
    with pytest.raises(LookalikeError):
        combine_examples(np.zeros((0, 8), np.uint8))
    with pytest.raises(CodeLengthError):
        combine_examples(np.zeros((1, 8), np.uint8), np.zeros((1, 4), np.uint8))


# ------------------------------------------------------------------ filters
@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return make_index(tmp_path_factory.mktemp("idx") / "i", n=800, bits=64, seed=11, values=4)


def _reference_mask(tiles: pd.DataFrame, f: Filters) -> np.ndarray:
    """Row-by-row, with shapely points, independent of the vectorised implementation."""
    out = []

    def utc(t):
        if t is None:
            return None
        t = pd.Timestamp(t)
        return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")

    start, end = (utc(t) for t in (f.time_range or (None, None)))
    region = (
        f.region
        if f.region is None or isinstance(f.region, shapely.Geometry)
        else shapely.geometry.shape(f.region)
    )
    for rec in tiles.to_dict("records"):
        ok = True
        if f.zones:
            ok &= rec["zone"] in {z.upper() for z in f.zones}
        if f.sources:
            ok &= rec["source"] in f.sources
        if f.labels:
            ok &= rec["label"] in f.labels
        if f.time_range:
            t = rec["time"]
            ok &= not pd.isna(t) and (start is None or t >= start) and (end is None or t <= end)
        if f.bbox:
            w, s, e, n = f.bbox
            lon_ok = (w <= rec["lon"] <= e) if w <= e else (rec["lon"] >= w or rec["lon"] <= e)
            ok &= lon_ok and s <= rec["lat"] <= n
        if region is not None:
            ok &= region.covers(Point(rec["lon"], rec["lat"]))
        out.append(bool(ok))
    return np.array(out)


FILTERS = {
    "zones": Filters(zones=["31n", "32N", "1S", "60S"]),
    "sources": Filters(sources=["beta"]),
    "labels": Filters(labels=["dune", "streak"]),
    "time": Filters(time_range=("2012-01-01", "2015-06-30T12:00:00Z")),
    "time open start": Filters(time_range=(None, "2013-01-01")),
    "time open end": Filters(time_range=(pd.Timestamp("2018-01-01", tz="UTC"), None)),
    "bbox": Filters(bbox=(-30.0, -20.0, 40.0, 35.0)),
    "bbox antimeridian": Filters(bbox=(150.0, -50.0, -150.0, 50.0)),
    "region": Filters(region=shapely.Polygon([(-100, -40), (20, -40), (60, 30), (-100, 50)])),
    "region geojson": Filters(
        region={
            "type": "Feature",
            "properties": {},
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]],
                    [[[-170, -50], [-120, -50], [-120, 0], [-170, 0], [-170, -50]]],
                ],
            },
        }
    ),
    "combined": Filters(
        sources=["alpha", "gamma"],
        labels=["crater"],
        bbox=(-180, -60, 90, 10),
        time_range=("2011-01-01", None),
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_filter_mask_matches_reference(index, name):
    f = FILTERS[name]
    mask = filter_mask(index.tiles, f)
    ref = _reference_mask(index.tiles, f)
    assert 0 < ref.sum() < len(ref)  # the filter does something
    np.testing.assert_array_equal(mask, ref)


def test_time_filter_excludes_tiles_without_time(index):
    mask = filter_mask(index.tiles, Filters(time_range=("1900-01-01", "2100-01-01")))
    np.testing.assert_array_equal(mask, index.tiles["time"].notna().to_numpy())
    assert index.tiles["time"].isna().any()


@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("k", [1, 25, 5000])
def test_filters_apply_before_ranking(index, name, k):
    f = FILTERS[name]
    query = index.codes[3]
    hits = search_index(index, query, k=k, filters=f)
    subset = np.flatnonzero(_reference_mask(index.tiles, f))
    d = popcount_reference(np.asarray(index.codes)[subset], query)
    ref_rows, ref_dist = stable_top_k(d, k, rows=subset)
    np.testing.assert_array_equal(hits.attrs["index_row"], ref_rows)
    np.testing.assert_array_equal(hits["distance"], ref_dist)
    assert hits["tile_id"].tolist() == index.tiles["tile_id"].to_numpy()[ref_rows].tolist()
    assert hits["rank"].tolist() == list(range(1, len(ref_rows) + 1))
    assert len(hits) == min(k, len(subset))


def test_unfiltered_search_is_a_stable_sort(index):
    query = index.codes[10]
    hits = search_index(index, query, k=300)
    ref_rows, ref_dist = stable_top_k(popcount_reference(np.asarray(index.codes), query), 300)
    np.testing.assert_array_equal(hits.attrs["index_row"], ref_rows)
    np.testing.assert_array_equal(hits["distance"], ref_dist)
    assert hits["distance"].iloc[0] == 0


def test_filter_errors(index):
    with pytest.raises(LookalikeError, match="no labels"):
        filter_mask(index.tiles.drop(columns="label"), Filters(labels=["dune"]))
    with pytest.raises(LookalikeError, match="empty"):
        filter_mask(index.tiles, Filters(region="POLYGON EMPTY"))
    with pytest.raises(LookalikeError):
        filter_mask(index.tiles, Filters(region=42))
    assert filter_mask(index.tiles, Filters()) is None
    assert filter_mask(index.tiles, None) is None


def test_filter_that_matches_nothing(index):
    hits = search_index(index, index.codes[0], k=10, filters=Filters(sources=["nobody"]))
    assert len(hits) == 0 and {"rank", "distance", "tile_id"} <= set(hits.columns)


# ------------------------------------------------------------------ queries
def test_query_by_tile_id(index):
    tile_id = index.tiles["tile_id"].iloc[42]
    hits = search_index(index, Query(tile_id=tile_id), k=5)
    assert hits["distance"].iloc[0] == 0
    ref_rows, _ = stable_top_k(popcount_reference(np.asarray(index.codes), index.codes[42]), 5)
    np.testing.assert_array_equal(hits.attrs["index_row"], ref_rows)
    with pytest.raises(LookalikeError, match="nope"):
        search_index(index, Query(tile_id="nope"))


def test_query_by_code(index):
    code = random_codes(1, 64, seed=99)[0]
    hits = search_index(index, Query(code=code), k=7)
    ref_rows, ref_dist = stable_top_k(popcount_reference(np.asarray(index.codes), code), 7)
    np.testing.assert_array_equal(hits.attrs["index_row"], ref_rows)
    np.testing.assert_array_equal(hits["distance"], ref_dist)


@pytest.mark.parametrize("nbytes", [4, 7, 9, 64])
def test_query_code_wrong_length(index, nbytes):
    with pytest.raises(CodeLengthError):
        search_index(index, Query(code=np.zeros(nbytes, np.uint8)))
    with pytest.raises(CodeLengthError):
        search_index(index, np.zeros(nbytes, np.uint8))


@pytest.mark.parametrize("k", [0, -1, 10_001])
def test_k_out_of_range(index, k):
    with pytest.raises(LookalikeError, match="k must be"):
        search_index(index, index.codes[0], k=k)


def test_k_at_the_limits(index):
    assert len(search_index(index, index.codes[0], k=1)) == 1
    assert len(search_index(index, index.codes[0], k=10_000)) == len(index)


def test_query_needs_exactly_one_kind(index):
    with pytest.raises(LookalikeError, match="exactly one"):
        search_index(index, Query())
    with pytest.raises(LookalikeError, match="exactly one"):
        search_index(index, Query(tile_id="t00001", lonlat=(0.0, 0.0)))


def test_query_by_positive_and_negative_examples(index):
    ids = index.tiles["tile_id"].tolist()
    pos, neg = [ids[1], ids[2], ids[3]], [ids[4]]
    code = combine_examples(np.asarray(index.codes)[[1, 2, 3]], np.asarray(index.codes)[[4]])
    hits = search_index(index, Query(positives=pos, negatives=neg), k=20)
    ref_rows, _ = stable_top_k(popcount_reference(np.asarray(index.codes), code), 20)
    np.testing.assert_array_equal(hits.attrs["index_row"], ref_rows)


# ------------------------------------------------------------------ tile under a point
def _footprint_index(tmp_path):
    """Tiles 2 x 2 degrees on a 1-degree lattice (each point lies in up to four), plus one
    tile straddling the antimeridian."""
    from lookalike_testkit import hash_bytes

    from lookalike.indexer.store import open_index, write_index

    recs = []
    for lon in np.arange(-10.0, 11.0, 1.0):
        for lat in np.arange(-5.0, 6.0, 1.0):
            recs.append((lon, lat))
    recs.append((179.8, 20.0))
    lon = np.array([r[0] for r in recs])
    lat = np.array([r[1] for r in recs])
    tiles = pd.DataFrame(
        dict(
            tile_id=[f"f{i}" for i in range(len(recs))], source="s", zone="31N", lon=lon, lat=lat, time=pd.NaT
        )
    )
    for i, (dx, dy) in enumerate([(-1, 1), (1, 1), (1, -1), (-1, -1)]):
        tiles[f"lon{i}"] = ((lon + dx + 180) % 360 - 180).astype(np.float32)
        tiles[f"lat{i}"] = (lat + dy).astype(np.float32)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (len(recs), 8), dtype=np.uint8)
    write_index(tmp_path / "fp", codes, tiles, bits=64, hash_model=hash_bytes(64))
    return open_index(tmp_path / "fp")


def _nearest_containing(tiles, lon, lat):
    best, best_d = None, np.inf
    for row, rec in enumerate(tiles.to_dict("records")):
        xs = np.array([rec[f"lon{i}"] for i in range(4)], float)
        xs = (xs - lon + 180) % 360 - 180 + lon
        poly = shapely.Polygon(zip(xs, [rec[f"lat{i}"] for i in range(4)]))
        if not poly.covers(Point(lon, lat)):
            continue
        # great-circle angle between the point and the tile centre
        p1, p2 = np.radians([lat, rec["lat"]])
        dl = np.radians(rec["lon"] - lon)
        d = np.arccos(np.clip(np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl), -1, 1))
        if d < best_d - 1e-12:
            best, best_d = row, d
    return best


def test_tile_at_is_nearest_centre_among_covering_tiles(tmp_path):
    index = _footprint_index(tmp_path)
    rng = np.random.default_rng(5)
    points = list(zip(rng.uniform(-10.5, 10.5, 60), rng.uniform(-5.5, 5.5, 60)))
    points += [(0.3, 0.2), (-7.6, 4.9), (179.9, 20.5), (-179.5, 19.5), (180.0, 20.0)]
    for lon, lat in points:
        expected = _nearest_containing(index.tiles, lon, lat)
        assert expected is not None
        assert tile_at(index, lon, lat) == expected, (lon, lat)


def test_query_by_lonlat(tmp_path):
    index = _footprint_index(tmp_path)
    row = _nearest_containing(index.tiles, 3.2, -1.9)
    hits = search_index(index, Query(lonlat=(3.2, -1.9)), k=3)
    assert hits.attrs["index_row"][0] == row and hits["distance"].iloc[0] == 0
    with pytest.raises(LookalikeError, match="no indexed tile covers"):
        search_index(index, Query(lonlat=(90.0, 45.0)))


def test_lonlat_needs_footprints(tmp_path):
    idx = make_index(tmp_path / "i", n=20)
    bare = Index(idx.path, idx.manifest, idx.codes, idx.tiles.drop(columns=["lon0", "lon1", "lon2", "lon3"]))
    with pytest.raises(LookalikeError, match="footprints"):
        tile_at(bare, 0.0, 0.0)


def test_search_on_index_built_from_table_only(tmp_path):
    """An index without time or label columns is searchable with non-time filters."""
    from lookalike_testkit import hash_bytes

    from lookalike.indexer.store import open_index, write_index

    tiles = synthetic_tiles(50, seed=2).drop(columns=["label"])
    codes = random_codes(50, 64, seed=2)
    write_index(tmp_path / "x", codes, tiles, bits=64, hash_model=hash_bytes(64))
    idx = open_index(tmp_path / "x")
    hits = search_index(idx, codes[0], k=50, filters=Filters(bbox=(-180, -90, 180, 0)))
    assert (hits["lat"] <= 0).all() and len(hits) == int((tiles["lat"] <= 0).sum())
    assert box(-180, -90, 180, 0).covers(Point(hits["lon"].iloc[0], hits["lat"].iloc[0]))


def test_the_query_tile_comes_first_among_ties(tmp_path):
    """Blank sea or repeated terrain: many tiles share the clicked tile's code. Ties go by row
    order, but the clicked tile itself is always hit #1 (unless a filter removes it)."""
    from lookalike_testkit import hash_bytes, synthetic_tiles

    from lookalike.indexer.search import search_index_batch
    from lookalike.indexer.store import open_index, write_index

    tiles = synthetic_tiles(300)
    codes = np.zeros((300, 16), np.uint8)
    codes[::2] = 255  # two codes only: 150 tiles at distance 0 from any tile
    write_index(tmp_path / "idx", codes, tiles, bits=128, hash_model=hash_bytes(128), info=dict(kind="test"))
    index = open_index(tmp_path / "idx")
    for k in (1, 10, 1000):
        hits = search_index(index, Query(tile_id="t00200"), k=k)
        assert hits["tile_id"].iloc[0] == "t00200" and hits["distance"].iloc[0] == 0
        assert len(hits) == min(k, 300) and hits["tile_id"].is_unique
        assert (np.diff(hits["distance"].to_numpy()) >= 0).all()
    batch = search_index_batch(index, [Query(tile_id="t00201"), np.asarray(codes[201])], k=5)
    assert (
        batch[0]["tile_id"].iloc[0] == "t00201" and batch[1]["tile_id"].iloc[0] == "t00001"
    )  # a raw code has no tile
    lon, lat = tiles.loc[200, ["lon", "lat"]]
    assert search_index(index, Query(lonlat=(lon, lat)), k=3)["tile_id"].iloc[0] == "t00200"
    other = Filters(sources=sorted(set(tiles["source"]) - {tiles.loc[200, "source"]}))
    filtered = search_index(index, Query(tile_id="t00200"), k=20, filters=other)
    assert "t00200" not in set(filtered["tile_id"])  # a filter that removes it keeps it out
