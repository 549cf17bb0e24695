"""``lookalike bench search``: the project's exact scan against faiss IndexBinaryFlat, one run."""

from __future__ import annotations

import os
import time

import numpy as np

from lookalike.errors import OptionError
from lookalike.indexer.hamming_kernel import read_once, scan_top_k, scan_top_k_batch
from lookalike.indexer.search import hamming_distances, top_k
from lookalike.models.hashing import MAX_BITS
from lookalike.models.metrics import distance_recall


def _best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0, result


def check_bench_options(n: int, bits: int, k: int, repeat: int, queries: int) -> None:
    """Refuse sizes the benchmark cannot run: it holds the codes twice (ours and faiss's copy)."""
    if n < 1 or k < 1 or repeat < 1 or queries < 1:
        raise OptionError(
            f"--n, --k, --repeat and --queries must be at least 1 (got {n}, {k}, {repeat}, {queries})"
        )
    if bits < 64 or bits % 64 or bits > MAX_BITS:  # the scan reads codes as 64-bit words
        raise OptionError(f"--bits must be a positive multiple of 64 up to {MAX_BITS}, got {bits}")
    need = 2 * n * bits // 8
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > memory:
        raise OptionError(
            f"{n} codes of {bits} bits need {need / 2**30:.1f} GiB (held twice); this "
            f"machine has {memory / 2**30:.1f} GiB"
        )


def bench_search(
    n: int,
    bits: int,
    k: int,
    repeat: int = 5,
    seed: int = 0,
    threads: int | None = None,
    numpy_reference: bool = True,
    queries: int = 1,
) -> dict:
    """Time one query over ``n`` uniform random ``bits``-bit codes: ours vs faiss, best of ``repeat``.

    Also times a plain parallel read of the codes (the floor) and, once, the numpy reference.
    With ``queries`` > 1 also a batch of that many queries: ``scan_top_k_batch`` (one read of the
    codes for all) against faiss searching the same batch, and against as many single scans.
    """
    check_bench_options(n, bits, k, repeat, queries)
    import faiss

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
    query = rng.integers(0, 256, size=(1, bits // 8), dtype=np.uint8)
    if threads:
        faiss.omp_set_num_threads(threads)
    index = faiss.IndexBinaryFlat(bits)
    index.add(codes)
    faiss_ms, (fd, _) = _best_of(lambda: index.search(query, k), repeat)
    scan_top_k(codes[:1000], query[0], k)  # compile outside the timing
    ours_ms, (_, od) = _best_of(lambda: scan_top_k(codes, query[0], k), repeat)
    read_ms, _ = _best_of(lambda: read_once(codes), repeat)
    result = dict(
        n=n,
        bits=bits,
        k=k,
        ours_ms=ours_ms,
        faiss_ms=faiss_ms,
        ratio=ours_ms / faiss_ms,
        recall=distance_recall(od, fd[0]),
        read_ms=read_ms,
        ratio_to_read=ours_ms / read_ms,
        method="one-pass parallel xor+popcount, histogram top-k",
        repeat=repeat,
        faiss_threads=faiss.omp_get_max_threads(),
        codes="uniform random",
    )
    if queries > 1:
        batch = rng.integers(0, 256, size=(queries, bits // 8), dtype=np.uint8)
        scan_top_k_batch(codes[:1000], batch[:2], k)  # compile outside the timing
        batch_repeat = max(1, repeat // 2)
        fb_ms, (fbd, _) = _best_of(lambda: index.search(batch, k), batch_repeat)
        ob_ms, ob = _best_of(lambda: scan_top_k_batch(codes, batch, k), batch_repeat)
        singles_ms, _ = _best_of(lambda: [scan_top_k(codes, q, k) for q in batch], 1)
        result.update(
            queries=queries,
            batch_ms=ob_ms,
            faiss_batch_ms=fb_ms,
            batch_ratio=ob_ms / fb_ms,
            singles_ms=singles_ms,
            batch_speedup_vs_singles=singles_ms / ob_ms,
            batch_recall=float(np.mean([distance_recall(o[1], f) for o, f in zip(ob, fbd)])),
        )
    if numpy_reference:
        numpy_ms, (_, nd) = _best_of(lambda: top_k(hamming_distances(codes, query[0]), k), 1)
        result.update(numpy_ms=numpy_ms, numpy_recall=distance_recall(nd, fd[0]))
    return result
