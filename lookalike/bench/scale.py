"""``lookalike bench scale``: an index of N tiles grown from a real one, opened and searched with
and without filters, each measured in a fresh process.

The codes are grown from a real index as ``bench sublinear`` grows them (its rows replicated with
the bit-flip rates of neighbouring tiles; half of the queries are held-out real codes, half noisy
variants). The tile table is the real one repeated as other acquisitions: each repetition is a
source of its own with an acquisition date in 2010-2020, its grid columns shifted so tile ids
stay unique; places, zones and footprints are the real rows'. The index is built once through
``write_index``, its table batch by batch (never held whole), and kept in the cache
(``$LOOKALIKE_CACHE/scale``) for later runs.

Three filters are chosen on the whole table (a few zones holding about 1 % of the rows, a date
range of about 10 %, a lon/lat box of about 1 %), and for each query the rows each must return
are worked out by a reference that reads the table's columns with pyarrow, filters them with
pandas/numpy and ranks the kept rows' codes by (distance, row); in a process of its own, once,
kept beside the index. Measured in another fresh process: ``open_index`` time and the process's
resident memory after it, the time to verify the files an open leaves to their first use
(``Index.verify_rest``, as a server does in the background), the exact search (k hits, no filter)
over the queries, and the filtered searches: ``identical`` is whether every query's hits are the
reference's rows.
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.config import scale_dir
from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_bytes
from lookalike.indexer.tile_table import BATCH_ROWS, TileBatches

FILTER_SHARES = {"zone": 0.01, "time": 0.10, "bbox": 0.01}
SERVED_KEYS = ("body", "tiling", "sources", "backbone", "hash", "basemap")
YEARS = (2010, 2020)  # acquisition dates of the repeated tables are spread over these years


# ------------------------------------------------------------------ the synthetic index
def synthetic_batches(real: pd.DataFrame, n: int, seed: int = 0, batch: int = BATCH_ROWS) -> TileBatches:
    """``n`` tile rows, made ``batch`` rows at a time: the real table repeated, each repetition
    another acquisition of the same sources on its own date (categories shared by every batch, so
    they make one table). A repetition's tiles keep their source, row and column, so the explorer
    draws their thumbnails from the real source; ``~REP`` in their ids keeps the ids unique."""
    if len(real) == 0:
        raise LookalikeError("the source index has no tiles to grow a table from")
    reps = -(-n // len(real))
    first, last = (pd.Timestamp(f"{y}-01-01", tz="UTC") for y in YEARS)
    days = np.random.default_rng(seed).integers(0, (last - first).days, reps)
    sources = real["source"].astype(str).astype("category")
    zones = real["zone"].astype("category")
    extra = [c for c in ("gsd", "size", *(f"{a}{i}" for i in range(4) for a in ("lon", "lat"))) if c in real]

    def frames():
        for start in range(0, n, batch):
            at = np.arange(start, min(n, start + batch), dtype=np.int64)
            rep, row = at // len(real), at % len(real)
            base = real.iloc[row]
            tiles = pd.DataFrame(
                {
                    "source": pd.Categorical.from_codes(
                        sources.cat.codes.to_numpy()[row], dtype=sources.dtype
                    ),
                    "zone": pd.Categorical.from_codes(zones.cat.codes.to_numpy()[row], dtype=zones.dtype),
                    "lon": base["lon"].to_numpy(),
                    "lat": base["lat"].to_numpy(),
                    "time": first + pd.to_timedelta(days[rep], unit="D"),
                    "row": base["row"].to_numpy(np.int32),
                    "col": base["col"].to_numpy(np.int32),
                }
            )
            for c in extra:
                tiles[c] = base[c].to_numpy()
            ids = [tiles[c].astype(str) for c in ("source", "zone", "row", "col")]
            acquisition = pd.Series(rep.astype(str)).radd("~")
            tiles.insert(0, "tile_id", ids[0] + acquisition + ":" + ids[1] + ":" + ids[2] + ":" + ids[3])
            yield tiles

    return TileBatches(frames(), n)


def synthetic_tiles(real: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``synthetic_batches`` as one DataFrame (for tables that fit in memory)."""
    return pd.concat(list(synthetic_batches(real, n, seed).frames), ignore_index=True)


def build_synthetic(source: Path, n: int, bits: int, n_queries: int, seed: int, out: Path) -> dict:
    """Write the synthetic index of ``n`` tiles at ``out`` (with its queries) and say how long.
    The tile table is written batch by batch: it is never held whole."""
    from lookalike.bench.sublinear import realistic_codes
    from lookalike.indexer.store import open_index, write_index

    t0 = time.perf_counter()
    real = open_index(source, verify=False)
    if real.bits != bits:
        raise LookalikeError(f"{source} holds {real.bits}-bit codes; grow {real.bits}-bit codes from it")
    codes, queries, grown = realistic_codes(np.asarray(real.codes), real.tiles, n, n_queries, seed=seed)
    tiles = synthetic_batches(real.tiles, n, seed)
    # what the explorer needs to serve it as the source index is served: body, tiling, sources
    served = {key: real.manifest[key] for key in SERVED_KEYS if key in real.manifest}
    write_index(
        out,
        codes,
        tiles,
        bits=bits,
        hash_model=real.hash_model_path.read_bytes(),
        info=dict(served, kind="scale"),
    )
    np.save(out / "scale_queries.npy", queries)
    done = dict(build_s=round(time.perf_counter() - t0, 2), grown_from=source.name, codes=grown)
    (out / "scale_build.json").write_text(json.dumps(done))
    return done


def _cache_key(source: Path, n: int, bits: int, n_queries: int, seed: int) -> str:
    from lookalike.indexer.store import FORMAT_VERSION, read_manifest

    manifest = read_manifest(source)
    made = [str(source.resolve()), manifest.get("updated"), manifest.get("count"), n, bits, n_queries, seed]
    # another layout, another index
    table_format = (
        f"arrow-ipc of {BATCH_ROWS}-row batches, id lookup, servable, footprint reach, row checksums, cells"
    )
    return hashlib.sha256(json.dumps(made + [FORMAT_VERSION, table_format]).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ filters and their reference
def chosen_filters(tiles: pd.DataFrame) -> dict[str, dict]:
    """Zone, date and box filters keeping about ``FILTER_SHARES`` of the rows (JSON-able)."""
    counts = tiles["zone"].value_counts()
    zones, kept = [], 0
    for zone, count in counts.sort_values().items():  # small zones first: close to the share
        if kept >= FILTER_SHARES["zone"] * len(tiles):
            break
        zones.append(str(zone))
        kept += int(count)
    times = tiles["time"]
    half = FILTER_SHARES["time"] / 2
    start, end = times.quantile(0.5 - half), times.quantile(0.5 + half)
    lon, lat = tiles["lon"].to_numpy(), tiles["lat"].to_numpy()
    cx, cy = float(np.median(lon)), float(np.median(lat))
    low, high = 0.0, 180.0
    for _ in range(30):  # the half-width whose box holds the share
        mid = (low + high) / 2
        share = np.mean((np.abs(lon - cx) <= mid) & (np.abs(lat - cy) <= mid))
        low, high = (mid, high) if share < FILTER_SHARES["bbox"] else (low, mid)
    bbox = [cx - high, max(-90.0, cy - high), cx + high, min(90.0, cy + high)]
    return {
        "zone": dict(zones=zones),
        "time": dict(time_range=[start.isoformat(), end.isoformat()]),
        "bbox": dict(bbox=bbox),
    }


def reference_mask(tiles: pd.DataFrame, spec: dict) -> np.ndarray:
    """The rows a filter keeps, computed on the whole table without the search code."""
    if "zones" in spec:
        return tiles["zone"].astype(str).isin(spec["zones"]).to_numpy()
    if "time_range" in spec:
        start, end = (pd.Timestamp(t) for t in spec["time_range"])
        return ((tiles["time"] >= start) & (tiles["time"] <= end)).to_numpy()
    west, south, east, north = spec["bbox"]
    lon, lat = tiles["lon"].to_numpy(), tiles["lat"].to_numpy()
    return (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)


def reference_rows(codes: np.ndarray, query: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """The k kept rows nearest ``query``, ordered by (Hamming distance, row)."""
    rows = np.flatnonzero(mask)
    dist = np.concatenate(
        [
            np.unpackbits(np.asarray(codes[part]) ^ query, axis=1).sum(axis=1, dtype=np.int32)
            for part in np.array_split(rows, max(1, len(rows) // (1 << 20)))
        ]
    )
    order = np.lexsort((rows, dist))[:k]
    return rows[order]


def table_columns(path: str | Path) -> pd.DataFrame:
    """The zone, time, lon and lat of every tile, read from the index's table file with pyarrow
    (not through the search's filter columns, which the reference checks)."""
    import pyarrow as pa

    from lookalike.indexer.store import read_manifest

    name = read_manifest(path)["files"]["tiles"]["name"]
    wanted = ["zone", "time", "lon", "lat"]
    if name.endswith(".parquet"):
        return pd.read_parquet(Path(path) / name, columns=wanted)
    return pa.ipc.open_file(pa.memory_map(str(Path(path) / name))).read_all().select(wanted).to_pandas()


def reference(path: str | Path, k: int) -> dict:
    """The filters of the benchmark and, for each query, the rows each must return (called in a
    fresh process by ``bench_scale``, once per index and k; kept beside the index)."""
    from lookalike.indexer.store import open_index

    columns = table_columns(path)
    codes = open_index(path, verify=False).codes
    queries = np.load(Path(path) / "scale_queries.npy")
    filters = {}
    for name, spec in chosen_filters(columns).items():
        mask = reference_mask(columns, spec)
        rows = [reference_rows(codes, q, mask, k).tolist() for q in queries]
        filters[name] = dict(spec=spec, share=round(float(mask.mean()), 4), rows=rows)
    return dict(k=k, filters=filters)


# ------------------------------------------------------------------ measured in a fresh process
def _rss_mb(key: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``, or ``RssAnon``: not counting mapped files)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: str, k: int) -> dict:
    """Open the index and time its searches (called in a fresh process by ``bench_scale``)."""
    from lookalike.indexer.search import Filters, search_index
    from lookalike.indexer.store import open_index

    t0 = time.perf_counter()
    open_index(path, verify=False)  # first: verifying reads every file, which warms the page cache
    unverified_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = open_index(path)
    open_s = time.perf_counter() - t0
    rss_open = _rss_mb()
    t0 = time.perf_counter()
    index.verify_rest()  # what a server does in the background after opening (the table, id lookup, cells)
    rest_s = time.perf_counter() - t0
    queries = np.load(Path(path) / "scale_queries.npy")
    search_index(index, queries[0], k=k, method="exact")  # compiles the scan kernel
    plain = [_timed(lambda q=q: search_index(index, q, k=k, method="exact")) for q in queries]
    filters = []
    expected = json.loads((Path(path) / f"scale_reference_k{k}.json").read_text())["filters"]
    for name, wanted in expected.items():
        chosen, times, identical = Filters(**wanted["spec"]), [], True
        for q, rows in zip(queries, wanted["rows"]):
            seconds, hits = _timed_hits(
                lambda q=q, f=chosen: search_index(index, q, k=k, filters=f, method="exact")
            )
            times.append(seconds)
            identical &= hits.tolist() == rows
        filters.append(
            dict(name=name, share=wanted["share"], p50_s=_p50(times), identical=identical, **wanted["spec"])
        )
    return dict(
        open_s=round(open_s, 3),  # verified as open_index does by default (the files a search scans)
        open_unverified_s=round(unverified_s, 3),
        verify_rest_s=round(rest_s, 3),  # the files verified on first use, verified at once
        rss_open_mb=round(rss_open, 1),
        search_p50_s=_p50(plain),
        filters=filters,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        rss_anon_after_mb=round(_rss_mb("RssAnon"), 1),  # the rest of the peak is mapped files
    )


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _timed_hits(fn) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    hits = fn()
    return time.perf_counter() - t0, np.asarray(hits.attrs["index_row"])


def _p50(times: list[float]) -> float:
    return round(float(np.median(times)), 4)


def _in_fresh_process(call: str) -> tuple[dict, float]:
    """Run ``call`` (Python printing one JSON line) in a new interpreter; its result and peak RSS."""
    done = subprocess.run([sys.executable, "-c", call], capture_output=True, text=True)
    if done.returncode != 0:
        raise LookalikeError(f"the measuring process failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return json.loads(done.stdout.strip().splitlines()[-1]), peak


def bench_scale(
    n: int, source: str | Path, bits: int = 128, k: int = 1000, n_queries: int = 20, seed: int = 0
) -> dict:
    """The whole benchmark: the synthetic index (built once, cached), then its measurements."""
    source = Path(source)
    out = scale_dir() / f"n{n}-{_cache_key(source, n, bits, n_queries, seed)}"
    built_now = not (out / "scale_build.json").exists()
    if built_now:
        call = (
            "import json, pathlib; from lookalike.bench.scale import build_synthetic; "
            f"print(json.dumps(build_synthetic(pathlib.Path({str(source)!r}), {n}, {bits}, {n_queries}, "
            f"{seed}, pathlib.Path({str(out)!r}))))"
        )
        build, build_peak = _in_fresh_process(call)
        build["peak_rss_mb"] = round(build_peak, 1)
        (out / "scale_build.json").write_text(json.dumps(build))
    build = json.loads((out / "scale_build.json").read_text())
    if not (out / f"scale_reference_k{k}.json").exists():
        call = (
            "import json; from lookalike.bench.scale import reference; "
            f"print(json.dumps(reference({str(out)!r}, {k})))"
        )
        expected, _ = _in_fresh_process(call)
        atomic_write_bytes(out / f"scale_reference_k{k}.json", json.dumps(expected).encode())
    call = (
        "import json; from lookalike.bench.scale import measure; "
        f"print(json.dumps(measure({str(out)!r}, {k})))"
    )
    measured, _ = _in_fresh_process(call)
    return dict(
        n=n,
        bits=bits,
        k=k,
        queries=n_queries,
        index=out.name,  # in the cache's scale folder
        built_now=built_now,
        build_s=build["build_s"],
        peak_rss_mb=build.get("peak_rss_mb"),
        search_peak_rss_mb=measured.pop("peak_rss_mb"),
        grown_from=Path(build["grown_from"]).name,
        **measured,
    )
