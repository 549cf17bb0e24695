"""The tile table's file format, chosen by measurement: the same table as a memory-mapped Arrow IPC
file (what indexes write) and as Parquet (what they wrote before), opened and searched for its
k hit rows in fresh processes.

    python benchmarks/tile_table.py --index DIR [--k 1000] [--repeats 20] [--json OUT]

DIR is an index in today's format (``lookalike bench scale`` leaves one in its cache). The
Parquet copy is written beside the results in a temporary folder, with the row groups pandas
writes by default. Measured for each: the time to open the table and the process's RSS after
it, and the median time to read k random rows (a search's hits) as a DataFrame. For Parquet
two ways are measured: read whole at open (indexes before this format) and read only the row
groups that hold the hits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEASURE = r"""
import json, sys, time
import numpy as np
path, how, k, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

from pathlib import Path
import pandas as pd
import pyarrow.parquet as pq
from lookalike.indexer.tile_table import MappedTable, read_parquet_table

t0 = time.perf_counter()  # the libraries are loaded: what follows is the table's own cost
if how == "arrow":
    table = MappedTable(Path(path))
    n = table.n
    take = table.take
elif how == "parquet-whole":  # as indexes before the mapped table were opened
    frame = read_parquet_table(Path(path))
    n = len(frame)
    take = lambda rows: frame.iloc[rows].reset_index(drop=True)
else:
    file = pq.ParquetFile(path)
    n = file.metadata.num_rows
    starts = np.cumsum([0] + [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)])
    def take(rows):
        groups = np.searchsorted(starts, rows, side="right") - 1
        wanted = np.unique(groups)
        part = file.read_row_groups(wanted.tolist())
        offsets = np.cumsum([0] + [starts[g + 1] - starts[g] for g in wanted])
        local = offsets[np.searchsorted(wanted, groups)] + rows - starts[groups]
        return part.take(local).to_pandas()
open_s = time.perf_counter() - t0
rss_open = rss_mb()
rng = np.random.default_rng(0)
times = []
for _ in range(repeats):
    rows = rng.choice(n, k, replace=False)
    t0 = time.perf_counter()
    hits = take(rows)
    times.append(time.perf_counter() - t0)
    assert len(hits) == k
print(json.dumps(dict(open_s=round(open_s, 3), rss_open_mb=round(rss_open, 1),
                      take_p50_s=round(float(np.median(times)), 4), rss_after_mb=round(rss_mb(), 1))))
"""


def measure(path: Path, how: str, k: int, repeats: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), how, str(k), str(repeats)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from lookalike.indexer.store import read_manifest
    from lookalike.indexer.tile_table import MappedTable

    files = read_manifest(args.index)["files"]
    arrow = args.index / files["tiles"]["name"]
    with tempfile.TemporaryDirectory() as scratch:
        parquet = Path(scratch) / "tiles.parquet"
        t0 = time.perf_counter()
        MappedTable(arrow).frame().to_parquet(parquet, index=False)
        write_s = time.perf_counter() - t0
        rows = {
            how: measure(arrow if how == "arrow" else parquet, how, args.k, args.repeats)
            for how in ("arrow", "parquet-row-groups", "parquet-whole")
        }
        sizes = dict(arrow=arrow.stat().st_size, parquet=parquet.stat().st_size)
    n = MappedTable(arrow).n
    result = dict(
        index=args.index.name,
        n=n,
        k=args.k,
        repeats=args.repeats,
        bytes_per_tile={name: round(size / n, 1) for name, size in sizes.items()},
        parquet_write_s=round(write_s, 1),
        formats=rows,
        take_ratio_parquet_row_groups_to_arrow=round(
            rows["parquet-row-groups"]["take_p50_s"] / rows["arrow"]["take_p50_s"], 1
        ),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
