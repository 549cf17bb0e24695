"""``lookalike bench sublinear``: the approximate indexes of ``indexer.ann`` (faiss HNSW, IVF and
multi-hash LSH, usearch HNSW) against the exact scan on codes with the structure of real codes.

Realistic codes. The archive is grown from the real 128-bit codes of a whole-planet index
(the Mars demo index by default; ``--source-index`` adds others, e.g. Earth):

1. A share of the real tiles (``holdout``, 10 %) is set aside as queries; the archive is grown
   from the others only, so no query has a copy of itself in the archive.
2. Noise rate per bit. Tiles of the index overlap their grid neighbours by half (128 px, stride
   64). For every pair of neighbours (same source and zone, next row or column), each bit either
   agrees or differs; p_b, the share of pairs where bit b differs, is the rate at which a bit
   changes when the view moves to a different but overlapping piece of the same terrain. Bits a
   learned code rarely sets change rarely, so the noise keeps the code's skewed bit statistics.
3. Replication. Archive row i is a real code, drawn uniformly from the archive part, with each
   bit b flipped independently with probability p_b: about ``N / n_real`` noisy relatives per
   real tile, each one neighbour-step away from it on average. Flip masks are drawn as the XOR
   of two entries of two pools of 65,536 masks whose bits are set with probability
   q_b = (1 - sqrt(1 - 2 p_b)) / 2 (the XOR of two such bits is set with probability p_b), so
   4.3 billion different masks cost two table lookups per row.
4. Queries: every held-out real code (up to ``queries / 2``) and as many noisy variants of them
   (same noise).

Uniform random codes of the same size and length are measured too, for contrast: there the
top-k are no nearer to the query than the rest, the worst case for any sublinear method.

Each approximate index is built once per code set and measured at every value of its
search-time option (HNSW ``ef``, IVF ``nprobe``, LSH ``nflip``): the whole curve is reported
rather than one setting tuned on these queries. ``filter_share`` measures every setting again
under a random filter keeping that share of the rows, against the scan under the same filter.

Recall@k is the share of the exact top-k distances (as a multiset) that a method reproduces
(``models.metrics.distance_recall``); times are medians over the queries, one query at a
time. Each method's speed-up is against the exact scan timed in turns with it, query by query
(``exact_ms`` of the method), so both see the same load on shared cores.
"""

from __future__ import annotations

import gc
import time

import numba
import numpy as np
import pandas as pd

from lookalike.errors import LookalikeError
from lookalike.indexer.ann import ANN_METHODS, build_ann
from lookalike.indexer.hamming_kernel import scan_top_k, scan_top_k_batch
from lookalike.indexer.store import open_index
from lookalike.models.metrics import distance_recall
from lookalike.workflows.demo import ensure_demo_index

POOL = 1 << 16


# ------------------------------------------------------------------ realistic codes
def neighbour_pairs(tiles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i, j) of grid neighbours: same source and zone, next row or next column."""
    for column in ("source", "zone", "row", "col"):
        if column not in tiles:
            raise LookalikeError(f"the source index has no {column!r} column; it must be a raster index")
    table = pd.DataFrame(
        dict(
            source=tiles["source"].to_numpy(),
            zone=tiles["zone"].to_numpy(),
            row=tiles["row"].to_numpy(np.int64),
            col=tiles["col"].to_numpy(np.int64),
            i=np.arange(len(tiles)),
        )
    )
    pairs = []
    for dr, dc in ((0, 1), (1, 0)):
        moved = table.assign(row=table["row"] + dr, col=table["col"] + dc)
        joined = moved.merge(table, on=["source", "zone", "row", "col"], suffixes=("", "_n"))
        pairs.append(joined[["i", "i_n"]].to_numpy())
    pairs = np.concatenate(pairs)
    return pairs[:, 0], pairs[:, 1]


def flip_rates(codes: np.ndarray, tiles: pd.DataFrame) -> np.ndarray:
    """Per-bit rate p_b at which overlapping neighbour tiles disagree."""
    i, j = neighbour_pairs(tiles)
    if len(i) == 0:
        raise LookalikeError("the source index has no neighbouring tiles to estimate the noise from")
    return (np.unpackbits(codes[i] ^ codes[j], axis=1)).mean(axis=0)


def noise_masks(rates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` packed masks with bit b set independently with probability rates[b]."""
    return np.packbits(rng.random((n, len(rates))) < rates, axis=1)


@numba.njit(parallel=True, cache=True)
def _replicate(sources, src, pool_a, a, pool_b, b, out):
    for i in numba.prange(out.shape[0]):
        for w in range(out.shape[1]):
            out[i, w] = sources[src[i], w] ^ pool_a[a[i], w] ^ pool_b[b[i], w]


def replicate(
    sources: np.ndarray, n: int, rates: np.ndarray, seed: int = 0, chunk: int = 1 << 22
) -> np.ndarray:
    """``n`` codes: random rows of ``sources`` with bit b flipped with probability rates[b]."""
    rng = np.random.default_rng(seed)
    half = (1 - np.sqrt(np.clip(1 - 2 * np.asarray(rates, np.float64), 0, 1))) / 2
    pool_a, pool_b = noise_masks(half, POOL, rng), noise_masks(half, POOL, rng)
    words = sources.shape[1] // 8
    src64 = np.ascontiguousarray(sources).view(np.uint64)
    pa, pb = pool_a.view(np.uint64), pool_b.view(np.uint64)
    out = np.empty((n, words), np.uint64)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        _replicate(
            src64,
            rng.integers(0, len(sources), m),
            pa,
            rng.integers(0, POOL, m),
            pb,
            rng.integers(0, POOL, m),
            out[start : start + m],
        )
    return out.view(np.uint8)


def realistic_codes(
    codes: np.ndarray,
    tiles: pd.DataFrame,
    n: int,
    n_queries: int,
    holdout: float = 0.1,
    noise_scale: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(archive (n, B/8), queries, description) grown from one real index (see the module doc)."""
    codes = np.ascontiguousarray(codes)
    if codes.shape[1] % 8:
        raise LookalikeError("the source index's codes must be a multiple of 64 bits")
    rng = np.random.default_rng(seed)
    rates = np.clip(flip_rates(codes, tiles) * noise_scale, 0, 0.5)
    order = rng.permutation(len(codes))
    n_held = max(1, int(round(holdout * len(codes))))
    held, kept = codes[order[:n_held]], codes[order[n_held:]]
    archive = replicate(kept, n, rates, seed=seed + 1)
    real = held[: max(1, n_queries // 2)]
    noisy = real[: n_queries - len(real)] ^ noise_masks(rates, n_queries - len(real), rng)
    queries = np.concatenate([real, noisy])
    i, j = neighbour_pairs(tiles)
    nb = np.unpackbits(codes[i] ^ codes[j], axis=1).sum(axis=1)
    info = dict(
        real_tiles=len(codes),
        held_out=n_held,
        noise_scale=noise_scale,
        mean_flip_rate=float(rates.mean()),
        expected_flips=float(rates.sum()),
        neighbour_distance_median=float(np.median(nb)),
        n_real_queries=len(real),
        n_noisy_queries=len(queries) - len(real),
    )
    return archive, queries, info


# ------------------------------------------------------------------ timing
def _timed(fn, queries) -> tuple[list, np.ndarray]:
    results, ms = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        ms.append((time.perf_counter() - t0) * 1000.0)
    return results, np.asarray(ms)


def filter_mask(n: int, share: float, seed: int = 0) -> np.ndarray:
    """A random filter keeping ``share`` of ``n`` rows, as a zone or date filter would."""
    return np.random.default_rng(seed + 7).random(n) < share


def bench_codes(
    codes: np.ndarray,
    queries: np.ndarray,
    k: int,
    methods: dict,
    name: str,
    sweeps: dict | None = None,
    filter_share: float | None = None,
) -> dict:
    """Exact scan vs each of ``methods`` (label -> builder(codes)) on one code set. Each index is
    built once and measured at every value of its search-time option (``sweeps[label]``, or the
    adapter's own ``sweep``); labels ``LABEL-OPTIONVALUE``. With ``filter_share`` every setting is
    measured again under a random filter keeping that share of the rows, against the scan under
    the same filter."""
    scan_top_k(codes[:1000], queries[0], min(k, 1000))  # compile outside the timing
    scan_top_k(codes, queries[0], k)  # page the codes in
    exact, exact_ms = _timed(lambda q: scan_top_k(codes, q, k), queries)
    t0 = time.perf_counter()
    batch = scan_top_k_batch(codes, queries, k)
    batch_ms = (time.perf_counter() - t0) * 1000.0
    batch_same = all(np.array_equal(a[0], b[0]) for a, b in zip(batch, exact))
    out = dict(
        codes=name,
        n=len(codes),
        bits=codes.shape[1] * 8,
        k=k,
        n_queries=len(queries),
        exact_ms=float(np.median(exact_ms)),
        exact_ms_mean=float(exact_ms.mean()),
        batch_ms_per_query=batch_ms / len(queries),
        batch_equals_single=batch_same,
        kth_distance_median=float(np.median([e[1][-1] for e in exact])),
        methods={},
    )
    del batch
    mask = exact_masked = None
    if filter_share is not None:
        mask = filter_mask(len(codes), filter_share)
        exact_masked = [scan_top_k(codes, q, k, mask) for q in queries]
        out["filter_share"] = float(mask.mean())
    for label, builder in methods.items():
        index = builder(codes)
        option = getattr(index, "option", "")
        values = (sweeps or {}).get(label) or getattr(index, "sweep", ())
        settings = (
            [(f"{label}-{option}{v}", {option: v}) for v in values] if option and values else [(label, {})]
        )
        for setting, options in settings:
            entry = _bench_method(index, codes, queries, exact, k, options)
            if mask is not None:
                filtered = _bench_method(index, codes, queries, exact_masked, k, options, mask)
                entry.update(
                    {
                        f"filtered_{key}": filtered[key]
                        for key in ("ms", "exact_ms", "speedup", "recall", "recall_min")
                    }
                )
            out["methods"][setting] = entry
        del index
        gc.collect()
    return out


def _bench_method(
    index,
    codes: np.ndarray,
    queries: np.ndarray,
    exact: list,
    k: int,
    options: dict,
    mask: np.ndarray | None = None,
) -> dict:
    index.search(queries[0], k, mask, **options)  # compile outside the timing
    # the scan and the method query by query, in turns: both see the same load on shared cores
    found, ms, scan_ms = [], [], []
    for q in queries:
        scan_ms.append(_timed(lambda q: scan_top_k(codes, q, k, mask), [q])[1][0])
        result, t = _timed(lambda q: index.search(q, k, mask, **options), [q])
        found.append(result[0])
        ms.append(t[0])
    ms, scan_ms = np.asarray(ms), np.asarray(scan_ms)
    recall = np.asarray([distance_recall(f[1], e[1]) for f, e in zip(found, exact)])
    same = [np.array_equal(f[0], e[0]) for f, e in zip(found, exact)]
    entry = dict(
        index.describe(),
        **options,
        ms=float(np.median(ms)),
        ms_mean=float(ms.mean()),
        ms_p90=float(np.percentile(ms, 90)),
        exact_ms=float(np.median(scan_ms)),
        speedup=float(np.median(scan_ms) / np.median(ms)),
        recall=float(recall.mean()),
        recall_min=float(recall.min()),
        identical_rows=float(np.mean(same)),
    )
    return entry


def _builder(method: str, params: dict):
    def build(codes: np.ndarray):
        return build_ann(codes, method, progress=True, **params)

    return build


def default_methods(params: dict | None = None) -> dict:
    """label -> builder(codes) for every adapter of ``indexer.ann``; ``params[label]`` are its
    build options."""
    return {name: _builder(name, (params or {}).get(name, {})) for name in ANN_METHODS}


def parse_sweeps(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["hnsw=1000,2000", "ivf=64"]`` -> {"hnsw": (1000, 2000), "ivf": (64,)}."""
    sweeps = {}
    for item in items or []:
        label, _, values = item.partition("=")
        try:
            sweeps[label.strip()] = tuple(int(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise LookalikeError(f"--sweep takes METHOD=INT,INT,..., got {item!r}") from None
        if not sweeps[label.strip()] or min(sweeps[label.strip()]) < 0:
            raise LookalikeError(f"--sweep takes METHOD=INT,INT,... of values >= 0, got {item!r}")
    return sweeps


def parse_params(items: list[str] | None) -> dict[str, dict[str, int]]:
    """``["hnsw.m=16", "ivf.nlist=8192"]`` -> {"hnsw": {"m": 16}, "ivf": {"nlist": 8192}}."""
    params: dict[str, dict[str, int]] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        label, _, name = key.partition(".")
        try:
            params.setdefault(label.strip(), {})[name.strip()] = int(value)
        except ValueError:
            raise LookalikeError(f"--param takes METHOD.NAME=INT, got {item!r}") from None
        if not name.strip():
            raise LookalikeError(f"--param takes METHOD.NAME=INT, got {item!r}")
    return params


def bench_sublinear(
    n: int,
    bits: int = 128,
    k: int = 1000,
    source_indexes: list[str] | None = None,
    n_queries: int = 100,
    uniform: bool = True,
    noise_scale: float = 1.0,
    seed: int = 0,
    methods: dict | list[str] | None = None,
    sweeps: dict[str, tuple[int, ...]] | None = None,
    params: dict[str, dict] | None = None,
    filter_share: float | None = None,
) -> dict:
    """The whole benchmark: realistic codes from each source index, then uniform random codes.

    ``methods``: names from ``indexer.ann.ANN_METHODS`` or a dict label -> builder(codes);
    ``sweeps``: label -> values of the method's search-time option; ``params``: label -> build
    options; ``filter_share``: also measure every setting under a filter keeping that share.
    """
    if filter_share is not None and not 0 < filter_share <= 1:
        raise LookalikeError(f"the filter share must be in (0, 1], got {filter_share}")
    known = default_methods(params)
    unknown = sorted((set(params or {}) | set(sweeps or {})) - set(known))
    if unknown:
        raise LookalikeError(f"unknown methods {', '.join(unknown)}; choose from {', '.join(known)}")
    if methods is None or isinstance(methods, (list, tuple)):
        unknown = sorted(set(methods or []) - set(known))
        if unknown:
            raise LookalikeError(f"unknown methods {', '.join(unknown)}; choose from {', '.join(known)}")
        methods = {name: known[name] for name in (methods or known)}
    if source_indexes is None:
        source_indexes = [str(ensure_demo_index("mars"))]
    runs = []
    for path in source_indexes:
        index = open_index(path)
        if index.bits != bits:
            raise LookalikeError(f"{path} has {index.bits}-bit codes; --bits {bits} needs a {bits}-bit index")
        archive, queries, info = realistic_codes(
            np.asarray(index.codes), index.tiles, n, n_queries, noise_scale=noise_scale, seed=seed
        )
        sources = sorted(set(index.tiles["source"]))
        run = bench_codes(
            archive,
            queries,
            k,
            methods,
            name=f"realistic ({', '.join(sources)})",
            sweeps=sweeps,
            filter_share=filter_share,
        )
        run["replication"] = info
        runs.append(run)
        del archive
        gc.collect()
    if uniform:
        rng = np.random.default_rng(seed)
        archive = rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
        queries = rng.integers(0, 256, size=(n_queries, bits // 8), dtype=np.uint8)
        runs.append(
            bench_codes(
                archive, queries, k, methods, name="uniform random", sweeps=sweeps, filter_share=filter_share
            )
        )
        del archive
        gc.collect()
    return dict(n=n, bits=bits, k=k, threads=numba.get_num_threads(), runs=runs)


def markdown_table(results: list[dict]) -> str:
    """One row per (code set, method setting) over one or more ``bench_sublinear`` results; the
    filter columns hold the same measurement under the run's filter (``-`` without one)."""
    lines = [
        "| N | codes | method | recall@k | ms (median) | exact ms | speed-up | filtered recall | "
        "filtered speed-up | build s | bytes/item |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for run in result["runs"]:
            scale = run.get("replication", {}).get("noise_scale", 1.0)
            codes = run["codes"] + (f", noise x{scale:g}" if scale != 1.0 else "")
            head = f"| {run['n']:,} | {codes} |"
            lines.append(
                f"{head} exact scan | 1.000 | {run['exact_ms']:.1f} | {run['exact_ms']:.1f} | 1.0 | "
                f"{'1.000' if 'filter_share' in run else '-'} | - | - | 0 |"
            )
            lines.append(
                f"{head} exact, batch of {run['n_queries']} | 1.000 | {run['batch_ms_per_query']:.1f} / "
                f"query | {run['exact_ms']:.1f} | {run['exact_ms'] / run['batch_ms_per_query']:.1f} | - | - "
                "| - | 0 |"
            )
            for label, m in run["methods"].items():
                filtered = (
                    f"{m['filtered_recall']:.3f} | {m['filtered_speedup']:.2f}"
                    if "filtered_recall" in m
                    else "- | -"
                )
                lines.append(
                    f"{head} {label} | {m['recall']:.3f} | {m['ms']:.2f} | {m['exact_ms']:.1f} | "
                    f"{m['speedup']:.2f} | {filtered} | {m['build_seconds']:.1f} | "
                    f"{m['bytes_per_item']:.0f} |"
                )
    return "\n".join(lines)
