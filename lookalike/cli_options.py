"""The pieces of the ``lookalike`` command line that several commands share: argument types
(text -> value, or argparse's one-line error), the parser class, and the option groups.

Pure parsing with light imports only (zone labels load ``indexer.tiling`` when one is parsed), so
that ``lookalike --help`` does not load torch."""

from __future__ import annotations

import argparse
import math
import re

from lookalike.errors import OptionError
from lookalike.indexer import defaults
from lookalike.indexer.bbox import BBox, parse_bbox

VIEW_CHOICES = tuple(defaults.ORIENTATIONS)


# ------------------------------------------------------------------ argument types
def floats(text: str, n: int, what: str) -> tuple[float, ...]:
    """``n`` comma-separated numbers."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} needs {n} comma-separated numbers, got {text!r}")
    return values


def bbox(text: str) -> BBox:
    """west,south,east,north in degrees (``indexer.bbox.parse_bbox``)."""
    try:
        box = parse_bbox(text)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if box is None:
        raise argparse.ArgumentTypeError(
            f"bbox (west,south,east,north) needs 4 comma-separated numbers, got {text!r}"
        )
    return box


def lonlat(text: str) -> tuple[float, ...]:
    return floats(text, 2, "lon,lat")


def window(text: str) -> tuple[int, int, int, int]:
    """x0,y0,x1,y1 in whole pixels."""
    values = floats(text, 4, "window (x0,y0,x1,y1 in pixels)")
    if not all(math.isfinite(v) and v == int(v) for v in values):
        raise argparse.ArgumentTypeError(f"window needs whole pixel numbers, got {text!r}")
    return tuple(int(v) for v in values)


def words(text: str) -> list[str]:
    """Comma-separated words, blanks dropped."""
    return [t.strip() for t in text.split(",") if t.strip()]


def bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in words(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands need comma-separated band numbers, got {text!r}") from None


def count(text: str) -> int:
    """A whole number >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32 - 1, got {text}")
    return value


def unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def zones(text: str) -> list[str]:
    """Zone labels (33N, UPSS), each checked and written the one way."""
    from lookalike.indexer.tiling import Zone

    try:
        return [Zone.parse(z).label for z in words(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def folder_pairs(values: list[str] | None) -> list[tuple[str, str]]:
    """``ROOT=CSV`` arguments as (root, csv) pairs."""
    pairs = []
    for value in values or []:
        root, sep, labels = value.partition("=")
        if not sep or not root or not labels:
            raise OptionError(f"--labelled and --unlabelled take ROOT=LABELS_CSV, got {value!r}")
        pairs.append((root, labels))
    return pairs


def ann_params(items: list[str] | None) -> dict:
    """``NAME=INT`` arguments as a dict."""
    params = {}
    for item in items or []:
        name, _, value = item.partition("=")
        try:
            params[name.strip()] = int(value)
        except ValueError:
            raise OptionError(f"--ann-param takes NAME=INT (e.g. m=32), got {item!r}") from None
    return params


# ------------------------------------------------------------------ the parser
class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too; ``-45,10`` is a value (a western longitude), not an option."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str):
        self.exit(2, f"lookalike: error: {message} (see: {self.prog} --help)\n")


COORDINATE_OPTIONS = ("--lonlat", "--bbox", "--bounds")


def glue_coordinates(argv: list[str]) -> list[str]:
    """``--lonlat -60,-20`` -> ``--lonlat=-60,-20``: argparse reads ``-60,-20`` as an option."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in COORDINATE_OPTIONS:
            nxt = next(it, None)
            out.append(arg if nxt is None else f"{arg}={nxt}")
        else:
            out.append(arg)
    return out


# ------------------------------------------------------------------ option groups
# Options several commands share, added by one function each; a command passes the help text
# that is its own.
ADDRESS_HELP = (
    "address to listen on (default: localhost, this machine only; 0.0.0.0 for every "
    "interface, to share the explorer with a team)"
)
RASTERS_HELP = "GeoTIFF/COG paths or registered dataset names (mars_8k, earth_8k)"
BITS_HELP = "code length of the PCA-ITQ baseline (implies --hash itq)"
TIME_HELP = "acquisition time (ISO 8601) when the raster's metadata has none"


def add_georeference(p: argparse.ArgumentParser, crs_help: str, time: bool = True) -> None:
    """Source geometry for rasters that lack it: --crs, --bounds (and --time)."""
    p.add_argument("--crs", help=crs_help)
    p.add_argument("--bounds", type=bbox, help="west,south,east,north for rasters without a transform")
    if time:
        p.add_argument("--time", help=TIME_HELP)


def add_products(p: argparse.ArgumentParser) -> None:
    """What a product's files do not say alone: --stack, --body, --time-from-name, --times."""
    p.add_argument(
        "--stack",
        type=words,
        action="append",
        metavar="FILE,FILE[,...]",
        help="separate band files indexed as ONE source, bands in the order given (e.g. "
        "Sentinel-2 s2_B04.jp2,s2_B03.jp2,s2_B02.jp2 for true colour); repeat for more",
    )
    p.add_argument(
        "--body", help="the body the rasters lie on (default: from their CRS: earth, mars, moon, ...)"
    )
    p.add_argument(
        "--time-from-name",
        metavar="REGEX",
        help="acquisition time from each file name: the regex's group 'time' (or its first "
        "group), e.g. '_(\\d{8})\\.tif$' (NAIP names and HiRISE ids need no option)",
    )
    p.add_argument(
        "--times", metavar="CSV", help="acquisition times from a CSV of source,time (source: the file name)"
    )


def add_tiling(
    p: argparse.ArgumentParser, zones_help: str | None = None, bbox_help: str | None = None
) -> None:
    """How rasters are cut into tiles: --tile-size, --stride, --gsd, --zones, --bbox."""
    p.add_argument("--tile-size", type=int, default=defaults.TILE_SIZE)
    p.add_argument("--stride", type=int, default=defaults.TILE_STRIDE)
    p.add_argument("--gsd", type=float, help="metres per pixel of the tiles (default: native)")
    p.add_argument("--zones", type=zones, help=zones_help)
    p.add_argument("--bbox", type=bbox, help=bbox_help)


def add_runtime(p: argparse.ArgumentParser, runtime_help: str | None = None) -> None:
    """The encoder's runtime and batch: --runtime, --batch-size."""
    p.add_argument(
        "--runtime", default=defaults.DEFAULT_RUNTIME, choices=list(defaults.RUNTIMES), help=runtime_help
    )
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE)


def add_image_size(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--image-size", type=int, default=defaults.IMAGE_SIZE, help=help)


def add_views(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--views", type=int, choices=VIEW_CHOICES, help=help)


def add_labelled_images(p: argparse.ArgumentParser, labels_help: str | None = None) -> None:
    """A labelled image folder: --images ROOT, --labels CSV, both required."""
    p.add_argument("--images", required=True)
    p.add_argument("--labels", required=True, help=labels_help)


def add_json(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--json", help=help)


def add_server(p: argparse.ArgumentParser, show_help: str | None = None) -> None:
    """Where the explorer listens: --port, --address, --show."""
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="localhost", help=ADDRESS_HELP)
    p.add_argument("--show", action="store_true", help=show_help)


def add_filters(s: argparse.ArgumentParser) -> None:
    """What a search keeps before ranking (``indexer.search.Filters``)."""
    s.add_argument("--zones", type=zones, help="restrict to zones, e.g. 33N,34N")
    s.add_argument("--sources", help="restrict to sources")
    s.add_argument("--labels", help="restrict to labels (image-folder indexes)")
    s.add_argument("--start", help="earliest acquisition time")
    s.add_argument("--end", help="latest acquisition time")
    s.add_argument("--bbox", type=bbox, help="west,south,east,north")
    s.add_argument("--region", help="GeoJSON file with a (multi)polygon in lon/lat")
    s.add_argument("--classes", help="only scenes with landmarks of these classes, e.g. crater,dark_dune")
    s.add_argument(
        "--min-confidence",
        type=unit_interval,
        default=0.0,
        help="landmarks count from this posterior up (with --classes)",
    )
    s.add_argument(
        "--min-landmarks",
        type=int,
        default=1,
        help="at least this many landmarks of a class per scene (with --classes)",
    )


def filters_from(args: argparse.Namespace):
    """The ``indexer.search.Filters`` that the options of ``add_filters`` ask for."""
    from lookalike.indexer.search import Filters
    from lookalike.workflows.searching import read_region

    time_range = (args.start, args.end) if (args.start or args.end) else None
    return Filters(
        zones=args.zones or [],
        sources=words(args.sources) if args.sources else [],
        time_range=time_range,
        bbox=args.bbox,
        region=read_region(args.region) if args.region else None,
        labels=words(args.labels) if args.labels else [],
        landmark_classes=words(args.classes) if args.classes else [],
        min_confidence=args.min_confidence,
        min_landmarks=args.min_landmarks,
    )


def add_training(p: argparse.ArgumentParser, val_help: str) -> None:
    """What every training command takes: --val-split, --seed, --out."""
    p.add_argument("--val-split", help=val_help)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", required=True)
