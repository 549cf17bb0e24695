"""Cores, workers, memory and build time for an index of 2 x 10^9 tiles, from measured JSON.

    python benchmarks/scaling_model.py [--n 2000000000] [--cores-per-worker 16]
                                       [--scale benchmarks/results/scale_100m.json]
                                       [--sharded benchmarks/results/sharded_scale.json] [--md OUT]

Reads what ``lookalike bench scale --n 100000000`` and ``benchmarks/sharded_scale.py`` measured
and prints the table of ``docs/scaling.md``:

- the exact scan's rate per core: the 100 M index's search p50 on the machine's cores (the
  search reads its hit rows too, so the rate is a little low);
- the fan-out and merge cost: the largest worker count's cluster p50 minus the same shards
  searched in-process (``fan_out_merge_s``), added to every query;
- bytes per tile: all index files, and the files a search reads through (codes and filter
  columns: what a worker should keep in its page cache);
- the build: the 100 M build's seconds (codes and tile table written; encoding is apart,
  see ``docs/scaling.md``) on the machine's cores, as core-hours.

For a query time T the cluster needs C = N / (rate x (T - fan-out)) cores; with
``--cores-per-worker`` cores a worker, W = C / cores-per-worker workers, each holding N / W tiles.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS_S = (0.1, 1.0)


def model(scale: dict, sharded: dict, n: int, cores_per_worker: int) -> list[dict]:
    """One row per target query time (see the module docstring)."""
    cores = sharded.get("cpus") or 2
    rate = scale["n"] / (scale["search_p50_s"] * cores)  # codes a core scans per second
    fan_out = max(0.0, max(run["fan_out_merge_s"] for run in sharded["cluster"]))
    disk_per_tile = sharded["disk_gb"] * 1e9 / sharded["n"]
    searched_per_tile = sharded["searched_gb"] * 1e9 / sharded["n"]
    build_core_h = scale["build_s"] * cores / scale["n"] * n / 3600
    rows = []
    for target in TARGETS_S:
        budget = target - fan_out
        need = math.ceil(n / (rate * budget)) if budget > 0 else None
        workers = None if need is None else math.ceil(need / cores_per_worker)
        rows.append(
            dict(
                target_s=target,
                cores=need,
                workers=workers,
                worker_searched_gb=None
                if workers is None
                else round(searched_per_tile * n / workers / 1e9, 1),
                worker_disk_gb=None if workers is None else round(disk_per_tile * n / workers / 1e9, 1),
                build_core_hours=round(build_core_h, 1),
                build_hours_on_the_cluster=None if need is None else round(build_core_h / need, 2),
                rate_per_core=round(rate),
                fan_out_s=fan_out,
            )
        )
    return rows


def markdown(rows: list[dict], n: int, cores_per_worker: int) -> str:
    lines = [
        f"| query time | cores | workers of {cores_per_worker} cores | searched bytes a worker "
        "(page cache) | index files a worker (disk) | build (codes + table) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["cores"] is None:
            lines.append(
                f"| {r['target_s']} s | not reachable: the fan-out alone takes {r['fan_out_s']} s | | | | |"
            )
            continue
        lines.append(
            f"| {r['target_s']} s | {r['cores']:,} | {r['workers']:,} | {r['worker_searched_gb']} GB | "
            f"{r['worker_disk_gb']} GB | {r['build_core_hours']} core-h, "
            f"{r['build_hours_on_the_cluster']} h on those cores |"
        )
    first = rows[0]
    lines += [
        "",
        f"N = {n:.2g} tiles, 128-bit codes; scan rate {first['rate_per_core'] / 1e6:.0f} M codes/s "
        f"a core, fan-out and merge {first['fan_out_s']} s a query.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=2e9)
    parser.add_argument("--cores-per-worker", type=int, default=16)
    parser.add_argument("--scale", type=Path, default=RESULTS / "scale_100m.json")
    parser.add_argument("--sharded", type=Path, default=RESULTS / "sharded_scale.json")
    parser.add_argument("--md", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    scale, sharded = (json.loads(p.read_text()) for p in (args.scale, args.sharded))
    n = int(args.n)
    text = markdown(model(scale, sharded, n, args.cores_per_worker), n, args.cores_per_worker)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
