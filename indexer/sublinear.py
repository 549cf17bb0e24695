"""Sublinear Hamming search: bit-sampling LSH (approximate) and multi-index hashing (exact).

Both keep the packed codes as they are and add tables of row ids keyed by a few bits of each
code: table t maps the ``key_bits`` bits ``positions[t]`` of a code to a bucket, stored as CSR
arrays (``offsets[t]`` of 2**key_bits + 1 entries, ``rows[t]`` of N row ids as uint32) built by a
counting sort. A query gathers the rows of some buckets (each row once), scores them exactly
against the packed codes and ranks them by (distance, row), as the exact scan does.

* ``LSHIndex`` (Descartes Labs): 32 tables of 16 sampled bits. A row is a candidate when it
  agrees with the query on all sampled bits of at least one table (``probes=1`` also takes
  buckets one bit away). Approximate: near neighbours are found with high probability.
  Bits are drawn without replacement per table, weighted by their entropy on the codes, so
  near-constant bits of a learned code do not make a few giant buckets (``weights="uniform"``
  samples as in the paper).
* ``MIHIndex`` (Norouzi, Punjani, Fleet 2012): the bits are split into m disjoint substrings of
  16 bits; a row within distance d of the query is within floor(d / m) of it on some substring
  (pigeonhole). Search probes radius s = 0, 1, ... on every substring; after radius s every row
  within m(s + 1) - 1 has been seen, so the search stops as soon as k seen rows lie within that
  bound, and the result equals the exact scan's, ties included. Bits are permuted so that each
  substring carries about the same entropy. When the candidates grow past ``max_fraction`` of
  the rows the search falls back to the exact scan.

Both take a filter mask: rows outside it are never ranked (for MIH they also do not count
towards stopping, so a mask that removes most rows ends in the exact-scan fallback).
"""

from __future__ import annotations

import threading
import time

import numba
import numpy as np

from indexer.errors import LookalikeError
from indexer.hamming_kernel import _popcount64, scan_top_k

KEY_BITS = 16


# ------------------------------------------------------------------ numba kernels
@numba.njit(cache=True, nogil=True)
def _key(code, positions):
    """Bucket key of one packed code: bit j of the key is bit positions[j] of the code
    (np.packbits order: bit b is in byte b // 8, most significant first)."""
    key = 0
    for j in range(positions.shape[0]):
        b = positions[j]
        key |= ((code[b >> 3] >> (7 - (b & 7))) & 1) << j
    return key


@numba.njit(parallel=True, cache=True, nogil=True)
def _build_tables(codes, positions, offsets, rows):
    """Counting sort of all rows into every table's buckets (CSR), one table per thread."""
    n = codes.shape[0]
    tables, width = positions.shape
    buckets = 1 << width
    for t in numba.prange(tables):
        keys = np.empty(n, np.int32)
        counts = np.zeros(buckets + 1, np.int64)
        pos = positions[t]
        for i in range(n):
            key = _key(codes[i], pos)
            keys[i] = key
            counts[key + 1] += 1
        for b in range(buckets):
            counts[b + 1] += counts[b]
        offsets[t, :] = counts
        for i in range(n):  # rows in increasing order within each bucket
            key = keys[i]
            rows[t, counts[key]] = i
            counts[key] += 1


@numba.njit(cache=True, nogil=True)
def _distance(codes64, i, q64):
    d = 0
    for w in range(codes64.shape[1]):
        d += _popcount64(codes64[i, w] ^ q64[w])
    return d


@numba.njit(cache=True, nogil=True)
def _grow(a, need):
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    b[:a.shape[0]] = a
    return b


@numba.njit(cache=True, nogil=True)
def _lsh_candidates(codes, codes64, query, q64, positions, offsets, rows, probes, mask, use_mask, seen):
    """Unique rows in the query's buckets (and, with probes=1, the buckets one bit away),
    their distances; rows outside the mask are skipped."""
    tables, width = positions.shape
    visited = np.empty(1024, np.int64)
    nv = 0
    cand = np.empty(1024, np.int64)
    dist = np.empty(1024, np.int64)
    nc = 0
    for t in range(tables):
        qkey = _key(query, positions[t])
        for p in range(-1, width if probes > 0 else 0):
            key = qkey if p < 0 else qkey ^ (1 << p)
            lo, hi = offsets[t, key], offsets[t, key + 1]
            visited = _grow(visited, nv + (hi - lo))
            cand = _grow(cand, nc + (hi - lo))
            dist = _grow(dist, nc + (hi - lo))
            for j in range(lo, hi):
                r = rows[t, j]
                if seen[r]:
                    continue
                seen[r] = 1
                visited[nv] = r
                nv += 1
                if use_mask and not mask[r]:
                    continue
                cand[nc] = r
                dist[nc] = _distance(codes64, r, q64)
                nc += 1
    for j in range(nv):
        seen[visited[j]] = 0
    return cand[:nc], dist[:nc]


@numba.njit(cache=True, nogil=True)
def _mih_candidates(codes64, query, q64, positions, offsets, rows, k, mask, use_mask, seen, max_visit):
    """Multi-index hashing: probe radius 0, 1, ... on every substring until k seen rows lie
    within m(s+1)-1 of the query (then every row that close has been seen). Returns the
    candidates, their distances and whether the search completed (False: too many rows)."""
    tables, width = positions.shape
    bits = 64 * codes64.shape[1]
    hist = np.zeros(bits + 1, np.int64)
    visited = np.empty(1024, np.int64)
    nv = 0
    cand = np.empty(1024, np.int64)
    dist = np.empty(1024, np.int64)
    nc = 0
    qkeys = np.empty(tables, np.int64)
    for t in range(tables):
        qkeys[t] = _key(query, positions[t])
    done = False
    complete = True
    for s in range(width + 1):
        for t in range(tables):
            # every width-bit mask with s bits set (Gosper's hack)
            v = (1 << s) - 1
            while v < (1 << width):
                key = qkeys[t] ^ v
                lo, hi = offsets[t, key], offsets[t, key + 1]
                if hi > lo:
                    visited = _grow(visited, nv + (hi - lo))
                    cand = _grow(cand, nc + (hi - lo))
                    dist = _grow(dist, nc + (hi - lo))
                    for j in range(lo, hi):
                        r = rows[t, j]
                        if seen[r]:
                            continue
                        seen[r] = 1
                        visited[nv] = r
                        nv += 1
                        if use_mask and not mask[r]:
                            continue
                        d = _distance(codes64, r, q64)
                        cand[nc] = r
                        dist[nc] = d
                        nc += 1
                        hist[d] += 1
                if v == 0:
                    break
                c = v & -v
                r_ = v + c
                v = (((r_ ^ v) >> 2) // c) | r_
            if nv > max_visit:
                complete = False
                break
        if not complete:
            break
        bound = min(bits, tables * (s + 1) - 1)
        within = 0
        for d in range(bound + 1):
            within += hist[d]
        if within >= k:
            done = True
            break
    for j in range(nv):
        seen[visited[j]] = 0
    # a finished radius sweep (s == width) has seen every row: complete as well
    return cand[:nc], dist[:nc], complete or done


# ------------------------------------------------------------------ helpers
def bit_entropy(codes: np.ndarray, sample: int = 200_000, seed: int = 0) -> np.ndarray:
    """Entropy (bits) of each code bit, estimated on up to ``sample`` rows."""
    n = len(codes)
    if n > sample:
        rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
        codes = codes[rows]
    p = np.unpackbits(np.asarray(codes), axis=1).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h)


def _rank(cand: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((cand, dist))[:k]
    return cand[order].astype(np.int64), dist[order].astype(np.uint16)


class _Tables:
    """CSR bucket tables over ``positions`` (T, key_bits) of packed ``codes`` (N, B/8)."""

    def __init__(self, codes: np.ndarray, positions: np.ndarray):
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.dtype != np.uint8:
            raise LookalikeError("codes must be a 2-D uint8 array of packed bits")
        if codes.shape[1] % 8:
            raise LookalikeError(f"sublinear search needs codes of a multiple of 64 bits, got {codes.shape[1] * 8}")
        if len(codes) >= 1 << 32:
            raise LookalikeError("sublinear tables hold at most 2**32 rows")
        self.codes = codes if codes.flags.c_contiguous else np.ascontiguousarray(codes)
        self.codes64 = self.codes.view(np.uint64)
        self.positions = np.ascontiguousarray(positions, dtype=np.int64)
        t, width = self.positions.shape
        n = len(codes)
        t0 = time.perf_counter()
        self.offsets = np.empty((t, (1 << width) + 1), np.int64)
        self.rows = np.empty((t, n), np.uint32)
        if n:
            _build_tables(self.codes, self.positions, self.offsets, self.rows)
        else:
            self.offsets[:] = 0
        self.build_seconds = time.perf_counter() - t0
        self._seen = np.zeros(n, np.uint8)  # dedupe marks, cleared after every query
        self._lock = threading.Lock()

    @property
    def n(self) -> int:
        return len(self.codes)

    @property
    def bits(self) -> int:
        return self.codes.shape[1] * 8

    @property
    def nbytes(self) -> int:
        """Resident bytes of the tables (the codes themselves not counted)."""
        return int(self.rows.nbytes + self.offsets.nbytes + self.positions.nbytes + self._seen.nbytes)

    def _check(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        query = np.ascontiguousarray(np.asarray(query, dtype=np.uint8).ravel())
        if query.size != self.codes.shape[1]:
            raise LookalikeError(f"query has {query.size * 8} bits, the codes {self.bits}")
        if int(k) < 0:
            raise LookalikeError(f"k must be >= 0, got {k}")
        if mask is not None:
            mask = np.asarray(mask, dtype=np.bool_)
            if mask.shape != (self.n,):
                raise LookalikeError(f"the mask has {mask.size} entries for {self.n} rows")
        return query, mask

    def _scratch(self):
        # a concurrent query gets its own marks instead of waiting
        if self._lock.acquire(blocking=False):
            return self._seen, True
        return np.zeros(self.n, np.uint8), False


class LSHIndex(_Tables):
    """Bit-sampling LSH: ``tables`` hash tables of ``key_bits`` sampled bits, exact re-rank."""

    def __init__(self, codes: np.ndarray, tables: int = 32, key_bits: int = KEY_BITS, probes: int = 0,
                 weights: str = "entropy", seed: int = 0):
        codes = np.asarray(codes)
        bits = codes.shape[1] * 8 if codes.ndim == 2 else 0
        if not 1 <= key_bits <= min(bits, 24):
            raise LookalikeError(f"key_bits must be between 1 and min(bits, 24), got {key_bits}")
        if weights not in ("entropy", "uniform"):
            raise LookalikeError(f"weights must be 'entropy' or 'uniform', got {weights!r}")
        rng = np.random.default_rng(seed)
        if weights == "entropy" and len(codes):
            w = bit_entropy(codes, seed=seed) + 1e-3  # never zero: a table may need every bit
        else:
            w = np.ones(bits)
        positions = np.stack([np.sort(rng.choice(bits, key_bits, replace=False, p=w / w.sum()))
                              for _ in range(tables)])
        self.probes = int(probes)
        self.weights = weights
        super().__init__(codes, positions)

    def search(self, query: np.ndarray, k: int, mask: np.ndarray | None = None,
               probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k (rows, distances), ordered by (distance, row)."""
        query, mask = self._check(query, k, mask)
        if self.n == 0 or k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.uint16)
        seen, owned = self._scratch()
        try:
            cand, dist = _lsh_candidates(self.codes, self.codes64, query, query.view(np.uint64), self.positions,
                                         self.offsets, self.rows, self.probes if probes is None else probes,
                                         mask if mask is not None else np.ones(1, np.bool_), mask is not None, seen)
        finally:
            if owned:
                self._lock.release()
        return _rank(cand, dist, int(k))

    def describe(self) -> dict:
        t, width = self.positions.shape
        return dict(method="lsh", tables=t, key_bits=width, probes=self.probes, weights=self.weights,
                    build_seconds=self.build_seconds, bytes_per_item=self.nbytes / max(self.n, 1))


class MIHIndex(_Tables):
    """Multi-index hashing: exact k-NN from disjoint ``key_bits``-bit substrings."""

    def __init__(self, codes: np.ndarray, key_bits: int = KEY_BITS, max_fraction: float = 0.02):
        codes = np.asarray(codes)
        bits = codes.shape[1] * 8 if codes.ndim == 2 else 0
        if not 1 <= key_bits <= 24 or bits % key_bits:
            raise LookalikeError(f"key_bits must divide the code length ({bits}) and be at most 24")
        m = bits // key_bits
        # deal bits to substrings, highest entropy first, snake order: equal entropy per substring
        order = np.argsort(-bit_entropy(codes), kind="stable") if len(codes) else np.arange(bits)
        i = np.arange(bits)
        slots = np.where((i // m) % 2 == 0, i % m, m - 1 - i % m)
        positions = np.stack([np.sort(order[slots == t]) for t in range(m)])
        self.max_fraction = float(max_fraction)
        self.searches = 0
        self.fallbacks = 0
        super().__init__(codes, positions)

    def search(self, query: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (rows, distances), ordered by (distance, row): equal to the exact scan."""
        query, mask = self._check(query, k, mask)
        k = int(k)
        if self.n == 0 or k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.uint16)
        self.searches += 1
        seen, owned = self._scratch()
        try:
            cand, dist, complete = _mih_candidates(
                self.codes64, query, query.view(np.uint64), self.positions, self.offsets, self.rows, k,
                mask if mask is not None else np.ones(1, np.bool_), mask is not None, seen,
                int(self.max_fraction * self.n))
        finally:
            if owned:
                self._lock.release()
        if not complete:
            self.fallbacks += 1
            return scan_top_k(self.codes, query, k, mask)
        return _rank(cand, dist, k)

    def mostly_falls_back(self, min_searches: int = 8) -> bool:
        """True once more than half of at least ``min_searches`` searches needed the scan."""
        return self.searches >= min_searches and 2 * self.fallbacks > self.searches

    def describe(self) -> dict:
        t, width = self.positions.shape
        return dict(method="mih", substrings=t, key_bits=width, max_fraction=self.max_fraction,
                    build_seconds=self.build_seconds, bytes_per_item=self.nbytes / max(self.n, 1))


def build_sublinear(codes: np.ndarray, method: str, **options) -> LSHIndex | MIHIndex:
    """``method`` 'lsh' or 'mih' over packed ``codes``."""
    if method == "lsh":
        return LSHIndex(codes, **options)
    if method == "mih":
        return MIHIndex(codes, **options)
    raise LookalikeError(f"unknown sublinear method {method!r}; choose lsh or mih")
