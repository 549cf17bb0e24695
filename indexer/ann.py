"""Approximate Hamming search through maintained libraries: faiss's binary indexes and usearch.

Every adapter has the surface of faiss itself, narrowed to what the project needs:
``add(codes)`` appends rows (their row ids follow on from the rows already held),
``search(query, k, mask, **options)`` returns the top-k (rows, distances) of one packed query
ranked by (distance, row) like the exact scan, ``save(path)`` / ``load(path, codes)`` persist it,
and ``describe()`` says what it is and what it costs.

=========  =====================================  ================  ===============================
method     library index                          swept option      filters (``mask``)
=========  =====================================  ================  ===============================
hnsw       faiss ``IndexBinaryHNSW``              ``ef`` (efSearch)  the library's selector
                                                                     (``IDSelectorBitmap``): kept
                                                                     rows only, during the walk
usearch    usearch ``Index`` (Hamming, B1)        ``ef``            the exact scan of the kept rows
ivf        faiss ``IndexBinaryIVF``               ``nprobe``        the exact scan of the kept rows
lsh        faiss ``IndexBinaryMultiHash``         ``nflip``         the exact scan of the kept rows
=========  =====================================  ================  ===============================

faiss refuses selectors for its binary IVF and hash indexes and usearch's Python API has no
predicate, so those answer a filtered query with the exact scan over the kept rows: a filter is
always applied before ranking, never to a truncated top-k afterwards.

A saved usearch graph is memory-mapped when loaded; faiss reads its binary indexes into memory
whole (its mmap flags do not apply to them: the resident size grows by the file's size).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lookalike.errors import CodeLengthError, IndexCorruptError, LookalikeError
from lookalike.indexer.hamming_kernel import scan_top_k
from lookalike.models.metrics import distance_recall

# what the libraries accept without crashing or allocating absurdly (inclusive bounds)
LIMITS = {
    "m": (2, 256),
    "ef_construction": (1, 1 << 16),
    "ef": (1, 1 << 20),
    "nlist": (1, 1 << 20),
    "nprobe": (1, 1 << 20),
    "sample": (1, 1 << 30),
    "seed": (0, 1 << 31),
    "tables": (1, 64),
    "key_bits": (1, 24),
    "nflip": (0, 24),
}
ADD_CHUNK = 100_000  # rows per library call: progress can be shown and memory stays flat
USEARCH_ADD_THREADS = 0  # all cores; a parallel build can leave a rare node out of reach of any walk


def _faiss():
    import faiss

    return faiss


def _ranked(rows: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop the libraries' -1 fillers and order by (distance, row), the scan's tie rule."""
    rows, dist = np.asarray(rows, np.int64).ravel(), np.asarray(dist).ravel().astype(np.int32)
    keep = rows >= 0
    rows, dist = rows[keep], dist[keep]
    order = np.lexsort((rows, dist))[:k]
    return rows[order], dist[order]


def _checked_codes(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] % 8:
        raise CodeLengthError(
            f"approximate search needs packed codes of a multiple of 64 bits, got "
            f"shape {codes.shape} {codes.dtype}"
        )
    return codes


class BinaryANN:
    """Common parts: the codes (for filtered fallbacks), query checks, build timing."""

    method = ""
    option = ""  # the search-time knob a benchmark sweeps
    sweep: tuple[int, ...] = ()
    selector = False  # filters go into the library's search (True) or to the exact scan (False)
    suffix = ".faiss"

    def __init__(self, codes: np.ndarray, **params):
        self.codes = _checked_codes(codes)
        for name, value in params.items():
            low, high = LIMITS.get(name, (1, 1 << 20))
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not low <= value <= high
            ):
                raise LookalikeError(
                    f"{self.method} option {name} must be an integer from {low} to {high}, got {value!r}"
                )
        self.params = {name: int(value) for name, value in params.items()}
        self.build_seconds = 0.0

    @property
    def bits(self) -> int:
        return self.codes.shape[1] * 8

    @property
    def n(self) -> int:
        return int(self._library_count())

    def _library_count(self) -> int:
        raise NotImplementedError

    def _library_add(self, codes: np.ndarray) -> None:
        raise NotImplementedError

    def build(self, progress: bool = False) -> BinaryANN:
        """Add every row of ``self.codes`` not yet in the library index."""
        self._add_rows(self.codes[self.n :], progress)
        return self

    def add(self, codes: np.ndarray, progress: bool = False) -> None:
        """Append ``codes`` as the rows after the last one held (as ``--append`` does)."""
        codes = _checked_codes(codes)
        if codes.shape[1] * 8 != self.bits:
            raise CodeLengthError(f"cannot add {codes.shape[1] * 8}-bit codes to a {self.bits}-bit index")
        self.codes = np.concatenate([np.asarray(self.codes), codes])
        self._add_rows(codes, progress)

    def _add_rows(self, codes: np.ndarray, progress: bool) -> None:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        with tqdm(
            total=len(codes),
            unit="code",
            desc=f"{self.method} index",
            disable=not progress or len(codes) < ADD_CHUNK,
            leave=False,
        ) as bar:
            for start in range(0, len(codes), ADD_CHUNK):
                chunk = np.ascontiguousarray(codes[start : start + ADD_CHUNK])
                self._library_add(chunk)
                bar.update(len(chunk))
        self.build_seconds += time.perf_counter() - t0

    def _check(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
        query = np.ascontiguousarray(np.asarray(query, np.uint8).ravel())
        if query.shape[0] * 8 != self.bits:
            raise CodeLengthError(f"the query has {query.shape[0] * 8} bits, the index {self.bits}")
        if k < 1:
            raise LookalikeError(f"k must be at least 1, got {k}")
        if mask is not None and (mask.dtype != bool or mask.shape != (self.n,)):
            raise LookalikeError(f"the filter mask must be {self.n} booleans, got {mask.shape} {mask.dtype}")
        return query

    def search(
        self, query: np.ndarray, k: int, mask: np.ndarray | None = None, **options
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (rows, distances) of ``query`` among the rows in ``mask`` (all when None)."""
        query = self._check(query, k, mask)
        if mask is not None and not self.selector:
            return scan_top_k(self.codes, query, k, mask)
        return self._search(query, k, mask, **options)

    def _search(self, query, k, mask, **options):
        raise NotImplementedError

    def nbytes(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        return dict(
            method=self.method,
            **self.params,
            build_seconds=self.build_seconds,
            bytes_per_item=self.nbytes() / max(self.n, 1),
            filters="library selector" if self.selector else "exact scan of the kept rows",
        )

    # persistence
    def save(self, path: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path, codes: np.ndarray, params: dict) -> BinaryANN:
        raise NotImplementedError


class FaissIndexANN(BinaryANN):
    """An adapter over one faiss binary index held in ``self.index``."""

    def _library_count(self) -> int:
        return self.index.ntotal

    def _library_add(self, codes: np.ndarray) -> None:
        self.index.add(codes)

    def nbytes(self) -> int:
        faiss = _faiss()
        return int(faiss.serialize_index_binary(self.index).nbytes)

    def save(self, path: str | Path) -> None:
        _faiss().write_index_binary(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, codes: np.ndarray, params: dict) -> FaissIndexANN:
        faiss = _faiss()
        self = cls.__new__(cls)
        BinaryANN.__init__(self, codes, **params)
        try:
            self.index = faiss.read_index_binary(str(path))
        except RuntimeError as exc:
            raise IndexCorruptError(
                f"{path} is not a readable faiss index ({str(exc).splitlines()[-1]})"
            ) from None
        if self.index.d != self.bits or self.index.ntotal != len(codes):
            raise IndexCorruptError(
                f"{path} holds {self.index.ntotal} codes of {self.index.d} bits; the index "
                f"has {len(codes)} of {self.bits}"
            )
        self._after_load()
        return self

    def _after_load(self) -> None:
        pass


class FaissHNSW(FaissIndexANN):
    """faiss ``IndexBinaryHNSW``: a navigable small-world graph over the codes (Malkov and
    Yashunin 2018). ``m`` links per node (2m on the bottom layer), ``ef_construction`` the
    candidate list while linking; ``ef`` at search time is the candidate list of the walk
    (at least k)."""

    method = "hnsw"
    option = "ef"
    sweep = (1000, 1500, 2000, 3000, 5000, 8000)
    selector = True

    def __init__(self, codes: np.ndarray, m: int = 32, ef_construction: int = 40, ef: int = 2000):
        super().__init__(codes, m=m, ef_construction=ef_construction, ef=ef)
        self.index = _faiss().IndexBinaryHNSW(self.bits, m)
        self.index.hnsw.efConstruction = ef_construction

    def _search(self, query, k, mask, ef: int | None = None):
        faiss = _faiss()
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(int(ef or self.params["ef"]), k)
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        dist, rows = self.index.search(query[None], k, params=params)
        return _ranked(rows, dist, k)


class FaissIVF(FaissIndexANN):
    """faiss ``IndexBinaryIVF``: codes filed under the nearest of ``nlist`` binary centroids
    (trained on a sample); a query scans the ``nprobe`` nearest lists."""

    method = "ivf"
    option = "nprobe"
    sweep = (8, 16, 32, 64, 128, 256, 512, 1024)

    def __init__(
        self,
        codes: np.ndarray,
        nlist: int | None = None,
        nprobe: int = 128,
        sample: int = 131_072,
        seed: int = 0,
    ):
        codes = _checked_codes(codes)
        nlist = int(nlist or default_nlist(len(codes)))
        super().__init__(codes, nlist=nlist, nprobe=nprobe)
        faiss = _faiss()
        self.quantizer = faiss.IndexBinaryFlat(self.bits)
        self.index = faiss.IndexBinaryIVF(self.quantizer, self.bits, nlist)
        rng = np.random.default_rng(seed)
        train = (
            codes if len(codes) <= sample else codes[np.sort(rng.choice(len(codes), sample, replace=False))]
        )
        if len(train) < nlist:
            raise LookalikeError(
                f"an IVF index of {nlist} lists needs at least {nlist} codes, got {len(train)}"
            )
        t0 = time.perf_counter()
        self.index.train(np.ascontiguousarray(train))
        self.build_seconds = time.perf_counter() - t0

    def _search(self, query, k, mask, nprobe: int | None = None):
        faiss = _faiss()
        params = faiss.SearchParametersIVF()
        params.nprobe = min(int(nprobe or self.params["nprobe"]), self.params["nlist"])
        dist, rows = self.index.search(query[None], k, params=params)
        return _ranked(rows, dist, k)


def default_nlist(n: int) -> int:
    """Lists for an IVF index of ``n`` codes: the power of two nearest sqrt(n), 16..65,536."""
    return int(min(65_536, max(16, 2 ** round(np.log2(max(n, 1)) / 2))))


class FaissMultiHash(FaissIndexANN):
    """faiss ``IndexBinaryMultiHash``: bit-sampling LSH (Descartes Labs' method) with
    ``tables`` hash tables keyed by ``key_bits`` bits each; a query visits the buckets within
    ``nflip`` bit flips of its keys and ranks what it finds exactly."""

    method = "lsh"
    option = "nflip"
    sweep = (0, 1, 2)

    def __init__(self, codes: np.ndarray, tables: int = 8, key_bits: int = 16, nflip: int = 1):
        super().__init__(codes, tables=tables, key_bits=key_bits, nflip=nflip)
        if tables * key_bits > self.bits:
            raise LookalikeError(
                f"{tables} tables of {key_bits} bits need codes of at least "
                f"{tables * key_bits} bits, these have {self.bits}"
            )
        self.index = _faiss().IndexBinaryMultiHash(self.bits, tables, key_bits)

    def _search(self, query, k, mask, nflip: int | None = None):
        self.index.nflip = int(self.params["nflip"] if nflip is None else nflip)
        dist, rows = self.index.search(query[None], k)
        return _ranked(rows, dist, k)

    def _after_load(self) -> None:
        self.index.nflip = int(self.params["nflip"])


class UsearchHNSW(BinaryANN):
    """usearch's HNSW with its Hamming metric on 1-bit scalars: ``m`` is its ``connectivity``,
    ``ef_construction`` its ``expansion_add``, ``ef`` its ``expansion_search``."""

    method = "usearch"
    option = "ef"
    sweep = (1000, 1500, 2000, 3000, 5000, 8000)
    suffix = ".usearch"

    def __init__(self, codes: np.ndarray, m: int = 32, ef_construction: int = 64, ef: int = 2000):
        super().__init__(codes, m=m, ef_construction=ef_construction, ef=ef)
        self.index = self._new_index()

    def _new_index(self):
        try:
            from usearch.index import Index, MetricKind, ScalarKind
        except ImportError:  # pragma: no cover - usearch is a dependency; a broken install says so
            raise LookalikeError(
                "the usearch method needs the usearch package (pip install usearch)"
            ) from None
        return Index(
            ndim=self.bits,
            metric=MetricKind.Hamming,
            dtype=ScalarKind.B1,
            connectivity=self.params["m"],
            expansion_add=self.params["ef_construction"],
            expansion_search=self.params["ef"],
        )

    def _library_count(self) -> int:
        return len(self.index)

    def _library_add(self, codes: np.ndarray) -> None:
        if getattr(self, "viewed", None):  # a memory-mapped view is read-only: read it whole first
            self.index.load(str(self.viewed))
            self.viewed = None
        start = len(self.index)
        self.index.add(
            np.arange(start, start + len(codes), dtype=np.uint64), codes, threads=USEARCH_ADD_THREADS
        )

    def _search(self, query, k, mask, ef: int | None = None):
        self.index.expansion_search = max(int(ef or self.params["ef"]), k)
        found = self.index.search(query, k, threads=1)
        return _ranked(found.keys.astype(np.int64), found.distances, k)

    def nbytes(self) -> int:
        return int(self.index.serialized_length)

    def save(self, path: str | Path) -> None:
        self.index.save(str(path))

    @classmethod
    def load(cls, path: str | Path, codes: np.ndarray, params: dict) -> UsearchHNSW:
        self = cls.__new__(cls)
        BinaryANN.__init__(self, codes, **params)
        self.index = self._new_index()
        try:
            self.index.view(str(path))  # memory-mapped: pages come in as walks touch them
        except (RuntimeError, ValueError) as exc:
            raise IndexCorruptError(f"{path} is not a readable usearch index ({exc})") from None
        if len(self.index) != len(codes) or self.index.ndim != self.bits:
            raise IndexCorruptError(
                f"{path} holds {len(self.index)} codes of {self.index.ndim} bits; the "
                f"index has {len(codes)} of {self.bits}"
            )
        self.viewed = Path(path)
        return self


ANN_METHODS: dict[str, type[BinaryANN]] = {
    cls.method: cls for cls in (FaissHNSW, UsearchHNSW, FaissIVF, FaissMultiHash)
}


def build_ann(codes: np.ndarray, method: str, progress: bool = False, **params) -> BinaryANN:
    """An approximate index of ``method`` (see ``ANN_METHODS``) over packed ``codes``."""
    if method not in ANN_METHODS:
        raise LookalikeError(f"unknown approximate method {method!r}; choose from {', '.join(ANN_METHODS)}")
    try:
        ann = ANN_METHODS[method](codes, **params)
    except TypeError as exc:
        raise LookalikeError(f"bad options for {method}: {exc}") from None
    return ann.build(progress)


def load_ann(path: str | Path, method: str, codes: np.ndarray, params: dict) -> BinaryANN:
    """The ``method`` index saved at ``path`` over ``codes`` (its rows, in order)."""
    if method not in ANN_METHODS:
        raise IndexCorruptError(f"{path}: unknown approximate method {method!r}")
    return ANN_METHODS[method].load(path, codes, params)


RECALL_BAR = 0.95  # the share of the exact top-k distances an approximate answer must keep


def calibrate(
    ann: BinaryANN, k: int = 1000, recall_bar: float = RECALL_BAR, queries: int = 64, seed: int = 0
) -> dict:
    """Measure ``ann`` against the exact scan on ``queries`` of its own rows (a click on an
    indexed tile), at each value of its search option in increasing cost; keep the cheapest
    setting whose mean recall@k reaches ``recall_bar``. The scan is timed in turns with it.

    Returns {"k", "option", "value", "recall", "recall_min", "ms", "exact_ms", "speedup",
    "meets_bar", "queries", "n"}; with no setting at the bar, the most accurate one measured
    and ``meets_bar`` False (``search(method="auto")`` then keeps to the scan).
    """
    n = ann.n
    k = min(k, n)
    rows = np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False)
    codes = ann.codes
    scan_top_k(codes, codes[rows[0]], k)  # compile and page in outside the timing
    best = None
    for value in ann.sweep if ann.option else (None,):
        options = {ann.option: value} if ann.option else {}
        ann.search(codes[rows[0]], k, **options)
        recalls, ms, exact_ms = [], [], []
        for row in rows:
            t0 = time.perf_counter()
            _, exact = scan_top_k(codes, codes[row], k)
            t1 = time.perf_counter()
            _, found = ann.search(codes[row], k, **options)
            t2 = time.perf_counter()
            recalls.append(distance_recall(found, exact))
            exact_ms.append((t1 - t0) * 1000)
            ms.append((t2 - t1) * 1000)
        entry = dict(
            k=k,
            option=ann.option or None,
            value=value,
            recall=float(np.mean(recalls)),
            recall_min=float(np.min(recalls)),
            ms=float(np.median(ms)),
            exact_ms=float(np.median(exact_ms)),
            queries=len(rows),
            n=n,
        )
        entry["speedup"] = entry["exact_ms"] / max(entry["ms"], 1e-9)
        entry["meets_bar"] = bool(entry["recall"] >= recall_bar)
        best = entry
        if entry["meets_bar"]:
            break
    return best
