"""An index of N realistic codes with a stored approximate index, end to end through the API:
``index_ann`` builds and calibrates it, ``search(method="auto")`` decides, the scan is the
reference.

    python benchmarks/ann_index.py --n 10000000 --method ivf --out DIR --json OUT.json

The codes are grown from the real Mars demo index as in ``lookalike bench sublinear``; the tile
table is minimal (ids, source, zone, a position). Reports the build and calibration, the method
``auto`` chose, and recall@1000 and times of 50 held-out queries through ``search`` with
``method="auto"`` against ``method="exact"`` on the same index.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.bench.sublinear import realistic_codes
from lookalike.indexer.search import search_index as search
from lookalike.indexer.store import open_index, write_index
from lookalike.models.metrics import distance_recall
from lookalike.workflows.demo import ensure_demo_index
from lookalike.workflows.indexing import index_ann


def build(out: Path, n: int, seed: int = 0) -> np.ndarray:
    source = open_index(ensure_demo_index("mars"))
    codes, queries, _ = realistic_codes(np.asarray(source.codes), source.tiles, n, 50, seed=seed)
    rng = np.random.default_rng(seed)
    tiles = pd.DataFrame(
        dict(
            tile_id=np.char.add("t", np.arange(n).astype("U9")),
            source=pd.Categorical(["synthetic"] * n),
            zone=pd.Categorical(rng.choice(["30N", "31N", "32N"], n)),
            lon=rng.uniform(-180, 180, n),
            lat=rng.uniform(-80, 80, n),
        )
    )
    hash_model = source.hash_model_path.read_bytes()
    write_index(
        out, codes, tiles, bits=codes.shape[1] * 8, hash_model=hash_model, info=dict(kind="synthetic")
    )
    return queries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--method", default="ivf")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    queries = build(args.out, args.n)
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    calibration = index_ann(args.out, args.method)
    ann_seconds = time.perf_counter() - t0
    index = open_index(args.out)
    search(index, queries[0], k=1000, method="auto")  # load the stored index outside the timing
    recalls, auto_ms, exact_ms, chosen = [], [], [], set()
    for q in queries:
        t0 = time.perf_counter()
        auto = search(index, q, k=1000, method="auto")
        t1 = time.perf_counter()
        exact = search(index, q, k=1000, method="exact")
        t2 = time.perf_counter()
        chosen.add(auto.attrs["method"])
        recalls.append(distance_recall(auto["distance"].to_numpy(), exact["distance"].to_numpy()))
        auto_ms.append((t1 - t0) * 1000)
        exact_ms.append((t2 - t1) * 1000)
    result = dict(
        n=args.n,
        method=args.method,
        write_seconds=written,
        ann_seconds=ann_seconds,
        ann_bytes_per_tile=index.manifest["files"]["ann"]["bytes"] / index.n,
        calibration=calibration,
        auto_chose=sorted(chosen),
        held_out_recall=float(np.mean(recalls)),
        held_out_recall_min=float(np.min(recalls)),
        auto_ms=float(np.median(auto_ms)),
        exact_ms=float(np.median(exact_ms)),
        speedup=float(np.median(exact_ms) / np.median(auto_ms)),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
