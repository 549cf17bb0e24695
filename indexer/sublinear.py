"""Sublinear Hamming search: bit-sampling LSH (approximate), multi-index hashing (exact) and an
inverted file over binary k-means lists (approximate).

LSH and MIH keep the packed codes as they are and add tables of row ids keyed by a few bits of each
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

* ``IVFIndex``: a coarse quantizer learned from a sample of the archive (k-majority: binary
  k-means with Hamming assignment and per-bit majority centroids, k-means++ seeds), every code
  filed under its nearest centroid, and each list's codes copied contiguously beside their row
  ids. A query ranks the centroids and scans the ``nprobe`` nearest lists sequentially.
  Approximate, but every returned distance is exact; with ``nprobe = nlist`` it is the scan.

All take a filter mask: rows outside it are never ranked (for MIH they also do not count
towards stopping, so a mask that removes most rows ends in the exact-scan fallback; IVF probes
further lists until k rows within the mask were seen).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from lookalike.errors import LookalikeError
from lookalike.indexer.hamming_kernel import _popcount64, scan_top_k

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
def _keep_within(cand, dist, n, t):
    """Move the first ``n`` candidates with distance <= ``t`` to the front; returns how many."""
    m = 0
    for i in range(n):
        if dist[i] <= t:
            cand[m] = cand[i]
            dist[m] = dist[i]
            m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _visit_bucket(bucket, codes64, q64, mask, use_mask, seen, visited, nv, cand, dist, nc, hist):
    """Add the rows of one bucket not seen before: mark them, and those inside the mask become
    candidates with their exact distance (counted in ``hist``). Returns the grown buffers."""
    n = bucket.shape[0]
    if n == 0:
        return visited, nv, cand, dist, nc
    visited = _grow(visited, nv + n)
    cand = _grow(cand, nc + n)
    dist = _grow(dist, nc + n)
    for j in range(n):
        r = bucket[j]
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
    return visited, nv, cand, dist, nc


@numba.njit(cache=True, nogil=True)
def _lsh_candidates(codes, codes64, query, q64, positions, offsets, rows, probes, mask, use_mask, seen):
    """Unique rows in the query's buckets (and, with probes=1, the buckets one bit away),
    their distances; rows outside the mask are skipped."""
    tables, width = positions.shape
    hist = np.zeros(64 * codes64.shape[1] + 1, np.int64)  # unused here; MIH counts distances
    visited = np.empty(1024, np.int64)
    nv = 0
    cand = np.empty(1024, np.int64)
    dist = np.empty(1024, np.int64)
    nc = 0
    for t in range(tables):
        qkey = _key(query, positions[t])
        for p in range(-1, width if probes > 0 else 0):
            key = qkey if p < 0 else qkey ^ (1 << p)
            visited, nv, cand, dist, nc = _visit_bucket(
                rows[t, offsets[t, key]:offsets[t, key + 1]], codes64, q64, mask, use_mask, seen,
                visited, nv, cand, dist, nc, hist)
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
                visited, nv, cand, dist, nc = _visit_bucket(
                    rows[t, offsets[t, key]:offsets[t, key + 1]], codes64, q64, mask, use_mask, seen,
                    visited, nv, cand, dist, nc, hist)
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


def _checked_codes(codes) -> np.ndarray:
    """Packed codes a sublinear index can hold (uint8, a multiple of 64 bits, < 2**32 rows)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.dtype != np.uint8:
        raise LookalikeError("codes must be a 2-D uint8 array of packed bits")
    if codes.shape[1] % 8:
        raise LookalikeError(f"sublinear search needs codes of a multiple of 64 bits, got {codes.shape[1] * 8}")
    if len(codes) >= 1 << 32:
        raise LookalikeError("a sublinear index holds at most 2**32 rows")
    return codes


class _Tables:
    """CSR bucket tables over ``positions`` (T, key_bits) of packed ``codes`` (N, B/8)."""

    def __init__(self, codes: np.ndarray, positions: np.ndarray):
        codes = _checked_codes(codes)
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




# ------------------------------------------------------------------ inverted file (IVF)
@numba.njit(cache=True, nogil=True)
def _nearest(x, cw, dbuf):
    """Index of the centroid nearest to packed code ``x`` (lowest index on ties). ``cw`` holds
    the centroids word-major (words, nlist) so the distance loop vectorizes (vpopcntq)."""
    words, nlist = cw.shape
    for c in range(nlist):
        dbuf[c] = _popcount64(x[0] ^ cw[0, c])
    for w in range(1, words):
        xw = x[w]
        for c in range(nlist):
            dbuf[c] += _popcount64(xw ^ cw[w, c])
    best = dbuf[0]
    for c in range(1, nlist):
        best = min(best, dbuf[c])
    for c in range(nlist):
        if dbuf[c] == best:
            return c
    return 0


@numba.njit(parallel=True, cache=True, nogil=True)
def _assign(codes64, cw, out, parts):
    n = codes64.shape[0]
    step = (n + parts - 1) // parts
    for p in numba.prange(parts):
        dbuf = np.empty(cw.shape[1], np.int64)
        for i in range(p * step, min(n, (p + 1) * step)):
            out[i] = _nearest(codes64[i], cw, dbuf)


@numba.njit(cache=True, nogil=True)
def _majority(codes64, labels, cw):
    """k-majority update: centroid bit = majority bit of its members (a tie keeps the old bit).
    Returns the cluster sizes; empty clusters keep their centroid (the caller re-seeds them)."""
    words, nlist = cw.shape
    ones = np.zeros((nlist, words * 64), np.int64)
    sizes = np.zeros(nlist, np.int64)
    for i in range(codes64.shape[0]):
        c = labels[i]
        sizes[c] += 1
        for w in range(words):
            x = codes64[i, w]
            for b in range(64):
                ones[c, w * 64 + b] += (x >> np.uint64(b)) & np.uint64(1)
    for c in range(nlist):
        if sizes[c] == 0:
            continue
        for w in range(words):
            v = cw[w, c]
            for b in range(64):
                twice = 2 * ones[c, w * 64 + b]
                bit = np.uint64(1) << np.uint64(b)
                if twice > sizes[c]:
                    v |= bit
                elif twice < sizes[c]:
                    v &= ~bit
            cw[w, c] = v
    return sizes


@numba.njit(cache=True, nogil=True)
def _csr(labels, nlist, codes64, offsets, ids, lists):
    """Counting sort of the rows by list: rows in increasing order within each list, the codes
    copied next to their ids so a probe reads one contiguous range."""
    for i in range(labels.shape[0]):
        offsets[labels[i] + 1] += 1
    for c in range(nlist):
        offsets[c + 1] += offsets[c]
    fill = offsets[:-1].copy()
    for i in range(labels.shape[0]):
        j = fill[labels[i]]
        fill[labels[i]] = j + 1
        ids[j] = i
        for w in range(codes64.shape[1]):
            lists[j, w] = codes64[i, w]


@numba.njit(cache=True, nogil=True)
def _ivf_probe(q64, order, nprobe, k, offsets, ids, lists, mask, use_mask):
    """Exact distances of the rows in the lists ``order[:nprobe]`` (and further lists, in
    order, until k rows within the mask were seen); returns the rows within the top-k
    threshold (every row at the k-th distance, for the caller's tie rule) and their distances.

    Rows are kept while they can still be in the top-k: ``t`` falls as soon as k kept rows lie
    strictly below it, and rows farther than ``t`` are dropped unstored. Rows at ``t`` are
    kept, because lists do not come in row order and ties go to the lowest row."""
    words = lists.shape[1]
    hist = np.zeros(words * 64 + 2, np.int64)
    t = words * 64 + 1
    below = 0  # kept rows with distance < t
    cand = np.empty(max(16, 4 * k), np.int64)
    dist = np.empty(max(16, 4 * k), np.int64)
    nc = 0
    seen = 0
    for o in range(order.shape[0]):
        if o >= nprobe and seen >= k:
            break
        c = order[o]
        for j in range(offsets[c], offsets[c + 1]):
            if use_mask and not mask[ids[j]]:
                continue
            seen += 1
            if words == 2:  # 128-bit codes, the default: unrolled
                d = np.int64(_popcount64(lists[j, 0] ^ q64[0]) + _popcount64(lists[j, 1] ^ q64[1]))
            else:
                d = np.int64(0)
                for w in range(words):
                    d += np.int64(_popcount64(lists[j, w] ^ q64[w]))
            if d > t:
                continue
            if nc == cand.shape[0]:
                # compact to the rows still within t before growing
                nc = _keep_within(cand, dist, nc, t)
                cand = _grow(cand, nc + 1)
                dist = _grow(dist, nc + 1)
            cand[nc] = ids[j]
            dist[nc] = d
            nc += 1
            hist[d] += 1
            if d < t:
                below += 1
                while below >= k:
                    t -= 1
                    below -= hist[t]
    # smallest threshold with at least k kept rows at or below it
    threshold = hist.shape[0] - 1
    total = 0
    for d in range(hist.shape[0]):
        total += hist[d]
        if total >= k:
            threshold = d
            break
    m = _keep_within(cand, dist, nc, threshold)
    return cand[:m], dist[:m]


@numba.njit(cache=True, nogil=True)
def _seed_plusplus(codes64, first, u, out):
    """k-means++ seeding in Hamming space: each next centroid is a code drawn with probability
    proportional to its squared distance to the nearest centroid so far (``u``: uniforms)."""
    n, words = codes64.shape
    nearest = np.full(n, 1 << 30, np.int64)
    chosen = first
    for c in range(out.shape[0]):
        out[c] = chosen
        total = 0.0
        for i in range(n):
            d = np.int64(0)
            for w in range(words):
                d += np.int64(_popcount64(codes64[i, w] ^ codes64[chosen, w]))
            if d < nearest[i]:
                nearest[i] = d
            total += nearest[i] * nearest[i]
        if c + 1 == out.shape[0]:
            break
        if total == 0.0:  # fewer distinct codes than centroids: repeat one (it ends up empty)
            chosen = first
            continue
        target = u[c] * total
        acc = 0.0
        chosen = n - 1
        for i in range(n):
            acc += nearest[i] * nearest[i]
            if acc > target:
                chosen = i
                break


def default_nlist(n: int) -> int:
    """Lists for ``n`` codes: the power of two nearest sqrt(n) (4096 at 10 M), which balances
    the centroid scan (nlist) against the rows of one probed list (n / nlist)."""
    if n <= 1:
        return 1
    return int(min(n, 2 ** round(np.log2(np.sqrt(n)))))


def kmajority(codes: np.ndarray, nlist: int, iterations: int = 8, seed: int = 0) -> np.ndarray:
    """Binary k-means (k-majority) on packed ``codes``: k-means++ seeds, Hamming assignment,
    per-bit majority centroids, empty clusters re-seeded with random codes. Returns (nlist, B/8) packed uint8."""
    codes = np.ascontiguousarray(codes)
    n = len(codes)
    if not 1 <= nlist <= n:
        raise LookalikeError(f"nlist must be between 1 and the number of codes ({n}), got {nlist}")
    codes64 = codes.view(np.uint64)
    rng = np.random.default_rng(seed)
    seeds = np.empty(nlist, np.int64)
    _seed_plusplus(codes64, int(rng.integers(n)), rng.random(nlist), seeds)
    cw = np.ascontiguousarray(codes64[seeds].T)
    labels = np.empty(n, np.int32)
    parts = numba.get_num_threads() * 4
    for _ in range(iterations):
        _assign(codes64, cw, labels, parts)
        sizes = _majority(codes64, labels, cw)
        empty = np.flatnonzero(sizes == 0)
        if len(empty):
            cw[:, empty] = codes64[rng.choice(n, len(empty), replace=False)].T
    return np.ascontiguousarray(cw.T).view(np.uint8)


PARALLEL_PROBE_ROWS = 65_536  # below this a probe takes well under a millisecond on one thread
_POOLS: dict = {}


def _probe_pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="ivf-probe")
    return _POOLS[threads]


class IVFIndex:
    """Inverted file over binary codes: a k-majority coarse quantizer learned on a sample of
    the archive, one list per centroid holding its rows' codes contiguously; a query scans the
    ``nprobe`` lists whose centroids are nearest and re-ranks them exactly. Approximate.

    The default nprobe (128) was chosen on validation draws of the benchmark's realistic codes at
    10 M (recall@1000 about 0.88 on Mars, 0.99 on Earth; see benchmarks/results/sublinear.md)."""

    def __init__(self, codes: np.ndarray, nlist: int | None = None, nprobe: int = 128, sample: int = 131_072,
                 iterations: int = 8, seed: int = 0, threads: int | None = None):
        codes = _checked_codes(codes)
        n = len(codes)
        self.nlist = default_nlist(n) if nlist is None else int(nlist)
        if n and not 1 <= self.nlist <= n:
            raise LookalikeError(f"nlist must be between 1 and the number of codes ({n}), got {self.nlist}")
        if int(nprobe) < 1:
            raise LookalikeError(f"nprobe must be >= 1, got {nprobe}")
        self.nprobe, self.seed, self.iterations = int(nprobe), int(seed), int(iterations)
        self.threads = max(1, int(threads or numba.get_num_threads()))
        self.n, self.bytes_per_code = n, codes.shape[1]
        words = codes.shape[1] // 8
        t0 = time.perf_counter()
        codes = codes if codes.flags.c_contiguous else np.ascontiguousarray(codes)
        if n == 0:
            self.nlist = 0
            self.centroids = np.zeros((0, codes.shape[1]), np.uint8)
        else:
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(n, min(n, max(int(sample), self.nlist)), replace=False))
            self.centroids = kmajority(codes[rows], self.nlist, iterations, seed)
        self._cw = np.ascontiguousarray(self.centroids.view(np.uint64).T)
        self.train_seconds = time.perf_counter() - t0
        codes64 = codes.view(np.uint64)
        labels = np.empty(n, np.int32)
        if n:
            _assign(codes64, self._cw, labels, numba.get_num_threads() * 16)
        self.offsets = np.zeros(self.nlist + 1, np.int64)
        self.ids = np.empty(n, np.uint32)
        self.lists = np.empty((n, words), np.uint64)
        _csr(labels, self.nlist, codes64, self.offsets, self.ids, self.lists)
        self.build_seconds = time.perf_counter() - t0

    @property
    def bits(self) -> int:
        return self.bytes_per_code * 8

    @property
    def nbytes(self) -> int:
        """Resident bytes: the reordered copy of the codes, row ids, centroids and offsets."""
        return int(self.lists.nbytes + self.ids.nbytes + self.centroids.nbytes + self._cw.nbytes
                   + self.offsets.nbytes)

    def list_order(self, query: np.ndarray) -> np.ndarray:
        """List ids by (distance of their centroid to ``query``, id): the probe order."""
        q64 = np.ascontiguousarray(np.asarray(query, np.uint8).ravel()).view(np.uint64)
        d = np.zeros(self.nlist, np.int64)
        for w in range(len(q64)):
            d += np.bitwise_count(self._cw[w] ^ q64[w])
        return np.argsort(d, kind="stable")

    def search(self, query: np.ndarray, k: int, mask: np.ndarray | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k (rows, distances) ordered by (distance, row); every distance is
        exact. At least ``nprobe`` lists are scanned, more while fewer than k rows within the
        mask were seen, so the answer has min(k, rows in the mask) rows."""
        query = np.ascontiguousarray(np.asarray(query, dtype=np.uint8).ravel())
        if query.size != self.bytes_per_code:
            raise LookalikeError(f"query has {query.size * 8} bits, the codes {self.bits}")
        k = int(k)
        if k < 0:
            raise LookalikeError(f"k must be >= 0, got {k}")
        if mask is not None:
            mask = np.asarray(mask, dtype=np.bool_)
            if mask.shape != (self.n,):
                raise LookalikeError(f"the mask has {mask.size} entries for {self.n} rows")
        nprobe = self.nprobe if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise LookalikeError(f"nprobe must be >= 1, got {nprobe}")
        if self.n == 0 or k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.uint16)
        q64, order = query.view(np.uint64), self.list_order(query)
        if mask is None and self.threads > 1:
            # the lists to scan are known up front: nprobe, more until they hold k rows
            sizes = np.diff(self.offsets)[order]
            count = max(nprobe, int(np.searchsorted(np.cumsum(sizes), k)) + 1)
            if sizes[:count].sum() >= PARALLEL_PROBE_ROWS:
                # each thread scans every threads-th list and keeps its own top-k candidates
                parts = [order[p:count:self.threads] for p in range(self.threads)]
                found = list(_probe_pool(self.threads).map(
                    lambda part: _ivf_probe(q64, part, len(part), k, self.offsets, self.ids, self.lists,
                                            np.ones(1, np.bool_), False), parts))
                return _rank(np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]), k)
        cand, dist = _ivf_probe(q64, order, nprobe, k, self.offsets, self.ids, self.lists,
                                mask if mask is not None else np.ones(1, np.bool_), mask is not None)
        return _rank(cand, dist, k)

    def describe(self) -> dict:
        return dict(method="ivf", nlist=self.nlist, nprobe=self.nprobe, threads=self.threads,
                    iterations=self.iterations,
                    seed=self.seed, train_seconds=self.train_seconds, build_seconds=self.build_seconds,
                    bytes_per_item=self.nbytes / max(self.n, 1))


def build_sublinear(codes: np.ndarray, method: str, **options) -> LSHIndex | MIHIndex | IVFIndex:
    """``method`` 'lsh', 'mih' or 'ivf' over packed ``codes``."""
    if method == "lsh":
        return LSHIndex(codes, **options)
    if method == "mih":
        return MIHIndex(codes, **options)
    if method == "ivf":
        return IVFIndex(codes, **options)
    raise LookalikeError(f"unknown sublinear method {method!r}; choose lsh, mih or ivf")
