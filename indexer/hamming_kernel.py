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
SPARSE_MASK = 0.05  # a filter keeping at most this share of the rows is scanned through its row list
# and so is one keeping up to CLUSTERED_MASK whose rows come in runs of RUN_ROWS or more on
# average (a date range or a zone over rows stored source by source): its codes are read as a
# few contiguous stretches, not every cache line of the file
CLUSTERED_MASK = 0.25
RUN_ROWS = 16


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
            d = 0
            for w in range(words):
                d += _popcount64(codes[i, w] ^ query[w])
            if use_mask:
                # branch-free: a random filter would mispredict a branch on every other kept row
                keep = mask[i]
                out[i] = d if keep else 0xFFFF
                hist[p, d] += np.int64(keep)
            else:
                out[i] = d
                hist[p, d] += 1


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan_rows(codes, query, rows, out, hist):
    """``_scan`` over the given rows only (increasing): out[j] is the distance of rows[j]."""
    n = rows.shape[0]
    words = codes.shape[1]
    parts = hist.shape[0]
    step = (n + parts - 1) // parts
    for p in numba.prange(parts):
        for j in range(p * step, min(n, (p + 1) * step)):
            i = rows[j]
            d = 0
            for w in range(words):
                d += _popcount64(codes[i, w] ^ query[w])
            out[j] = d
            hist[p, d] += 1


def _rows_worth_visiting(mask: np.ndarray, n: int) -> np.ndarray | None:
    """The rows of ``mask`` when visiting them one by one beats scanning every row with the mask
    (``SPARSE_MASK``, ``CLUSTERED_MASK``), else None."""
    kept = np.count_nonzero(mask)
    if kept <= SPARSE_MASK * n:
        return np.flatnonzero(mask)
    if kept > CLUSTERED_MASK * n:
        return None
    rows = np.flatnonzero(mask)
    runs = 1 + np.count_nonzero(np.diff(rows) != 1)
    return rows if kept >= RUN_ROWS * runs else None


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


def scan_top_k(
    codes: np.ndarray, query: np.ndarray, k: int, mask: np.ndarray | None = None, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``codes`` (N, B/8 with B a multiple of 64) by Hamming distance to ``query``.

    Returns (rows, distances) ordered by (distance, row); rows outside ``mask`` never appear.
    """
    n, nbytes = codes.shape
    codes64 = (
        codes.view(np.uint64) if codes.flags.c_contiguous else np.ascontiguousarray(codes).view(np.uint64)
    )
    q64 = np.ascontiguousarray(query, dtype=np.uint8).view(np.uint64)
    bits = nbytes * 8
    parts = max(1, (threads or numba.get_num_threads()) * 4)
    hist = np.zeros((parts, bits + 1), dtype=np.int64)
    kept = _rows_worth_visiting(mask, n) if mask is not None and n else None
    if kept is not None:
        # a narrow or clustered filter: visit its rows only (the codes of the rest stay unread)
        dist = np.empty(len(kept), dtype=np.uint16)
        _scan_rows(codes64, q64, kept, dist, hist)
    else:
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
    if kept is not None:
        rows = kept[rows]
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


# ------------------------------------------------------------------ many queries, one pass
BATCH_BLOCK = 2048  # rows per block: 2048 x 64 B stays in L1/L2 while every query visits it


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan_batch(codes, queries, mask, use_mask, k, parts, buf_rows, buf_dist, fill, hist, thresh, below):
    """One pass over ``codes`` for all queries: each part (a contiguous row range) keeps, per
    query, every row that can still be in its top-k, with a histogram-derived threshold.

    A row is kept when fewer than k earlier kept rows of the part are at or below its distance;
    rows come in increasing order, so a row at the threshold is beaten by the k earlier ones.
    When a buffer fills it is compacted to the part's current top-k.
    """
    n, words = codes.shape
    nq = queries.shape[0]
    cap = buf_rows.shape[2]
    step = (n + parts - 1) // parts
    for p in numba.prange(parts):
        start = p * step
        stop = min(n, start + step)
        for b0 in range(start, stop, BATCH_BLOCK):
            b1 = min(stop, b0 + BATCH_BLOCK)
            for q in range(nq):
                t = thresh[p, q]
                q0 = queries[q, 0]
                q1 = queries[q, words - 1]
                for i in range(b0, b1):
                    if use_mask and not mask[i]:
                        continue
                    if words == 2:  # 128-bit codes, the default: unrolled
                        d = np.int64(_popcount64(codes[i, 0] ^ q0) + _popcount64(codes[i, 1] ^ q1))
                    else:
                        d = np.int64(0)
                        for w in range(words):
                            d += np.int64(_popcount64(codes[i, w] ^ queries[q, w]))
                    if d >= t:
                        continue
                    if fill[p, q] == cap:
                        # compact: keep rows below the threshold, then the first ties at it
                        keep_ties = k - below[p, q]
                        m = 0
                        for j in range(cap):
                            dj = buf_dist[p, q, j]
                            if dj < t or (dj == t and keep_ties > 0):
                                if dj == t:
                                    keep_ties -= 1
                                buf_rows[p, q, m] = buf_rows[p, q, j]
                                buf_dist[p, q, m] = dj
                                m += 1
                        fill[p, q] = m
                    f = fill[p, q]
                    buf_rows[p, q, f] = i
                    buf_dist[p, q, f] = d
                    fill[p, q] = f + 1
                    hist[p, q, d] += 1
                    below[p, q] += 1
                    # lower the threshold while at least k kept rows lie strictly below it
                    while below[p, q] >= k:
                        t -= 1
                        below[p, q] -= hist[p, q, t]
                    thresh[p, q] = t


def scan_top_k_batch(
    codes: np.ndarray,
    queries: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    threads: int | None = None,
    max_buffer_bytes: int = 1 << 28,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top-k (rows, distances) for each of ``queries`` (Q, B/8), streaming ``codes`` once.

    Same order and tie rule as ``scan_top_k`` (distance, then row; rows outside ``mask`` never
    appear). Queries are processed in groups so the per-thread buffers stay under
    ``max_buffer_bytes``; each group reads the codes once.
    """
    n, nbytes = codes.shape
    queries = np.atleast_2d(np.asarray(queries, dtype=np.uint8))
    if queries.shape[1] != nbytes:
        raise ValueError(f"queries have {queries.shape[1] * 8} bits, codes have {nbytes * 8}")
    nq = len(queries)
    bits = nbytes * 8
    codes64 = (
        codes.view(np.uint64) if codes.flags.c_contiguous else np.ascontiguousarray(codes).view(np.uint64)
    )
    q64 = np.ascontiguousarray(queries).view(np.uint64)
    k = int(k)
    if k <= 0 or n == 0 or nq == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.uint16)) for _ in range(nq)]
    k = min(k, n)
    parts = max(1, threads or numba.get_num_threads())
    cap = 2 * k
    group = max(1, min(nq, max_buffer_bytes // (parts * cap * 10)))
    use_mask = mask is not None
    mask_arr = mask if use_mask else np.ones(1, np.bool_)
    out = []
    for g0 in range(0, nq, group):
        qs = q64[g0 : g0 + group]
        g = len(qs)
        buf_rows = np.empty((parts, g, cap), np.int64)
        buf_dist = np.empty((parts, g, cap), np.uint16)
        fill = np.zeros((parts, g), np.int64)
        hist = np.zeros((parts, g, bits + 2), np.int64)
        thresh = np.full((parts, g), bits + 1, np.int64)
        below = np.zeros((parts, g), np.int64)
        _scan_batch(codes64, qs, mask_arr, use_mask, k, parts, buf_rows, buf_dist, fill, hist, thresh, below)
        for q in range(g):
            rows = np.concatenate([buf_rows[p, q, : fill[p, q]] for p in range(parts)])
            dist = np.concatenate([buf_dist[p, q, : fill[p, q]] for p in range(parts)])
            order = np.lexsort((rows, dist))[:k]
            out.append((rows[order], dist[order]))
    return out
