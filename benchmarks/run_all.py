"""Run the benchmarks and refresh ``benchmarks/results/`` (``make bench``).

    python benchmarks/run_all.py [--only NAME ...] [--all] [--list] [--dry-run]

Without arguments every benchmark runs except the long ones (more than about a quarter of an
hour on two cores, or gigabytes of scratch files: marked ``long`` in ``--list``); ``--all`` adds
them, ``--only NAME ...`` runs just those named, long or not. ``--list`` names the benchmarks
and the result files each writes; ``--dry-run`` prints the commands of the selection without
running them. Each benchmark times or scores the project against a reference measured in the
same run (faiss, eager PyTorch, the exact scan, float features, an earlier model) and writes
JSON, most of them beside a Markdown table; ``benchmarks/README.md`` has the current figures.

Real data come from ``$LOOKALIKE_DATA`` (the Makefile points it at ``../shared/data`` when that
sits beside the checkout); the Mars and Earth demo indexes are built on first use. Scratch files
(a 10 M-tile index, the gigapixel GeoTIFF, empty pixel caches) go to ``benchmarks/out/``, which
git ignores. In the printed commands ``python`` is this interpreter, ``lookalike`` is
``python -m lookalike``, ``{mars}`` and ``{earth}`` the demo indexes, ``{scale_10m}`` and
``{scale_100m}`` the indexes the ``scale`` benchmarks left in the cache and ``{data}`` the data
cache; they are filled in when a command runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
R = "benchmarks/results/"  # result files, relative to the repository (commands run there)
OUT = "benchmarks/out/"  # scratch files (ignored by git)
GIGA8_ZONES = "29N,30N,31N,32N,29S,30S,31S,32S"
# the revision whose shipped classifiers (MLP probes) the classification table compares with
PREVIOUS_CLASSIFIERS = "4489c7cc8df75c2f293ffe3e7f87f45bce98404d"


@dataclass(frozen=True)
class Step:
    """One command. ``argv[0]`` is ``python`` or ``lookalike``; paths are relative to the repository."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # added to the environment
    fresh: str | None = None  # a folder removed before the command runs
    stdout: str | None = None  # a file that receives the command's standard output

    def shown(self) -> str:
        text = " ".join(shlex.quote(a) if "{" not in a else a for a in self.argv)
        if self.stdout:
            text += f" > {self.stdout}"
        if self.env:
            text = " ".join(f"{k}={v}" for k, v in self.env.items()) + " " + text
        if self.fresh:
            text = f"rm -rf {self.fresh} && {text}"
        return text


@dataclass(frozen=True)
class Benchmark:
    name: str
    what: str
    writes: tuple[str, ...]  # files under benchmarks/results/
    steps: tuple[Step, ...]
    long: bool = False


def step(*argv: str, **options) -> Step:
    return Step(tuple(argv), **options)


def explorer(index: str | None, result: str, *extra: str, cold: bool = False) -> Step:
    """``explorer_click.py`` on an index (default: the Mars demo index); ``cold``: an empty pixel cache."""
    argv = [
        "python",
        "benchmarks/explorer_click.py",
        *([index] if index else []),
        *extra,
        "--json",
        R + result,
    ]
    if not cold:
        return step(*argv)
    return step(*argv, env={"LOOKALIKE_CACHE": OUT + "empty-cache"}, fresh=OUT + "empty-cache")


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "search",
        "exact Hamming scan vs faiss IndexBinaryFlat, 10 M codes of 512 and 128 bits",
        ("search.json", "search_short_codes.json"),
        (
            step(
                "lookalike",
                "bench",
                "search",
                "--n",
                "10000000",
                "--bits",
                "512",
                "--k",
                "1000",
                "--queries",
                "16",
                "--json",
                R + "search.json",
            ),
            step(
                "lookalike",
                "bench",
                "search",
                "--n",
                "10000000",
                "--bits",
                "128",
                "--k",
                "1000",
                "--queries",
                "16",
                "--json",
                R + "search_short_codes.json",
            ),
        ),
    ),
    Benchmark(
        "encode",
        "encoder runtimes (ONNX Runtime, torch paths, int8) vs eager PyTorch on Mars tiles",
        ("encode.json",),
        (step("lookalike", "bench", "encode", "--n", "256", "--repeat", "5", "--json", R + "encode.json"),),
    ),
    Benchmark(
        "index",
        "whole index builds vs the encoder alone, per stage: Mars mosaic, --views 1, "
        "8 zones, an image folder",
        ("index_mars.json", "index_mars_views1.json", "index_mars8.json", "index_hirise_val.json"),
        (
            step("lookalike", "bench", "index", "mars_8k", "--json", R + "index_mars.json"),
            step(
                "lookalike",
                "bench",
                "index",
                "mars_8k",
                "--views",
                "1",
                "--json",
                R + "index_mars_views1.json",
            ),
            step(
                "lookalike",
                "bench",
                "index",
                "mars_8k",
                "--zones",
                GIGA8_ZONES,
                "--json",
                R + "index_mars8.json",
            ),
            step(
                "lookalike",
                "bench",
                "index",
                "--images",
                "{data}/hirise_v1",
                "--labels",
                "{data}/hirise_v1/labels.csv",
                "--split",
                "val",
                "--encode-sample",
                "544",
                "--json",
                R + "index_hirise_val.json",
            ),
        ),
    ),
    Benchmark(
        "gigapixel",
        "a synthetic 1.21-gigapixel GeoTIFF: build vs encoder (8 zones), then served "
        "with an empty and a filled pixel cache (writes 1.3 GB to benchmarks/out/)",
        ("index_giga8.json", "explorer_giga8_cold.json", "explorer_giga8_warm.json"),
        (
            step("python", "benchmarks/gigapixel.py", OUT + "giga.tif"),
            step(
                "lookalike",
                "bench",
                "index",
                OUT + "giga.tif",
                "--zones",
                GIGA8_ZONES,
                "--json",
                R + "index_giga8.json",
            ),
            step(
                "lookalike",
                "index",
                OUT + "giga.tif",
                "--zones",
                GIGA8_ZONES,
                "--out",
                OUT + "giga8",
                fresh=OUT + "giga8",
            ),
            step(
                "python",
                "benchmarks/explorer_click.py",
                OUT + "giga8",
                "--json",
                R + "explorer_giga8_cold.json",
                env={"LOOKALIKE_CACHE": OUT + "giga8-cache"},
                fresh=OUT + "giga8-cache",
            ),
            step(
                "python",
                "benchmarks/explorer_click.py",
                OUT + "giga8",
                "--json",
                R + "explorer_giga8_warm.json",
                env={"LOOKALIKE_CACHE": OUT + "giga8-cache"},
            ),
        ),
        long=True,
    ),
    Benchmark(
        "sublinear",
        "faiss IVF / HNSW / multi-hash vs the exact scan on 10 M codes grown from the "
        "Mars and Earth demo indexes (the HNSW build alone takes about 20 minutes)",
        ("sublinear.json", "sublinear_earth.json"),
        (
            step(
                "lookalike",
                "bench",
                "sublinear",
                "--n",
                "10000000",
                "--k",
                "1000",
                "--queries",
                "50",
                "--source-index",
                "{mars}",
                "--methods",
                "hnsw,ivf,lsh",
                "--filter-share",
                "0.1",
                "--no-uniform",
                "--sweep",
                "hnsw=1000,2000,3000,5000,8000",
                "--sweep",
                "ivf=32,64,128,256,512,1024",
                "--sweep",
                "lsh=0,1",
                "--json",
                R + "sublinear.json",
            ),
            step(
                "lookalike",
                "bench",
                "sublinear",
                "--n",
                "10000000",
                "--k",
                "1000",
                "--queries",
                "50",
                "--source-index",
                "{earth}",
                "--methods",
                "ivf",
                "--filter-share",
                "0.1",
                "--sweep",
                "ivf=32,64,128,256,512,1024",
                "--json",
                R + "sublinear_earth.json",
            ),
        ),
        long=True,
    ),
    Benchmark(
        "sublinear-100m",
        "faiss IVF vs the exact scan on 100 M codes grown from the Mars demo index: the "
        "recall / speed curve of --ann at 100 M (HNSW and multi-hash are left out: at 10 M "
        "both were slower than the scan at recall 0.95, and HNSW took 25 minutes to build)",
        ("sublinear_100m.json",),
        (
            step(
                "lookalike",
                "bench",
                "sublinear",
                "--n",
                "100000000",
                "--k",
                "1000",
                "--queries",
                "50",
                "--methods",
                "ivf",
                "--no-uniform",
                "--sweep",
                "ivf=64,128,256,512,1024,2048",
                "--json",
                R + "sublinear_100m.json",
            ),
        ),
        long=True,
    ),
    Benchmark(
        "sublinear-plot",
        "recall against speed-up curves drawn from the sublinear JSON files",
        ("sublinear.png", "sublinear_filtered.png"),
        (
            step(
                "python",
                "benchmarks/sublinear_plot.py",
                R + "sublinear.json",
                R + "sublinear_earth.json",
                "--out",
                R + "sublinear.png",
            ),
            step(
                "python",
                "benchmarks/sublinear_plot.py",
                R + "sublinear.json",
                R + "sublinear_earth.json",
                "--filtered",
                "--out",
                R + "sublinear_filtered.png",
            ),
        ),
    ),
    Benchmark(
        "ann-index",
        "a stored IVF index at 10 M tiles through search(method='auto') vs the exact scan",
        ("ann_index.json",),
        (
            step(
                "python",
                "benchmarks/ann_index.py",
                "--n",
                "10000000",
                "--method",
                "ivf",
                "--out",
                OUT + "ann_index",
                "--json",
                R + "ann_index.json",
            ),
        ),
    ),
    Benchmark(
        "memory",
        "resident bytes per tile of an open index (codes, tile table, RSS)",
        ("memory.json", "memory.md"),
        (step("python", "benchmarks/memory.py"),),
    ),
    Benchmark(
        "retrieval",
        "mAP@64 of every candidate code on HiRISE v1, MSL and EuroSAT; leave one HiRISE class out",
        ("retrieval.json", "retrieval.md"),
        (step("python", "benchmarks/retrieval_table.py"),),
        long=True,
    ),
    Benchmark(
        "retrieval-multilevel",
        "the same table with every code trained on the multilevel feature",
        ("retrieval_efficientnet_lite0_multilevel.json", "retrieval_efficientnet_lite0_multilevel.md"),
        (step("python", "benchmarks/retrieval_table.py", "--backbone", "efficientnet_lite0_multilevel"),),
        long=True,
    ),
    Benchmark(
        "feature-layers",
        "mAP@64 of features pooled from several depths of EfficientNet-Lite0",
        ("feature_layers.json", "feature_layers.md"),
        (step("python", "benchmarks/feature_layers.py"),),
        long=True,
    ),
    Benchmark(
        "classification",
        "the shipped classifiers on val against the MLP probes shipped before",
        (
            "classification.json",
            "classification.md",
            "classification_hirise_val.png",
            "classification_hirise_val_baseline.png",
            "classification_msl_val.png",
            "classification_msl_val_baseline.png",
        ),
        (
            step(
                "git",
                "show",
                f"{PREVIOUS_CLASSIFIERS}:data/weights/classifier_hirise.npz",
                stdout=OUT + "classifier_hirise_baseline.npz",
            ),
            step(
                "git",
                "show",
                f"{PREVIOUS_CLASSIFIERS}:data/weights/classifier_msl.npz",
                stdout=OUT + "classifier_msl_baseline.npz",
            ),
            step(
                "python",
                "benchmarks/classification_table.py",
                "--baseline",
                "hirise=" + OUT + "classifier_hirise_baseline.npz",
                "--baseline",
                "msl=" + OUT + "classifier_msl_baseline.npz",
            ),
        ),
    ),
    Benchmark(
        "finetune-variants",
        "HiRISE fine-tune from several seeds, their ensemble, jittered copies",
        ("finetune_variants.json", "finetune_variants.md"),
        (step("python", "benchmarks/finetune_variants.py"),),
        long=True,
    ),
    Benchmark(
        "scale",
        "an index of 10 M tiles grown from the Mars demo index: open time, RSS, exact search "
        "and zone / date / box filters against filtering the whole table",
        ("scale_10m.json",),
        (step("lookalike", "bench", "scale", "--n", "10000000", "--json", R + "scale_10m.json"),),
        long=True,
    ),
    Benchmark(
        "scale-100m",
        "the same at 100 M tiles (about 17 GB of index files in the cache; 10 min of build)",
        ("scale_100m.json",),
        (step("lookalike", "bench", "scale", "--n", "100000000", "--json", R + "scale_100m.json"),),
        long=True,
    ),
    Benchmark(
        "explorer-scale-100m",
        "the explorer serving the 100 M-tile scale index: page, clicks and server memory with one "
        "session in Chromium, then 1 and 8 sessions at once over the Bokeh protocol",
        ("explorer_scale_100m.json", "load_scale_100m.json", "load_scale_100m.md"),
        (
            explorer("{scale_100m}", "explorer_scale_100m.json"),
            step(
                "python",
                "benchmarks/load.py",
                "{scale_100m}",
                "--sessions",
                "1,8",
                "--clicks",
                "5",
                "--churn",
                "0",
                "--workers",
                "",
                "--json",
                R + "load_scale_100m.json",
            ),
        ),
        long=True,
    ),
    Benchmark(
        "sharded-scale",
        "100 M tiles in 4 shards searched on a dask LocalCluster of 2 and 4 workers against the "
        "same shards in-process; then the 2 x 10^9 model (cores, workers, memory, build) from it",
        ("sharded_scale.json", "scaling_model.md"),
        (
            step("python", "benchmarks/sharded_scale.py", "--json", R + "sharded_scale.json"),
            step("python", "benchmarks/scaling_model.py", "--md", R + "scaling_model.md"),
        ),
        long=True,
    ),
    Benchmark(
        "tile-table",
        "the tile table's file format: the 10 M scale index's table memory-mapped as Arrow IPC "
        "against the same table in Parquet (opened whole, or read by row group), k hit rows taken",
        ("tile_table.json",),
        (
            step(
                "python",
                "benchmarks/tile_table.py",
                "--index",
                "{scale_10m}",
                "--json",
                R + "tile_table.json",
            ),
        ),
        long=True,
    ),
    Benchmark(
        "landmark-scale",
        "the ground scale HiRISE v1's crops were cut at: observation footprints, and a real "
        "HiRISE scene's crops against the training crops in the classifier's features",
        ("landmark_scale.json",),
        (step("python", "benchmarks/landmark_scale.py", "--json", R + "landmark_scale.json"),),
    ),
    Benchmark(
        "explorer",
        "page load and click-to-thumbnails in headless Chromium: Mars, its north polar "
        "view, Earth, and both with an empty pixel cache",
        (
            "explorer_mars_global.json",
            "explorer_mars_north.json",
            "explorer_earth_global.json",
            "explorer_mars_global_cold.json",
            "explorer_earth_global_cold.json",
        ),
        (
            explorer(None, "explorer_mars_global.json"),
            explorer(None, "explorer_mars_north.json", "--view", "north"),
            explorer("{earth}", "explorer_earth_global.json"),
            explorer(None, "explorer_mars_global_cold.json", cold=True),
            explorer("{earth}", "explorer_earth_global_cold.json", cold=True),
        ),
    ),
    Benchmark(
        "explorer-demo",
        "the same, on everything `lookalike demo` serves (both bodies, every collection): on the "
        "whole planet, and zoomed into a 0.25 m HiRISE cube; the Mars mosaic alone as reference",
        ("explorer_demo.json", "explorer_demo_hirise_cube.json", "explorer_demo_reference_mars.json"),
        (
            explorer(None, "explorer_demo.json", "--demo"),
            explorer(None, "explorer_demo_hirise_cube.json", "--demo", "--zoom", "hirise_red_25cm"),
            explorer(None, "explorer_demo_reference_mars.json"),
        ),
    ),
    Benchmark(
        "load",
        "1-32 concurrent explorer sessions, sessions opened and closed, concurrent API searches",
        ("load.json", "load.md"),
        (step("python", "benchmarks/load.py", "--clicks", "20", "--json", R + "load.json"),),
    ),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


class Placeholders:
    """``{mars}``, ``{earth}``, ``{data}``, ``{scale_10m}`` and ``{scale_100m}`` (the indexes the
    ``scale`` benchmarks left in the cache), found (and the demo indexes built) on first use."""

    CODE = {
        "mars": "from lookalike.workflows.demo import ensure_demo_index; print(ensure_demo_index('mars'))",
        "earth": "from lookalike.workflows.demo import ensure_demo_index; print(ensure_demo_index('earth'))",
        "data": "from lookalike.config import data_dir; print(data_dir())",
        **{
            name: "import json; from lookalike.config import scale_dir; "
            f"print(scale_dir() / json.load(open('benchmarks/results/{name}.json'))['index'])"
            for name in ("scale_10m", "scale_100m")
        },
    }

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def fill(self, text: str) -> str:
        for key, code in self.CODE.items():
            if "{" + key + "}" in text:
                if key not in self.values:
                    out = subprocess.run(
                        [sys.executable, "-c", code], cwd=REPO, check=True, stdout=subprocess.PIPE, text=True
                    ).stdout
                    self.values[key] = out.strip().splitlines()[-1]
                text = text.replace("{" + key + "}", self.values[key])
        return text


def run_step(s: Step, places: Placeholders) -> int:
    head = {"python": [sys.executable], "lookalike": [sys.executable, "-m", "lookalike"]}
    argv = head.get(s.argv[0], [s.argv[0]]) + [places.fill(a) for a in s.argv[1:]]
    env = dict(os.environ, **{k: str(REPO / places.fill(v)) for k, v in s.env.items()})
    (REPO / OUT).mkdir(parents=True, exist_ok=True)
    if s.fresh:
        shutil.rmtree(REPO / s.fresh, ignore_errors=True)
    if s.stdout:
        with open(REPO / s.stdout, "wb") as fh:
            return subprocess.call(argv, cwd=REPO, env=env, stdout=fh)
    return subprocess.call(argv, cwd=REPO, env=env)


def selection(only: list[str] | None, everything: bool) -> list[Benchmark]:
    if only:
        return [BY_NAME[name] for name in only]
    return [b for b in BENCHMARKS if everything or not b.long]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="benchmarks: " + ", ".join(b.name + (" (long)" if b.long else "") for b in BENCHMARKS),
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(BY_NAME), metavar="NAME", help="run only these (long ones included)"
    )
    parser.add_argument("--all", action="store_true", help="the long benchmarks too")
    parser.add_argument(
        "--list", action="store_true", help="name every benchmark and what it writes, then stop"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands of the selection, then stop"
    )
    args = parser.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name}{' (long)' if b.long else ''}: {b.what}\n    writes {', '.join(b.writes)}")
        return 0
    chosen = selection(args.only, args.all)
    if args.dry_run:
        for b in chosen:
            print(f"# {b.name}{' (long)' if b.long else ''}: {b.what}")
            for s in b.steps:
                print(s.shown())
        return 0
    places, failed = Placeholders(), []
    for b in chosen:
        t0 = time.perf_counter()
        for s in b.steps:
            print(f"== {b.name}: {s.shown()}", flush=True)
            try:
                code = run_step(s, places)
            except subprocess.CalledProcessError as exc:  # a demo index or the data cache not found
                print(f"== {b.name}: {exc}", file=sys.stderr)
                code = exc.returncode or 1
            if code:
                failed.append(b.name)
                break
        outcome = "failed" if code else "done"
        print(f"== {b.name}: {outcome} after {time.perf_counter() - t0:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
