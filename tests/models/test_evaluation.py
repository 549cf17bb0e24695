"""Retrieval metrics on hand-computed examples, and the two rankers against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from lookalike_testkit import popcount_reference, random_codes, stable_top_k

from lookalike.indexer.search import rank_hamming
from lookalike.models.metrics import average_precision_at_k, rank_euclidean, retrieval_scores


def test_average_precision_hand_computed():
    rel = np.array(
        [
            [1, 0, 1, 0, 0],  # hits at 1 and 3; R = 3: (1 + 2/3) / 3
            [0, 1, 0, 0, 1],  # hits at 2 and 5; R = 2: (1/2 + 2/5) / 2
            [0, 0, 0, 0, 0],  # no hit, R = 4: 0
            [1, 1, 1, 1, 1],  # perfect, R = 10 > k: 5/5 = 1
            [0, 0, 0, 0, 0],  # nothing relevant exists: 0
        ],
        bool,
    )
    n_rel = np.array([3, 2, 4, 10, 0])
    ap = average_precision_at_k(rel, n_rel, 5)
    np.testing.assert_allclose(ap, [5 / 9, 0.45, 0.0, 1.0, 0.0])


def test_average_precision_truncates_at_k():
    rel = np.array([[0, 1, 1, 1]], bool)
    # k = 2: only the hit at rank 2 counts, P(2) = 1/2, denominator min(R=3, k=2) = 2
    np.testing.assert_allclose(average_precision_at_k(rel, np.array([3]), 2), [0.25])
    # k = 4: (1/2 + 2/3 + 3/4) / 3
    np.testing.assert_allclose(average_precision_at_k(rel, np.array([3]), 4), [(0.5 + 2 / 3 + 0.75) / 3])


def test_retrieval_scores_small_example():
    archive = np.array(["a", "b", "a", "c", "a"])
    queries = np.array(["a", "c"])
    ranked = np.array([[1, 0, 2], [3, 4, 0]])
    scores = retrieval_scores(queries, archive, ranked, 3)
    # query a: rel [0, 1, 1], R = 3 -> (1/2 + 2/3) / 3; query c: rel [1, 0, 0], R = 1 -> 1
    assert scores["map_at_k"] == pytest.approx(((0.5 + 2 / 3) / 3 + 1.0) / 2)
    assert scores["precision_at_k"] == pytest.approx(3 / 6)


def test_rank_euclidean_matches_brute_force():
    rng = np.random.default_rng(0)
    archive = rng.integers(0, 3, (200, 4)).astype(np.float32)  # many exact ties
    queries = rng.integers(0, 3, (30, 4)).astype(np.float32)
    got = rank_euclidean(archive, queries, 15, batch=7)
    for q, row in zip(queries, got):
        d = ((archive - q) ** 2).sum(1)
        ref = sorted(range(len(archive)), key=lambda i: (d[i], i))[:15]
        assert row.tolist() == ref


def test_rank_hamming_matches_brute_force():
    archive = random_codes(300, 64, seed=1, values=4)
    queries = random_codes(10, 64, seed=2, values=4)
    got = rank_hamming(archive, queries, 20)
    for q, row in zip(queries, got):
        ref, _ = stable_top_k(popcount_reference(archive, q), 20)
        assert row.tolist() == ref.tolist()
