"""Exact search over shards on a dask LocalCluster, against the same shards searched in-process.

    python benchmarks/sharded_scale.py [--n 100000000] [--shards 4] [--workers 2,4]
                                       [--queries 20] [--k 1000] [--json OUT]

Builds ``--shards`` synthetic indexes of ``n / shards`` tiles each, as ``lookalike bench scale``
grows them from the Mars demo index (seeds 1, 2, ...; built once and kept in the cache, each also
measured alone in a fresh process: ``shards[i]``). Then, in this process:

- **in-process reference**: each query searched on every shard one after another with
  ``search_index`` (the shards opened here) and merged with ``merge_top_k``: what the cluster's
  work costs without dask;
- **cluster**: ``ShardedSearch`` on a ``LocalCluster`` of 2 and 4 in-process workers (the
  product's ``--scheduler local``), each shard held by one worker; the same queries, whose hits
  must be the reference's rows (``identical``).

Reported per worker count: the time to load the shards on the workers, the search p50, the
fan-out and merge cost (cluster p50 minus the in-process p50 of the same queries), and the
bytes each worker holds: on disk, and searched (codes and filter columns, the pages a search
reads). The workers share this machine's 2 cores, and each process runs one scan at a time,
so the shards' scans add up; ``benchmarks/scaling_model.py`` turns the figures into the cores
a cluster needs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lookalike.bench.scale import bench_scale
from lookalike.config import scale_dir
from lookalike.indexer.distributed import ShardedSearch, connect, merge_top_k
from lookalike.indexer.search import ranked_rows
from lookalike.indexer.store import open_index
from lookalike.workflows.demo import ensure_demo_index

SEARCHED = ("codes", "columns")  # the files a search reads through (the table: k rows only)


def shard_bytes(path: Path) -> tuple[int, int]:
    """(all index files, the files a search reads through) of one shard, in bytes."""
    files = open_index(path, verify=False).manifest["files"]
    return sum(e["bytes"] for e in files.values()), sum(files[r]["bytes"] for r in SEARCHED if r in files)


def in_process(dirs: list[Path], queries: np.ndarray, k: int) -> tuple[list[float], list[list[int]]]:
    """Each query on every shard in turn, merged: seconds and global hit rows per query."""
    shards = [open_index(d, verify=False) for d in dirs]
    offsets = np.concatenate([[0], np.cumsum([s.n for s in shards])])
    ranked_rows(shards[0].codes, queries[0], k)  # compiles the scan kernel
    times, rows = [], []
    for q in queries:
        t0 = time.perf_counter()
        parts = []
        for shard, offset in zip(shards, offsets):
            found, dist = ranked_rows(shard.codes, q, k)
            parts.append((found + offset, dist, shard.tile_rows(found)))
        hits = merge_top_k(parts, k)
        times.append(time.perf_counter() - t0)
        rows.append(hits.attrs["index_row"].tolist())
    return times, rows


def on_cluster(dirs: list[Path], queries: np.ndarray, k: int, workers: int, expected: list) -> dict:
    with connect("local", n_workers=workers) as client:
        t0 = time.perf_counter()
        sharded = ShardedSearch(client, [str(d) for d in dirs], verify=False)
        load_s = time.perf_counter() - t0
        sharded.search(queries[0], k=k)  # each worker compiles its scan kernel
        times, identical = [], True
        for q, rows in zip(queries, expected):
            t0 = time.perf_counter()
            hits = sharded.search(q, k=k)
            times.append(time.perf_counter() - t0)
            identical &= hits.attrs["index_row"].tolist() == rows
    return dict(workers=workers, load_s=round(load_s, 3), p50_s=_p50(times), identical=identical)


def _p50(times: list[float]) -> float:
    return round(statistics.median(times), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000_000, help="tiles over all shards")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", default="2,4")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    source = ensure_demo_index("mars")
    per_shard = args.n // args.shards
    alone = [
        bench_scale(per_shard, source, k=args.k, n_queries=args.queries, seed=1 + i)
        for i in range(args.shards)
    ]
    dirs = [scale_dir() / a["index"] for a in alone]
    queries = np.load(dirs[0] / "scale_queries.npy")
    reference_times, expected = in_process(dirs, queries, args.k)
    reference = _p50(reference_times)
    disk, searched = map(sum, zip(*(shard_bytes(d) for d in dirs)))
    runs = []
    for w in (int(x) for x in args.workers.split(",")):
        run = on_cluster(dirs, queries, args.k, w, expected)
        run["fan_out_merge_s"] = round(run["p50_s"] - reference, 4)
        held = -(-args.shards // w)  # shards on the busiest worker
        run["worker_disk_gb"] = round(disk / args.shards * held / 1e9, 2)
        run["worker_searched_gb"] = round(searched / args.shards * held / 1e9, 2)
        runs.append(run)
        print(json.dumps(run), file=sys.stderr)
    result = dict(
        n=per_shard * args.shards,
        shards=args.shards,
        k=args.k,
        queries=len(queries),
        shard_alone=[
            dict(index=a["index"], n=a["n"], search_p50_s=a["search_p50_s"], build_s=a["build_s"])
            for a in alone
        ],
        in_process_p50_s=reference,
        disk_gb=round(disk / 1e9, 2),
        searched_gb=round(searched / 1e9, 2),
        cluster=runs,
        cpus=os.cpu_count(),
        load_average=[round(v, 2) for v in os.getloadavg()],
        date=time.strftime("%Y-%m-%d"),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
