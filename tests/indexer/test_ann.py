"""Approximate search through faiss and usearch (``indexer.ann``), stored with an index, chosen
by ``method="auto"``; the batched exact scan; the benchmark's code model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import make_index, run_main

from lookalike.bench.sublinear import (
    bench_codes,
    bench_sublinear,
    default_methods,
    flip_rates,
    neighbour_pairs,
    parse_params,
    parse_sweeps,
    replicate,
)
from lookalike.errors import CodeLengthError, IndexCorruptError, LookalikeError
from lookalike.indexer import ann as ann_module
from lookalike.indexer import hamming_kernel
from lookalike.indexer.ann import ANN_METHODS, RECALL_BAR, build_ann, calibrate, load_ann
from lookalike.indexer.defaults import ANN_NAMES
from lookalike.indexer.hamming_kernel import scan_top_k, scan_top_k_batch
from lookalike.indexer.search import (
    METHODS,
    Filters,
    Query,
    choose_method,
    filter_mask,
    hamming_distances,
    ranked_rows_batch,
    search_index,
    search_index_batch,
    top_k,
)
from lookalike.indexer.store import open_index, write_ann, write_index
from lookalike.models.metrics import distance_recall
from lookalike.workflows.indexing import index_ann, index_summary


def clustered_codes(
    n: int, bits: int = 128, centres: int = 40, rate: float = 0.04, seed: int = 0, duplicates: float = 0.05
):
    """Noisy copies of a few random centres with skewed bits: many exact ties, like real codes
    (a ``duplicates`` share of the rows are copies of row 0)."""
    rng = np.random.default_rng(seed)
    p = rng.choice([0.05, 0.5, 0.95], bits)
    base = np.packbits(rng.random((centres, bits)) < p, axis=1)
    codes = base[rng.integers(0, centres, n)]
    codes ^= np.packbits(rng.random((n, bits)) < rate, axis=1)
    codes[rng.integers(0, n, int(n * duplicates))] = codes[0]  # exact duplicates: ties at distance 0
    return codes


def reference(codes, query, k, mask=None):
    """numpy brute force: distances of every row, stable ranking, rows outside the mask dropped."""
    rows = np.arange(len(codes)) if mask is None else np.flatnonzero(mask)
    return top_k(hamming_distances(codes[rows], query), k, rows=rows)


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    codes = clustered_codes(12_000)
    queries = np.concatenate(
        [
            codes[[0, 5, 77]],  # in the archive, one with many duplicates
            codes[rng.integers(0, len(codes), 3)] ^ np.packbits(rng.random((3, 128)) < 0.05, axis=1),
            rng.integers(0, 256, (2, 16), dtype=np.uint8),
        ]
    )  # far from everything
    mask = rng.random(len(codes)) < 0.6
    return codes, queries, mask


# ------------------------------------------------------------------ batched exact scan
@pytest.mark.parametrize("k", [1, 7, 1000, 10_000, 20_000])
@pytest.mark.parametrize("masked", [False, True])
def test_batch_scan_matches_reference_and_single(data, k, masked):
    codes, queries, mask = data
    mask = mask if masked else None
    got = scan_top_k_batch(codes, queries, k, mask, threads=3)  # 3 parts: uneven row ranges merged
    assert len(got) == len(queries)
    for q, (rows, dist) in zip(queries, got):
        want = reference(codes, q, k, mask)
        assert_same((rows, dist), want)
        assert_same((rows, dist), scan_top_k(codes, q, k, mask))


@pytest.mark.parametrize("share", [0.0, 0.001, 0.05, 0.06, 0.5, 0.9])
@pytest.mark.parametrize("k", [1, 50, 5000])
def test_scan_under_filters_of_every_width(data, share, k):
    """Narrow filters (at most SPARSE_MASK of the rows) scan their row list, wide ones every row
    with the mask applied branch-free: both give the reference answer."""
    codes, queries, _ = data
    mask = np.random.default_rng(int(share * 1000) + k).random(len(codes)) < share
    for q in queries[:4]:
        assert_same(scan_top_k(codes, q, k, mask), reference(codes, q, k, mask))


@pytest.mark.parametrize("share", [0.06, 0.2, 0.3])
@pytest.mark.parametrize("run", [1, 16, 500])
def test_scan_under_clustered_filters(data, share, run, monkeypatch):
    """Filters keeping runs of rows (a date range over rows stored acquisition by acquisition)
    up to CLUSTERED_MASK of them take the row list: the reference answer either way, and the
    row list is taken exactly when the runs are long enough."""
    codes, queries, _ = data
    starts = np.random.default_rng(run).random(len(codes) // run + 1) < share
    mask = np.repeat(starts, run)[: len(codes)]
    visited = []
    real = hamming_kernel._scan_rows
    monkeypatch.setattr(hamming_kernel, "_scan_rows", lambda *a: visited.append(1) or real(*a))
    for q in queries[:3]:
        assert_same(scan_top_k(codes, q, 50, mask), reference(codes, q, 50, mask))
    kept = mask.mean()
    assert bool(visited) == (
        kept <= hamming_kernel.SPARSE_MASK
        or (kept <= hamming_kernel.CLUSTERED_MASK and run >= hamming_kernel.RUN_ROWS)
    )


def test_batch_scan_groups_and_compaction(data):
    """Tiny buffers force query groups (several reads) and many compactions: same answer."""
    codes, queries, mask = data
    got = scan_top_k_batch(codes, queries, 5, mask, threads=2, max_buffer_bytes=1)
    for q, res in zip(queries, got):
        assert_same(res, reference(codes, q, 5, mask))


def test_batch_scan_empty_cases(data):
    codes, queries, _ = data
    nothing = np.zeros(len(codes), bool)
    assert all(len(r) == 0 for r, _ in scan_top_k_batch(codes, queries, 10, nothing))
    assert scan_top_k_batch(codes, queries[:0], 10) == []
    with pytest.raises(ValueError):
        scan_top_k_batch(codes, np.zeros((2, 8), np.uint8), 10)


def test_ranked_rows_batch_odd_lengths():
    """Lengths that are not a multiple of 64 bits go through the numpy reference per query."""
    codes = clustered_codes(500, bits=24)
    queries = codes[[3, 9]]
    for q, res in zip(queries, ranked_rows_batch(codes, queries, 50)):
        assert_same(res, reference(codes, q, 50))


# ------------------------------------------------------------------ the benchmark's code model
def grid_tiles(rows: int, cols: int) -> pd.DataFrame:
    r, c = np.divmod(np.arange(rows * cols), cols)
    return pd.DataFrame(dict(source="s", zone="1N", row=r, col=c))


def test_neighbour_pairs_and_flip_rates():
    tiles = grid_tiles(3, 4)
    i, j = neighbour_pairs(tiles)
    assert len(i) == 3 * 3 + 2 * 4  # horizontal + vertical neighbours
    assert np.all(
        np.abs(tiles["row"].to_numpy()[i] - tiles["row"].to_numpy()[j])
        + np.abs(tiles["col"].to_numpy()[i] - tiles["col"].to_numpy()[j])
        == 1
    )
    # bit 0 alternates along rows and columns (a checkerboard): every pair differs there
    bits = np.zeros((12, 64), bool)
    bits[:, 0] = (tiles["row"] + tiles["col"]) % 2 == 1
    rates = flip_rates(np.packbits(bits, axis=1), tiles)
    assert rates[0] == 1.0 and rates[1:].sum() == 0


def test_replicate_keeps_the_flip_rates():
    rng = np.random.default_rng(0)
    sources = rng.integers(0, 256, (50, 16), dtype=np.uint8)
    rates = np.where(np.arange(128) < 64, 0.02, 0.3)
    out = replicate(sources, 200_000, rates, seed=1)
    assert out.shape == (200_000, 16)
    # every replica is one of the sources plus noise: its nearest source is its own
    flips = np.unpackbits(out[:2000, None, :] ^ sources[None], axis=2).sum(axis=2).min(axis=1)
    assert 0.8 * rates.sum() < flips.mean() < 1.1 * rates.sum()
    sample = out[:5000]
    nearest = np.unpackbits(sample[:, None, :] ^ sources[None], axis=2).sum(axis=2).argmin(axis=1)
    per_bit = np.unpackbits(sample ^ sources[nearest], axis=1).mean(axis=0)
    np.testing.assert_allclose(per_bit[:64].mean(), 0.02, atol=0.006)
    np.testing.assert_allclose(per_bit[64:].mean(), 0.3, atol=0.03)


# ------------------------------------------------------------------ the adapters
EXHAUSTIVE = {
    "hnsw": dict(ef=20_000),
    "usearch": dict(ef=20_000),
    "ivf": dict(nprobe=1 << 20),
    "lsh": dict(nflip=16),
}
# faiss HNSW with m=16 leaves these 40 tight clusters unreachable from each other (73 of 2,000
# codes reachable): the default m=32 links them
SMALL = {"ivf": dict(nlist=32, sample=4000)}


@pytest.fixture(scope="module")
def small():
    """2,000 clustered codes (ties) and queries near and far from them. Ten copies of row 0, not
    a hundred: both graph libraries leave some of a hundred identical codes out of reach of
    any walk (reported in docs/scaling.md), which the calibration of a stored graph measures."""
    rng = np.random.default_rng(4)
    codes = clustered_codes(2000, seed=4, duplicates=0.005)
    queries = np.concatenate(
        [
            codes[[0, 9]],
            codes[[3]] ^ np.packbits(rng.random((1, 128)) < 0.05, axis=1),
            rng.integers(0, 256, (1, 16), dtype=np.uint8),
        ]
    )
    return codes, queries, rng.random(len(codes)) < 0.3


@pytest.fixture(scope="module", params=list(ANN_METHODS))
def ann(request, small):
    with pytest.MonkeyPatch.context() as patch:  # one thread: see test_save_load_and_add_...
        patch.setattr(ann_module, "USEARCH_ADD_THREADS", 1)
        return build_ann(small[0], request.param, **SMALL.get(request.param, {}))


def assert_exact_answer(got, want, codes, query):
    """The exact scan's answer up to ties at the k-th distance: the same distances in order, the
    same rows below the k-th distance, and every row at the distance it is reported at."""
    rows, dist = got
    np.testing.assert_array_equal(dist, want[1])
    np.testing.assert_array_equal(hamming_distances(codes[rows], query), dist)
    below = want[1] < want[1][-1]
    np.testing.assert_array_equal(rows[below], want[0][below])
    assert len(set(rows.tolist())) == len(rows)
    assert ((np.diff(dist) > 0) | (np.diff(rows) > 0)).all()  # ranked by (distance, row), like the scan


@pytest.mark.parametrize("k", [1, 10, 300])
def test_exhaustive_settings_give_the_exact_answer(small, ann, k):
    codes, queries, _ = small
    for q in queries:
        assert_exact_answer(ann.search(q, k, **EXHAUSTIVE[ann.method]), reference(codes, q, k), codes, q)


def test_filters_are_applied_before_ranking(small, ann):
    """Only rows in the mask, and with an exhaustive setting the exact filtered answer: the
    selector (hnsw) or the scan of the kept rows (the others)."""
    codes, queries, mask = small
    for q in queries:
        got = ann.search(q, 100, mask, **EXHAUSTIVE[ann.method])
        assert mask[got[0]].all()
        assert_exact_answer(got, reference(codes, q, 100, mask), codes, q)
    assert len(ann.search(queries[0], 10, np.zeros(len(codes), bool))[0]) == 0


def test_default_settings_rank_by_true_distances(small, ann):
    codes, queries, _ = small
    rows, dist = ann.search(queries[0], 50)
    np.testing.assert_array_equal(hamming_distances(codes[rows], queries[0]), dist)
    assert rows[0] == 0 and dist[0] == 0  # a tile finds itself
    assert ann.describe()["method"] == ann.method and ann.describe()["bytes_per_item"] > 0


def test_save_load_and_add_equal_a_fresh_build(small, ann, tmp_path, monkeypatch):
    # usearch links nodes from several threads at once; about one query in 40 then misses a row
    # that no walk reaches even at ef >= N. Built on one thread its graph is deterministic.
    monkeypatch.setattr(ann_module, "USEARCH_ADD_THREADS", 1)
    codes, queries, _ = small
    path = tmp_path / f"ann{ann.suffix}"
    ann.save(path)
    loaded = load_ann(path, ann.method, codes, ann.params)
    assert loaded.n == len(codes)
    for q in queries:
        assert_exact_answer(
            loaded.search(q, 200, **EXHAUSTIVE[ann.method]), reference(codes, q, 200), codes, q
        )
    loaded.add(codes[:5])  # a loaded index (for usearch a read-only memory map) still grows
    assert loaded.n == len(codes) + 5 and len(loaded.codes) == len(codes) + 5
    # grown in two steps, as --append does (on codes without the clusters' duplicates: a graph
    # grown onto hundreds of copies of a few codes leaves some unreachable, one built at once not)
    spread = np.random.default_rng(5).integers(0, 256, (2000, 16), dtype=np.uint8)
    grown = build_ann(spread[:1500], ann.method, **SMALL.get(ann.method, {}))
    grown.add(spread[1500:])
    assert grown.n == len(spread)
    for q in np.concatenate([spread[[3, 1700]], queries]):
        assert_exact_answer(
            grown.search(q, 200, **EXHAUSTIVE[ann.method]), reference(spread, q, 200), spread, q
        )
    with pytest.raises(IndexCorruptError):  # the file holds 2,000 codes, not 1,999
        load_ann(path, ann.method, codes[:-1], ann.params)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IndexCorruptError):
        load_ann(path, ann.method, codes, ann.params)


def test_adapter_errors(small, ann):
    codes, queries, mask = small
    with pytest.raises(CodeLengthError):
        ann.search(queries[0][:8], 10)
    with pytest.raises(LookalikeError):
        ann.search(queries[0], 0)
    with pytest.raises(LookalikeError):
        ann.search(queries[0], 10, mask[:-1])
    with pytest.raises(CodeLengthError):
        ann.add(codes[:5, :8])


def test_build_errors(small):
    with pytest.raises(LookalikeError, match="unknown approximate method"):
        build_ann(small[0], "annoy")
    with pytest.raises(LookalikeError, match="bad options"):
        build_ann(small[0], "hnsw", colour=3)
    with pytest.raises(CodeLengthError):
        build_ann(small[0][:, :7], "hnsw")
    with pytest.raises(LookalikeError, match="at least"):
        build_ann(small[0][:10], "ivf", nlist=64)
    for method, bad in (
        ("hnsw", dict(m=0)),
        ("hnsw", dict(m=1.5)),
        ("ivf", dict(nlist=-3)),
        ("lsh", dict(key_bits=99)),
        ("lsh", dict(tables=True)),
    ):
        with pytest.raises(LookalikeError, match="must be an integer"):
            build_ann(small[0], method, **bad)


def test_calibrate_picks_the_cheapest_setting_at_the_bar(small):
    codes = small[0]
    hnsw = build_ann(codes, "hnsw")
    result = calibrate(hnsw, k=100, queries=16)
    assert (
        result["option"] == "ef" and result["value"] == hnsw.sweep[0]
    )  # 2,000 codes: the first ef walks them all
    assert result["meets_bar"] and result["recall"] >= RECALL_BAR and result["k"] == 100
    assert result["speedup"] > 0 and result["queries"] == 16 and result["n"] == len(codes)
    lsh = build_ann(codes, "lsh")
    strict = calibrate(lsh, k=100, queries=8, recall_bar=1.01)  # out of reach: the most accurate one
    assert not strict["meets_bar"] and strict["value"] == lsh.sweep[-1]


# ------------------------------------------------------------------ stored with an index
def calibration(**changes):
    return dict(
        dict(
            k=1000,
            option="ef",
            value=1000,
            recall=0.97,
            recall_min=0.9,
            ms=1.0,
            exact_ms=5.0,
            speedup=5.0,
            meets_bar=True,
            queries=64,
            n=3000,
        ),
        **changes,
    )


def test_stored_ann_is_checksummed_extended_and_used(tmp_path):
    index = make_index(tmp_path / "idx", n=3000, bits=128, values=4)  # few byte values: many ties
    codes = np.asarray(index.codes)
    write_ann(index.path, build_ann(codes, "hnsw"), calibration())
    index = open_index(index.path)
    assert index.ann_info["method"] == "hnsw" and index.ann().n == 3000
    assert index.manifest["files"]["ann"]["name"].endswith(".faiss")
    assert index_summary(index.path)["bytes_per_tile"]["ann"] > 0

    # auto takes it only where its calibration allows
    assert choose_method(index, 1000, None) == "hnsw"
    assert choose_method(index, 1001, None) == "exact"  # beyond the calibrated k
    assert choose_method(index, 100, np.arange(3000) < 300) == "exact"  # a narrow filter: the scan is cheap
    query = Query(code=codes[11])
    auto = search_index(index, query, k=300, method="auto")
    assert_exact_answer(
        (auto.attrs["index_row"], auto["distance"].to_numpy()),
        reference(codes, codes[11], 300),
        codes,
        codes[11],
    )
    filters = Filters(zones=sorted(set(index.tiles["zone"]))[:20])
    hnsw = search_index(index, query, k=300, filters=filters, method="hnsw")
    assert filter_mask(index.tiles, filters)[hnsw.attrs["index_row"]].all()

    # an append extends the graph; its measurement is dropped until taken again
    more = make_index(tmp_path / "more", n=3200, bits=128, values=4, seed=0)
    new_tiles = more.tiles.iloc[3000:].reset_index(drop=True)
    write_index(index.path, np.asarray(more.codes)[3000:], new_tiles, bits=128, append=True)
    index = open_index(index.path)
    assert index.ann().n == 3200 and index.ann_info["calibration"] is None
    assert choose_method(index, 10, None) == "exact"
    measured = index_ann(index.path)  # what `lookalike index --append` does next
    index = open_index(index.path)
    assert index.ann_info["calibration"] == measured and measured["n"] == 3200

    # a damaged graph is refused like any other file of the index
    ann_file = index.path / index.manifest["files"]["ann"]["name"]
    blob = bytearray(ann_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    ann_file.write_bytes(bytes(blob))
    with pytest.raises(IndexCorruptError, match="ann file"):
        open_index(index.path)


def test_auto_keeps_to_the_scan_without_a_calibrated_ann(tmp_path):
    index = make_index(tmp_path / "idx", n=2000, bits=128)
    assert choose_method(index, 100, None) == "exact"
    write_ann(index.path, build_ann(np.asarray(index.codes), "ivf", nlist=32), calibration(meets_bar=False))
    assert choose_method(open_index(index.path), 100, None) == "exact"
    write_ann(index.path, build_ann(np.asarray(index.codes), "ivf", nlist=32), calibration(speedup=0.8))
    assert choose_method(open_index(index.path), 100, None) == "exact"
    write_ann(index.path, None)
    index = open_index(index.path)
    assert index.ann_info is None and "ann" not in index.manifest and not list(index.path.glob("ann-*"))
    with pytest.raises(LookalikeError, match="unknown search method"):
        choose_method(index, 10, None, "mih")


def test_methods_built_in_memory_are_kept(tmp_path):
    index = make_index(tmp_path / "idx", n=1500, bits=128, values=4)
    query = Query(code=np.asarray(index.codes[5]))
    for method in ANN_METHODS:
        hits = search_index(index, query, k=50, method=method)
        np.testing.assert_array_equal(
            hits["distance"],
            hamming_distances(np.asarray(index.codes)[hits.attrs["index_row"]], np.asarray(index.codes[5])),
        )
    assert set(index.__dict__["_approximate"]) == set(ANN_METHODS)
    assert METHODS == ("exact", *ANN_METHODS, "auto")


@pytest.mark.parametrize("method", ["exact", "hnsw"])
def test_search_batch_equals_single_searches(tmp_path, method):
    index = make_index(tmp_path / "idx", n=800, bits=128, values=4)
    queries = [Query(tile_id="t00003"), np.asarray(index.codes[40]), Query(positives=["t00001", "t00002"])]
    filters = Filters(sources=["alpha", "beta"])
    batch = search_index_batch(index, queries, k=300, filters=filters, method=method)
    for q, hits in zip(queries, batch):
        pd.testing.assert_frame_equal(hits, search_index(index, q, k=300, filters=filters, method=method))
    assert search_index_batch(index, [], k=5) == []


def test_cli_index_ann_then_search_auto(tmp_path):
    make_index(tmp_path / "idx", n=1200, bits=128)
    code, out, err = run_main(
        ["index", "--out", str(tmp_path / "idx"), "--ann", "hnsw", "--ann-param", "m=16"]
    )
    assert code == 0, err
    info = json.loads(out)["ann"]
    assert info["method"] == "hnsw" and info["params"]["m"] == 16 and info["calibration"]["k"] == 1000
    hits = tmp_path / "hits.json"
    for method in ("auto", "hnsw", "ivf"):
        code, _, err = run_main(
            [
                "search",
                str(tmp_path / "idx"),
                "--tile",
                "t00007",
                "--k",
                "50",
                "--method",
                method,
                "--json",
                str(hits),
            ]
        )
        assert code == 0, err
        found = json.loads(hits.read_text())["hits"]
        assert found[0]["tile_id"] == "t00007" and found[0]["distance"] == 0 and len(found) == 50
        expected = choose_method(open_index(tmp_path / "idx"), 50, None) if method == "auto" else method
        assert json.loads(hits.read_text())["method"] == expected
    code, _, err = run_main(["index", "--out", str(tmp_path / "idx"), "--ann", "hnsw", "--ann-param", "m"])
    assert code == 2 and "NAME=INT" in err
    code, _, err = run_main(["search", str(tmp_path / "idx"), "--tile", "t00007", "--method", "mih"])
    assert code == 2 and "invalid choice" in err


# ------------------------------------------------------------------ the benchmark
def test_bench_codes_small():
    codes = clustered_codes(5000)
    queries = codes[:3] ^ np.uint8(1)
    methods = {name: build for name, build in default_methods({"ivf": dict(nlist=32, sample=4000)}).items()}
    result = bench_codes(
        codes,
        queries,
        100,
        methods,
        name="test",
        sweeps={"hnsw": (5000,), "usearch": (5000,), "ivf": (1, 32)},
        filter_share=0.2,
    )
    assert result["batch_equals_single"] and 0.1 < result["filter_share"] < 0.3
    ivf_all = result["methods"]["ivf-nprobe32"]
    assert ivf_all["recall"] == 1.0 and ivf_all["nprobe"] == 32 and ivf_all["filtered_recall"] == 1.0
    assert result["methods"]["hnsw-ef5000"]["recall"] == 1.0
    assert set(result["methods"]) >= {"ivf-nprobe1", "lsh-nflip0", "lsh-nflip2", "usearch-ef5000"}
    for entry in result["methods"].values():  # the JSON fields the public interface promises
        assert {"method", "speedup", "recall", "filtered_speedup", "filtered_recall"} <= set(entry)
        assert 0 <= entry["recall"] <= 1 and entry["speedup"] > 0


def test_bench_option_parsing():
    assert parse_sweeps(["hnsw=1000,2000", "ivf=64"]) == {"hnsw": (1000, 2000), "ivf": (64,)}
    assert parse_params(["hnsw.m=16", "ivf.nlist=8"]) == {"hnsw": {"m": 16}, "ivf": {"nlist": 8}}
    for bad in (["hnsw=a"], ["hnsw="], ["hnsw=-1"]):
        with pytest.raises(LookalikeError):
            parse_sweeps(bad)
    for bad in (["hnsw.m=x"], ["hnsw=3"]):
        with pytest.raises(LookalikeError):
            parse_params(bad)
    with pytest.raises(LookalikeError, match="unknown methods"):
        bench_sublinear(1000, methods=["mih"], source_indexes=[])
    with pytest.raises(LookalikeError, match="filter share"):
        bench_sublinear(1000, filter_share=0, source_indexes=[])


def test_distance_recall_counts_a_multiset():
    assert distance_recall(np.array([0, 1, 1, 2]), np.array([0, 1, 1, 2])) == 1.0
    assert distance_recall(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    assert distance_recall(np.array([], np.int64), np.array([3])) == 0.0
    assert distance_recall(np.array([1]), np.array([], np.int64)) == 1.0


def test_the_light_list_of_methods_names_every_approximate_index():
    """The command line offers ``defaults.ANN_NAMES`` without importing the libraries."""
    assert tuple(ANN_METHODS) == ANN_NAMES
