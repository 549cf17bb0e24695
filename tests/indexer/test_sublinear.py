"""Batched exact scan, bit-sampling LSH, multi-index hashing and IVF against brute-force references."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import make_index, run_main

from lookalike.bench.search import distance_recall
from lookalike.bench.sublinear import bench_codes, flip_rates, neighbour_pairs, replicate
from lookalike.errors import LookalikeError
from lookalike.indexer.hamming_kernel import scan_top_k, scan_top_k_batch
from lookalike.indexer.search import (
    Filters,
    Query,
    choose_method,
    filter_mask,
    hamming_distances,
    ranked_rows_batch,
    search,
    search_batch,
    top_k,
)
from lookalike.indexer.sublinear import IVFIndex, LSHIndex, MIHIndex, bit_entropy, default_nlist, kmajority


def clustered_codes(n: int, bits: int = 128, centres: int = 40, rate: float = 0.04, seed: int = 0):
    """Noisy copies of a few random centres with skewed bits: many exact ties, like real codes."""
    rng = np.random.default_rng(seed)
    p = rng.choice([0.05, 0.5, 0.95], bits)
    base = np.packbits(rng.random((centres, bits)) < p, axis=1)
    codes = base[rng.integers(0, centres, n)]
    codes ^= np.packbits(rng.random((n, bits)) < rate, axis=1)
    codes[rng.integers(0, n, n // 20)] = codes[0]  # exact duplicates: ties at distance 0
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
    queries = np.concatenate([codes[[0, 5, 77]],  # in the archive, one with many duplicates
                              codes[rng.integers(0, len(codes), 3)] ^ np.packbits(rng.random((3, 128)) < 0.05, axis=1),
                              rng.integers(0, 256, (2, 16), dtype=np.uint8)])  # far from everything
    mask = rng.random(len(codes)) < 0.6
    return codes, queries, mask


@pytest.fixture(scope="module")
def mih(data):
    return MIHIndex(data[0])


@pytest.fixture(scope="module")
def lsh(data):
    return LSHIndex(data[0], tables=8, key_bits=12)


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


# ------------------------------------------------------------------ multi-index hashing: exact
@pytest.mark.parametrize("k", [1, 10, 1000, 10_000])
@pytest.mark.parametrize("masked", [False, True])
def test_mih_is_exact(data, mih, k, masked):
    codes, queries, mask = data
    mask = mask if masked else None
    for q in queries:
        assert_same(mih.search(q, k, mask), reference(codes, q, k, mask))


def test_mih_answers_without_fallback_for_near_queries(data):
    """Near-duplicate queries with small k are answered from the tables (the fallback unused)."""
    codes, queries, _ = data
    index = MIHIndex(codes, max_fraction=0.5)
    for q in queries[:6]:
        assert_same(index.search(q, 20), reference(codes, q, 20))
    assert index.fallbacks == 0


def test_mih_fallback_and_empty_mask(data):
    codes, queries, mask = data
    tight = MIHIndex(codes, max_fraction=0.0)  # every search falls back to the scan
    for q in queries[:3]:
        assert_same(tight.search(q, 300, mask), reference(codes, q, 300, mask))
    assert tight.fallbacks == 3
    nothing = np.zeros(len(codes), bool)
    rows, dist = MIHIndex(codes, max_fraction=1.0).search(queries[0], 10, nothing)
    assert len(rows) == len(dist) == 0


@pytest.mark.parametrize("bits", [64, 256])
def test_mih_other_lengths(bits):
    codes = clustered_codes(3000, bits=bits, seed=bits)
    index = MIHIndex(codes)
    assert index.positions.shape == (bits // 16, 16)
    assert sorted(index.positions.ravel()) == list(range(bits))  # a partition of the bits
    for q in codes[[1, 2]]:
        assert_same(index.search(q, 100), reference(codes, q, 100))


# ------------------------------------------------------------------ bit-sampling LSH
def lsh_candidates_reference(index: LSHIndex, codes, query, probes):
    """Rows agreeing with the query on every sampled bit of some table (or all but one, probes=1)."""
    bits = np.unpackbits(codes, axis=1)
    qbits = np.unpackbits(query)
    hit = np.zeros(len(codes), bool)
    for pos in index.positions:
        hit |= (bits[:, pos] != qbits[pos]).sum(axis=1) <= probes
    return np.flatnonzero(hit)


@pytest.mark.parametrize("probes", [0, 1])
@pytest.mark.parametrize("masked", [False, True])
def test_lsh_ranks_exactly_its_candidates(data, lsh, probes, masked):
    codes, queries, mask = data
    mask = mask if masked else None
    for q in queries:
        cand = lsh_candidates_reference(lsh, codes, q, probes)
        if mask is not None:
            cand = cand[mask[cand]]
        for k in (5, 10_000):  # 10,000 is more than the candidates: all of them, ranked
            want = top_k(hamming_distances(codes[cand], q), k, rows=cand)
            assert_same(lsh.search(q, k, mask, probes=probes), want)


def test_lsh_finds_near_duplicates(data):
    codes, queries, _ = data
    index = LSHIndex(codes)  # the paper's 32 tables x 16 bits
    for q in queries[:6]:
        rows, dist = index.search(q, 100)
        _, want = reference(codes, q, 100)
        assert dist[0] == want[0]
        assert np.isin(want[:10], dist).all()
    assert index.describe()["bytes_per_item"] > 0 and index.nbytes > 32 * 4 * len(codes)


def test_lsh_uniform_weights_and_errors(data):
    codes, queries, _ = data
    index = LSHIndex(codes, tables=4, key_bits=10, weights="uniform", seed=3)
    assert index.positions.shape == (4, 10)
    assert all(len(set(p)) == 10 for p in index.positions)
    with pytest.raises(LookalikeError):
        LSHIndex(codes, weights="magic")
    with pytest.raises(LookalikeError):
        LSHIndex(codes, key_bits=30)
    with pytest.raises(LookalikeError):
        index.search(queries[0][:8], 10)
    with pytest.raises(LookalikeError):
        index.search(queries[0], 10, np.ones(5, bool))
    with pytest.raises(LookalikeError):
        MIHIndex(np.zeros((10, 3), np.uint8))


def test_bit_entropy():
    codes = np.packbits(np.stack([np.zeros(64, bool), np.arange(64) % 2 == 0] + [np.ones(64, bool)] * 6, axis=1),
                        axis=1)
    h = bit_entropy(codes)
    np.testing.assert_allclose(h, [0, 1, 0, 0, 0, 0, 0, 0])


# ------------------------------------------------------------------ through the index
def test_search_methods_on_an_index(tmp_path):
    index = make_index(tmp_path / "idx", n=3000, bits=128, values=4)  # few byte values: many ties
    query = Query(code=np.asarray(index.codes[11]))
    filters = Filters(zones=sorted(set(index.tiles["zone"]))[:20])
    mask = filter_mask(index.tiles, filters)
    exact = search(index, query, k=500, filters=filters)
    want = reference(np.asarray(index.codes), np.asarray(index.codes[11]), 500, mask)
    np.testing.assert_array_equal(exact.attrs["index_row"], want[0])
    mih = search(index, query, k=500, filters=filters, method="mih")
    pd.testing.assert_frame_equal(mih, exact)
    auto = search(index, query, k=500, filters=filters, method="auto")  # small archive: the scan
    pd.testing.assert_frame_equal(auto, exact)
    lsh = search(index, query, k=500, filters=filters, method="lsh")
    assert mask[lsh.attrs["index_row"]].all() and (np.diff(lsh["distance"]) >= 0).all()
    ivf = search(index, query, k=500, filters=filters, method="ivf")
    assert len(ivf) == len(exact) and mask[ivf.attrs["index_row"]].all()
    np.testing.assert_array_equal(ivf["distance"], hamming_distances(np.asarray(index.codes)[ivf.attrs["index_row"]],
                                                                     np.asarray(index.codes[11])))
    assert set(index.__dict__["_sublinear"]) == {"mih", "lsh", "ivf"}  # built once, kept on the index
    with pytest.raises(LookalikeError):
        search(index, query, method="annoy")


def test_choose_method():
    assert choose_method(1000, None, "auto") == "exact"
    assert choose_method(5_000_000, None, "auto") == "mih"
    assert choose_method(5_000_000, np.arange(5_000_000) < 1000, "auto") == "exact"
    assert choose_method(10, None, "lsh") == "lsh"
    assert choose_method(10, None, "ivf") == "ivf"


@pytest.mark.parametrize("method", ["exact", "mih"])
def test_search_batch_equals_single_searches(tmp_path, method):
    index = make_index(tmp_path / "idx", n=800, bits=128, values=4)
    queries = [Query(tile_id="t00003"), np.asarray(index.codes[40]), Query(positives=["t00001", "t00002"])]
    filters = Filters(sources=["alpha", "beta"])
    batch = search_batch(index, queries, k=300, filters=filters, method=method)
    for q, hits in zip(queries, batch):
        pd.testing.assert_frame_equal(hits, search(index, q, k=300, filters=filters))
    assert search_batch(index, [], k=5) == []


@pytest.mark.parametrize("method", ["mih", "ivf"])
def test_cli_search_method(tmp_path, method):
    make_index(tmp_path / "idx", n=400, bits=128)
    out = tmp_path / "hits.json"
    code, _, err = run_main(["search", str(tmp_path / "idx"), "--tile", "t00007", "--k", "50",
                             "--method", method, "--json", str(out)])
    assert code == 0, err
    hits = json.loads(out.read_text())["hits"]
    assert hits[0]["tile_id"] == "t00007" and hits[0]["distance"] == 0 and len(hits) == 50


# ------------------------------------------------------------------ the benchmark's code model
def grid_tiles(rows: int, cols: int) -> pd.DataFrame:
    r, c = np.divmod(np.arange(rows * cols), cols)
    return pd.DataFrame(dict(source="s", zone="1N", row=r, col=c))


def test_neighbour_pairs_and_flip_rates():
    tiles = grid_tiles(3, 4)
    i, j = neighbour_pairs(tiles)
    assert len(i) == 3 * 3 + 2 * 4  # horizontal + vertical neighbours
    assert np.all(np.abs(tiles["row"].to_numpy()[i] - tiles["row"].to_numpy()[j])
                  + np.abs(tiles["col"].to_numpy()[i] - tiles["col"].to_numpy()[j]) == 1)
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


def test_bench_codes_small():
    codes = clustered_codes(20_000)
    queries = codes[:4] ^ np.uint8(1)
    result = bench_codes(codes, queries, 100, {"mih": MIHIndex, "lsh": LSHIndex, "ivf": IVFIndex}, name="test",
                         nprobes=(1, 10_000))
    assert result["methods"]["ivf-nprobe10000"]["identical_rows"] == 1.0  # every list: the scan
    assert result["methods"]["ivf-nprobe1"]["nprobe"] == 1
    assert result["batch_equals_single"]
    assert result["methods"]["mih"]["recall"] == 1.0 and result["methods"]["mih"]["identical_rows"] == 1.0
    assert 0 <= result["methods"]["lsh"]["recall"] <= 1 and result["methods"]["lsh"]["speedup"] > 0


def test_auto_stops_using_mih_that_falls_back(tmp_path, monkeypatch):
    from lookalike.indexer import search as search_mod

    index = make_index(tmp_path / "idx", n=2000, bits=128)  # uniform codes: MIH must fall back
    monkeypatch.setattr(search_mod, "AUTO_MIN_ROWS", 1000)
    codes = np.asarray(index.codes)
    for i in range(10):
        hits = search(index, codes[i], k=200, method="auto")
        np.testing.assert_array_equal(hits.attrs["index_row"], reference(codes, codes[i], 200)[0])
    mih = index.__dict__["_sublinear"]["mih"]
    assert mih.searches == 8 and mih.fallbacks == 8 and mih.mostly_falls_back()


# ------------------------------------------------------------------ inverted file (IVF)
@pytest.fixture(scope="module")
def ivf(data):
    return IVFIndex(data[0], nlist=64, nprobe=4, sample=4000, seed=3)


def exact_distances(codes, rows, query):
    return hamming_distances(codes[rows], query)


@pytest.mark.parametrize("k", [1, 50, 1000])
@pytest.mark.parametrize("masked", [False, True])
def test_ivf_distances_exact_and_ordered(data, ivf, k, masked):
    codes, queries, mask = data
    m = mask if masked else None
    for q in queries:
        rows, dist = ivf.search(q, k, m)
        assert len(rows) == k and len(set(rows.tolist())) == k
        np.testing.assert_array_equal(dist, exact_distances(codes, rows, q))
        order = np.lexsort((rows, dist))  # (distance, row), as the scan
        np.testing.assert_array_equal(order, np.arange(k))
        if masked:
            assert mask[rows].all()
        # the probed lists are ranked exactly: each returned row beats every unreturned row of them
        probed = np.concatenate([ivf.ids[ivf.offsets[c]:ivf.offsets[c + 1]] for c in ivf.list_order(q)[:4]])
        probed = probed[mask[probed]] if masked else probed
        left = np.setdiff1d(probed, rows)
        if len(left):
            assert exact_distances(codes, left, q).min() >= dist[-1]


@pytest.mark.parametrize("masked", [False, True])
def test_ivf_all_lists_is_the_exact_scan(data, ivf, masked):
    codes, queries, mask = data
    m = mask if masked else None
    for q in queries:
        for k in (1, 300, 20_000):
            assert_same(ivf.search(q, k, m, nprobe=ivf.nlist), reference(codes, q, k, m))


def test_ivf_k_beyond_the_probed_lists(data):
    codes, queries, mask = data
    index = IVFIndex(codes, nlist=256, nprobe=1, sample=5000)
    sizes = np.diff(index.offsets)
    k = int(sizes.max()) + 1  # more than any single list holds: further lists are probed
    for m in (None, mask):
        rows, dist = index.search(queries[3], k, m)
        assert len(rows) == k
        np.testing.assert_array_equal(dist, exact_distances(codes, rows, queries[3]))
    few = np.zeros(len(codes), bool)
    few[[5, 900, 11_000]] = True  # fewer rows in the mask than k: all of them, exactly ranked
    assert_same(index.search(queries[0], 50, few), reference(codes, queries[0], 50, few))
    assert len(index.search(queries[0], 0)[0]) == 0


def test_ivf_lists_and_determinism(data):
    codes = data[0]
    a = IVFIndex(codes, nlist=32, sample=3000, seed=7)
    b = IVFIndex(codes, nlist=32, sample=3000, seed=7)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.ids, b.ids)
    # CSR: every row once, rows increasing within a list, each list's codes stored beside its ids
    assert np.array_equal(np.sort(a.ids), np.arange(len(codes)))
    for c in range(a.nlist):
        ids = a.ids[a.offsets[c]:a.offsets[c + 1]]
        assert (np.diff(ids.astype(np.int64)) > 0).all()
        np.testing.assert_array_equal(a.lists[a.offsets[c]:a.offsets[c + 1]].view(np.uint8), codes[ids])
    # each row sits in the list of its nearest centroid (lowest list id on ties)
    d = np.stack([hamming_distances(a.centroids, c) for c in codes[:500]])
    np.testing.assert_array_equal(np.searchsorted(a.offsets, np.argsort(a.ids)[:500], side="right") - 1,
                                  d.argmin(axis=1))
    assert not np.array_equal(IVFIndex(codes, nlist=32, sample=3000, seed=8).centroids, a.centroids)
    assert a.describe()["method"] == "ivf" and a.nbytes >= len(codes) * 20


def test_kmajority_recovers_clusters():
    rng = np.random.default_rng(5)
    centres = rng.integers(0, 256, (8, 16), dtype=np.uint8)
    codes = centres[np.repeat(np.arange(8), 300)] ^ np.packbits(rng.random((2400, 128)) < 0.03, axis=1)
    found = kmajority(codes, 8, iterations=10, seed=1)
    # every true centre is (nearly) a centroid: the majority vote removes the noise
    nearest = np.array([hamming_distances(found, c).min() for c in centres])
    assert (nearest <= 2).all(), nearest
    with pytest.raises(LookalikeError):
        kmajority(codes[:4], 8)


def test_ivf_recall_on_clustered_codes():
    codes = clustered_codes(30_000, centres=200, rate=0.06, seed=4)
    rng = np.random.default_rng(9)
    queries = codes[rng.integers(0, len(codes), 10)] ^ np.packbits(rng.random((10, 128)) < 0.04, axis=1)
    index = IVFIndex(codes, nprobe=8, seed=0)  # default nlist: 2**round(log2 sqrt 30k) = 128
    assert index.nlist == default_nlist(len(codes)) == 128
    def recall(nprobe):
        return np.mean([distance_recall(index.search(q, 100, nprobe=nprobe)[1], reference(codes, q, 100)[1])
                        for q in queries])

    assert recall(1) < recall(8)
    assert recall(8) >= 0.95 and recall(index.nlist) == 1.0


def test_ivf_errors_and_empty():
    codes = clustered_codes(500)
    with pytest.raises(LookalikeError):
        IVFIndex(codes, nlist=1000)
    with pytest.raises(LookalikeError):
        IVFIndex(codes, nprobe=0)
    with pytest.raises(LookalikeError):
        IVFIndex(codes[:, :12])
    index = IVFIndex(codes, nlist=8)
    with pytest.raises(LookalikeError):
        index.search(codes[0, :8], 5)
    with pytest.raises(LookalikeError):
        index.search(codes[0], 5, np.ones(3, bool))
    empty = IVFIndex(codes[:0])
    assert len(empty.search(codes[0], 5)[0]) == 0


def test_ivf_parallel_probe_equals_serial(data, monkeypatch):
    from lookalike.indexer import sublinear

    codes, queries, mask = data
    serial = IVFIndex(codes, nlist=64, nprobe=3, sample=4000, threads=1)
    parallel = IVFIndex(codes, nlist=64, nprobe=3, sample=4000, threads=3)
    monkeypatch.setattr(sublinear, "PARALLEL_PROBE_ROWS", 0)  # split even the smallest probes
    for q in queries:
        for k in (1, 40, 2000, 20_000):
            assert_same(parallel.search(q, k), serial.search(q, k))
        assert_same(parallel.search(q, 30, mask), serial.search(q, 30, mask))


def test_bench_sublinear_rejects_bad_nprobes():
    from lookalike.bench.sublinear import bench_sublinear

    for bad in (["8", "x"], [0], []):
        with pytest.raises(LookalikeError):
            bench_sublinear(1000, nprobes=bad, source_indexes=[])
