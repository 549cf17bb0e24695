"""Run every benchmark and refresh ``benchmarks/results/`` (``make bench``).

    python benchmarks/run_all.py [--only NAME ...] [--list]

Each benchmark times the project against a reference measured in the same run (faiss, eager
PyTorch, the exact scan) and writes JSON plus a Markdown table. Real data come from
``$LOOKALIKE_DATA``; the Mars demo index is built on first use. The whole set takes about an hour
on two cores, most of it the retrieval table and the 100 M sublinear run; pick some with ``--only``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LOOKALIKE = [sys.executable, "-m", "lookalike"]

BENCHMARKS: dict[str, list[str]] = {
    "search": [*LOOKALIKE, "bench", "search", "--n", "10000000", "--bits", "512", "--k", "1000",
               "--queries", "16", "--json", str(RESULTS / "search.json")],
    "search-128": [*LOOKALIKE, "bench", "search", "--n", "10000000", "--bits", "128", "--k", "1000",
                   "--queries", "16", "--json", str(RESULTS / "search_128.json")],
    "encode": [*LOOKALIKE, "bench", "encode", "--n", "256", "--repeat", "5",
               "--json", str(RESULTS / "encode.json")],
    "sublinear": [*LOOKALIKE, "bench", "sublinear", "--n", "10000000", "--k", "1000", "--queries", "50",
                  "--methods", "hnsw,ivf,lsh", "--filter-share", "0.1", "--no-uniform",
                  "--json", str(RESULTS / "sublinear.json")],
    "index": [*LOOKALIKE, "bench", "index", "mars_8k", "--json", str(RESULTS / "index_mars.json")],
    "memory": [sys.executable, str(REPO / "benchmarks" / "memory.py")],
    "retrieval": [sys.executable, str(REPO / "benchmarks" / "retrieval_table.py")],
    "classification": [sys.executable, str(REPO / "benchmarks" / "classification_table.py")],
    "explorer": [sys.executable, str(REPO / "benchmarks" / "explorer_click.py")],
    "load": [sys.executable, str(REPO / "benchmarks" / "load.py"), "--json", str(RESULTS / "load.json")],
    "faults": [sys.executable, str(REPO / "benchmarks" / "faults.py"), "--trials", "50",
               "--json", str(RESULTS / "faults.json")],
    "fuzz": [sys.executable, str(REPO / "benchmarks" / "fuzz.py"), "--examples", "2000"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or BENCHMARKS:
        command = BENCHMARKS[name]
        print(f"== {name}: {' '.join(command)}", flush=True)
        if args.list:
            continue
        t0 = time.perf_counter()
        code = subprocess.call(command, cwd=REPO)
        print(f"== {name}: exit {code} after {time.perf_counter() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
