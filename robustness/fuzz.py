"""Fuzz every user input for longer and count what happens, family by family.

    python robustness/fuzz.py [--examples 2000] [--only FAMILY ...] [--seed N]

Runs the properties of tests/test_fuzz_inputs.py (families, strategies and checks in
tests/fuzz_testkit.py) with the ``fuzz-long`` hypothesis profile: ``--examples`` inputs per
cheap family, a share of them for the families whose inputs run the network or train a model
(``Family.long_share``). Every input is run and classified instead of stopping at the first
crash: succeeded (a result), message (refused with one clear line), crashed (an exception
escaping, a traceback, another exit status, a message of several lines, too long or naming a
server folder, a bug caught by a safety net). Crashes are listed with their input. The slowest
input of each family is reported too (a hang shows up there). Writes
``robustness/results/fuzz.{json,md}``. Real data (``$LOOKALIKE_DATA``) is needed only for the
HiRISE footprints of ``index --footprints hirise``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "robustness" / "results"
HANG_S = 120  # an input still running after this long has its threads' stacks printed (a hang?)
sys.path.insert(0, str(REPO / "tests"))


# What the fuzzing found before these results, and the fix of each (a regression test for each is
# in tests/test_fuzz_inputs.py). Written by hand: the runs above are after the fixes.
FOUND = [
    (
        "share links",
        'a drawn box of 3 numbers: the safety net\'s "Search failed: TypeError"; a polygon point of '
        '1 number: numpy\'s "inhomogeneous shape" as the message; NaN in bbox, boxes or polygons: searched as is',
        "boxes are 4 and points 2 finite numbers, checked before anything is applied (`explorer/share_links.py`)",
    ),
    (
        "share links",
        "`regions` nested 100,000 deep: RecursionError out of `apply_url_params`",
        "a malformed link",
    ),
    (
        "share links",
        "a malformed value quoted into a 360-character message; class names with line breaks "
        "quoted into a message of several lines",
        "the whole message is cut to 300 characters; unprintable "
        "characters are escaped (`public_message` too)",
    ),
    (
        "cli: search",
        "`--show -5`: pandas ValueError; `--start`/`--end` not a date: DateParseError",
        "`--show` >= 0; `Filters` times that are not dates are a `LookalikeError` (`indexer/search.py`)",
    ),
    (
        "cli: search, image queries",
        "`--image` on an index without a backbone: KeyError; with a malformed tiling size: ValueError",
        "a message; the image is decoded before the network is built",
    ),
    (
        "cli: index",
        "`--gsd nan`/`inf`: ValueError; `--gsd 1e-6`: billions of tiles (a hang); a raster of "
        "1e-9 m pixels: OverflowError (tile rows beyond int32)",
        "`TileGrid` refuses non-finite sizes and rows "
        "beyond int32; tiles at most 16 times finer than the raster (`MAX_UPSAMPLING`)",
    ),
    (
        "cli: index",
        "`--tile-size 1000000`, `--image-size 1000000`, `--bits 1000000000`: out of memory; "
        "`--image-size 0`: PIL ValueError; `--batch-size 0`: range() error, `-1`: codes of uninitialised memory",
        "tile and image sizes up to 2048, codes up to 65,536 bits, batch size >= 1",
    ),
    (
        "cli: index, landmarks",
        "`--bands x`: ValueError; `--bands 1,1,1,1`: the encoder's shape error; "
        "`--crs nonsense`: pyproj CRSError; `--bounds nan,...`: OverflowError; `--weights` a text file: KeyError "
        "from torch.load",
        "`SourceError`/`ModelError` messages; 1 band (grey) or 3",
    ),
    ("cli: index", "`--min-valid nan` kept every tile", "`--min-valid` within [0, 1]"),
    (
        "cli: eval classify, landmarks",
        "`--json`/`--plot`/`--out` below an existing file: FileExistsError",
        "`main` prints any OSError about a named file as one line, and every message on one line",
    ),
    ("cli: train-classifier", "`--seed -1`: numpy ValueError", "`--seed` within 0..2**32-1 (train-hash too)"),
    ("cli: landmarks", "`--window inf,0,10,10`: OverflowError inside argparse", "refused as a window"),
    (
        "cli: bench search",
        "`--n -5`, `--k 0`, `--repeat 0`: ValueError, AssertionError, TypeError; `--bits 7`: "
        "faiss RuntimeError; `--bits 8`/`16`: ValueError in the scan (6 of 500 inputs of the first long run); "
        "`--n 100000000000`: MemoryError",
        "sizes checked first: counts >= 1, bits a multiple of 64, codes held twice must fit in memory",
    ),
    (
        "index dirs",
        "a manifest whose tiles entry names the codes file (checksum matching): ArrowInvalid",
        "`IndexCorruptError` (`indexer/store.py`)",
    ),
    (
        "GeoJSON regions",
        "collections whose union has NaN/Inf coordinates: GEOSException from `contains_xy`; a "
        "`--region` file nested 100,000 deep: RecursionError",
        "coordinates must be finite; GEOS errors and deep nesting are messages",
    ),
    (
        "labels CSVs",
        "split names or missing paths holding record separators quoted raw: messages of several lines",
        "unprintable values are quoted with escapes",
    ),
    (
        "rasters",
        "truncated or damaged GeoTIFFs (header readable, pixels not): RasterioIOError; a damaged "
        "header: UnicodeDecodeError (1 of 1,000 inputs of the first long run); complex64 pixels: TypeError; NaN "
        "or infinite pixels: numpy warnings printed beside the error line",
        "`SourceError` with GDAL's own message; the stretch uses finite values only",
    ),
    (
        "image queries",
        "a PNG header declaring 100,000 x 100,000 pixels: DecompressionBombError; 10,000 x "
        "10,000: a warning, then a long decode; damaged PNG/TIFF: SyntaxError, ValueError, TypeError from Pillow",
        "images over Pillow's limit (89 Mpx) are refused before decoding; every decoding error is a `SourceError`",
    ),
]


def run_family(name: str, workspace, examples: int, seed: int | None) -> dict:
    from fuzz_testkit import FAMILIES, PROFILE_ENV, Outcome, family_settings
    from hypothesis import given
    from hypothesis import seed as hypothesis_seed

    os.environ[PROFILE_ENV] = "fuzz-long"
    family = FAMILIES[name]
    counts: Counter = Counter()
    crashes: list[dict] = []
    slowest = (0.0, "")

    @family_settings(name, examples)
    @given(case=family.strategy(workspace))
    def prop(case):
        nonlocal slowest
        t0 = time.perf_counter()
        faulthandler.dump_traceback_later(HANG_S)
        try:
            result = family.check(workspace, case)
        finally:
            faulthandler.cancel_dump_traceback_later()
        elapsed = time.perf_counter() - t0
        counts[result.outcome.value] += 1
        if elapsed > slowest[0]:
            slowest = (elapsed, _describe(case))
        if result.outcome is Outcome.CRASHED and len(crashes) < 20:
            crashes.append(dict(input=_describe(case), detail=result.detail[:600]))

    if seed is not None:
        prop = hypothesis_seed(seed)(prop)
    t0 = time.perf_counter()
    prop()
    tried = sum(counts.values())
    return dict(
        family=name,
        tried=tried,
        succeeded=counts["succeeded"],
        message=counts["message"],
        crashed=counts["crashed"],
        seconds=time.perf_counter() - t0,
        slowest_s=slowest[0],
        slowest_input=slowest[1][:300],
        crashes=crashes,
    )


def _describe(case) -> str:
    text = repr(case).replace("\\x00ws:", "<").replace("\\x00", ">")  # workspace tokens as <key>
    return text if len(text) <= 400 else text[:399] + "…"


def markdown(rows: list[dict], meta: dict) -> str:
    total = {k: sum(r[k] for r in rows) for k in ("tried", "succeeded", "message", "crashed")}
    lines = [
        "# Fuzzing every user input",
        "",
        f"Measured with `robustness/fuzz.py --examples {meta['examples']}` (hypothesis "
        f"{meta['hypothesis']}, profile `fuzz-long`, seed {meta['seed']}) on {meta['machine']}, "
        f"{meta['minutes']:.0f} minutes. The same properties run in the test suite with few examples "
        "(`tests/test_fuzz_inputs.py`); families, strategies and checks are in `tests/fuzz_testkit.py`.",
        "",
        "An input **succeeded** when it gave a result, gave a **message** when it was refused with one "
        "clear line (`lookalike: error: ...` and exit status 2; in the explorer a one-line "
        "`state.error` of at most 300 characters naming no server folder), and **crashed** otherwise "
        "(an exception escaping, a traceback, a message of several lines, too long or naming a "
        "folder, a bug caught by the explorer's safety net). Families that run the network or train "
        "try fewer inputs. Valid values of options that scale the work are drawn from small ranges so "
        "that no input starts a long job; invalid ones (zero, negative, NaN, infinite, huge, text) "
        "are drawn freely.",
        "",
        "| family | tried | succeeded | message | crashed | slowest input (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['tried']} | {r['succeeded']} | {r['message']} | "
            f"{r['crashed']} | {r['slowest_s']:.1f} |"
        )
    lines.append(
        f"| **all** | **{total['tried']}** | **{total['succeeded']}** | **{total['message']}** | "
        f"**{total['crashed']}** | |"
    )
    lines += [
        "",
        "## What the fuzzing found, and the fixes",
        "",
        "Found while the properties were written and in the first long runs; before its fix each "
        "crashed or, where the failure says so, gave a wrong result without a word. A regression "
        "test for each is in `tests/test_fuzz_inputs.py`.",
        "",
        "| family | input and failure | fix |",
        "|---|---|---|",
    ]
    lines += [f"| {family} | {failure} | {fix} |" for family, failure, fix in FOUND]
    crashed = [r for r in rows if r["crashes"]]
    if crashed:
        lines += ["", "## Crashes", ""]
        for r in crashed:
            for c in r["crashes"][:5]:
                lines.append(f"- {r['family']}: `{c['input']}`: {c['detail']}")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from fuzz_testkit import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="inputs per cheap family")
    parser.add_argument("--only", nargs="+", choices=list(FAMILIES), metavar="FAMILY")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (reproducible runs)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for fuzz.json and fuzz.md")
    parser.add_argument("--render", action="store_true", help="only rewrite fuzz.md from fuzz.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.render:
        saved = json.loads((out / "fuzz.json").read_text())
        (out / "fuzz.md").write_text(markdown(saved.pop("families"), saved))
        return 0

    import hypothesis
    from fuzz_testkit import Workspace

    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lookalike-fuzz-") as tmp:
        workspace = Workspace(Path(tmp))
        for name in args.only or FAMILIES:
            print(f"== {name}", flush=True)
            try:
                row = run_family(name, workspace, args.examples, args.seed)
            except Exception as exc:  # noqa: BLE001 - a bug of the harness: report it, go on
                print(f"   the harness failed: {type(exc).__name__}: {exc}"[:2000], flush=True)
                row = dict(
                    family=name,
                    tried=0,
                    succeeded=0,
                    message=0,
                    crashed=0,
                    seconds=0.0,
                    slowest_s=0.0,
                    slowest_input="",
                    crashes=[],
                    harness_error=str(exc)[:2000],
                )
            rows.append(row)
            print(
                f"   tried {row['tried']}, succeeded {row['succeeded']}, message {row['message']}, "
                f"crashed {row['crashed']} in {row['seconds']:.0f} s",
                flush=True,
            )
            for crash in row["crashes"][:3]:
                print(f"   crash: {crash['input'][:200]}\n          {crash['detail'][:300]}", flush=True)
    meta = dict(
        examples=args.examples,
        seed=args.seed,
        hypothesis=hypothesis.__version__,
        machine=f"{os.cpu_count()} CPU cores ({platform.machine()})",
        minutes=(time.perf_counter() - t0) / 60.0,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "fuzz.json").write_text(json.dumps(dict(meta, families=rows), indent=2) + "\n")
    (out / "fuzz.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 1 if any(r["crashed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
