"""The exact Hamming scan at memory speed: one pass over the codes on every core.

One query streams the (memory-mapped) codes once, as 64-bit words: XOR + popcount per row, a
per-thread histogram of distances on the side. Distances are small integers (0..bits), so the
k-th smallest distance is read off the summed histogram and the top-k are collected in a second
pass over the 2-byte distances, with no sort of N values. faiss parallelises over queries, not
within one; this scan splits a single query's rows across threads.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

EXCLUDED = np.uint16(0xFFFF)  # distance recorded for rows a filter mask removes


@intrinsic
def _popcount64(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan(codes, query, mask, use_mask, out, hist):
    n, words = codes.shape
    parts = hist.shape[0]
    step = (n + parts - 1) // parts
    for p in numba.prange(parts):
        start = p * step
        stop = min(n, start + step)
        for i in range(start, stop):
            if use_mask and not mask[i]:
                out[i] = 0xFFFF
                continue
            d = 0
            for w in range(words):
                d += _popcount64(codes[i, w] ^ query[w])
            out[i] = d
            hist[p, d] += 1


@numba.njit(cache=True, nogil=True)
def _collect(dist, threshold, n_at_threshold, k):
    rows = np.empty(k, np.int64)
    taken = 0
    ties = 0
    for i in range(dist.shape[0]):
        d = dist[i]
        if d < threshold:
            rows[taken] = i
            taken += 1
        elif d == threshold and ties < n_at_threshold:
            rows[taken] = i
            taken += 1
            ties += 1
    return rows[:taken]


def scan_top_k(codes: np.ndarray, query: np.ndarray, k: int, mask: np.ndarray | None = None,
               threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``codes`` (N, B/8 with B a multiple of 64) by Hamming distance to ``query``.

    Returns (rows, distances) ordered by (distance, row); rows outside ``mask`` never appear.
    """
    n, nbytes = codes.shape
    codes64 = codes.view(np.uint64) if codes.flags.c_contiguous else np.ascontiguousarray(codes).view(np.uint64)
    q64 = np.ascontiguousarray(query, dtype=np.uint8).view(np.uint64)
    bits = nbytes * 8
    parts = max(1, (threads or numba.get_num_threads()) * 4)
    hist = np.zeros((parts, bits + 1), dtype=np.int64)
    dist = np.empty(n, dtype=np.uint16)
    use_mask = mask is not None
    _scan(codes64, q64, mask if use_mask else np.ones(1, np.bool_), use_mask, dist, hist)
    counts = hist.sum(axis=0)
    available = int(counts.sum())
    k = min(int(k), available)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint16)
    cumulative = np.cumsum(counts)
    threshold = int(np.searchsorted(cumulative, k))  # smallest d with at least k rows <= d
    below = int(cumulative[threshold - 1]) if threshold > 0 else 0
    rows = _collect(dist, threshold, k - below, k)
    d = dist[rows]
    order = np.lexsort((rows, d))
    return rows[order], d[order]


@numba.njit(parallel=True, cache=True, nogil=True)
def _xor_rows(codes, parts):
    n, words = codes.shape
    step = (n + parts - 1) // parts
    acc = np.zeros((parts, words), np.uint64)
    for p in numba.prange(parts):
        local = np.zeros(words, np.uint64)
        for i in range(p * step, min(n, (p + 1) * step)):
            for w in range(words):
                local[w] ^= codes[i, w]
        acc[p] = local
    return acc


def read_once(codes: np.ndarray) -> int:
    """Touch every 64-bit word of ``codes`` once on all cores, in the scan's access pattern
    but with no popcount or histogram: the floor any scan can reach."""
    words = np.ascontiguousarray(codes).view(np.uint64)
    return int(np.bitwise_xor.reduce(_xor_rows(words, numba.get_num_threads() * 4), axis=None))
