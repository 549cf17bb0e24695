"""Fuzzing every user input (hypothesis): any value of a share-link parameter, a CLI option, a
GeoJSON region, a labels CSV, a raster or an image query yields a result or one clear line of
error, never an exception, a traceback or a message of several lines.

The families, their strategies and the checks are in tests/fuzz_testkit.py; ``robustness/fuzz.py``
runs the same properties with many more examples and counts the outcomes. Here they run with the
``fuzz`` hypothesis profile (few examples, a fixed seed); set ``LOOKALIKE_FUZZ_PROFILE=fuzz-long``
to run them longer. Below the properties: one plain test for each failure the fuzzing found,
pinning its fix.
"""

from __future__ import annotations

import json

import pytest
from fuzz_testkit import (
    FAMILIES,
    LINK_KEYS,
    ImageCase,
    Outcome,
    RasterCase,
    Workspace,
    check_cli,
    check_image_api,
    check_link,
    check_raster_cli,
    check_region_api,
    check_region_cli,
    family_settings,
    png_header,
    ws,
)
from hypothesis import given
from lookalike_testkit import assert_user_error, run_main

# real models, subprocesses and whole builds: `make test` runs these, `make test-fast` does not
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_workspace(tmp_path_factory) -> Workspace:
    """Files the drawn inputs name: built once for this module (a few seconds)."""
    return Workspace(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_no_input_crashes(fuzz_workspace, family):
    spec = FAMILIES[family]

    @family_settings(family)
    @given(case=spec.strategy(fuzz_workspace))
    def prop(case):
        result = spec.check(fuzz_workspace, case)
        assert not result.crashed, result.detail

    prop()


def assert_message(result, *needles: str) -> None:
    assert result.outcome is Outcome.MESSAGE, result
    for needle in needles:
        assert needle.lower() in result.detail.lower(), result.detail


# ------------------------------------------------------------------ share links
def test_every_share_link_parameter_is_fuzzed():
    from lookalike.explorer.sessions import URL_KEYS

    assert set(LINK_KEYS) == set(URL_KEYS)


@pytest.mark.parametrize(
    "params, needle",
    [
        (
            {"tile": "t00001", "regions": '{"boxes": [[1, 2, 3]]}'},
            "box needs 4",
        ),  # was: Search failed: TypeError
        (
            {"tile": "t00001", "regions": '{"polygons": [[[1, 2], [3, 4], [5]]]}'},
            "point needs 2",
        ),  # numpy error text
        ({"tile": "t00001", "regions": '{"boxes": [[0, 0, 1e308, 1e400]]}'}, "finite"),
        ({"tile": "t00001", "bbox": "nan,1,2,3"}, "finite"),  # was: a search with a NaN bbox
        ({"tile": "t00001", "regions": "[" * 100_000}, "malformed"),  # was: RecursionError escaping
        ({"conf": "x" * 1500}, "malformed"),  # was: 360 characters
        ({"classes": "crater\n\u2028<b>"}, "does not have"),  # was: a message of three lines
    ],
)
def test_link_values_that_crashed_are_one_clear_line(fuzz_workspace, params, needle):
    result = check_link(fuzz_workspace.link_index(), "mars_small", params)
    assert_message(result, needle)


def test_link_boxes_at_the_limits_of_floats_search(fuzz_workspace):
    params = {"tile": "t00001", "regions": json.dumps({"boxes": [[-1e308, -1e308, 1e308, 1e308]]})}
    assert check_link(fuzz_workspace.link_index(), "mars_small", params).outcome is not Outcome.CRASHED


# ------------------------------------------------------------------ CLI options
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["search", ws("idx"), "--tile", "t00001", "--show", "-5"], "--show"),  # pandas ValueError
        (["search", ws("idx"), "--tile", "t00001", "--start", "xx"], "cannot parse time"),  # DateParseError
        (["search", ws("idx"), "--tile", "t00001", "--end", "99999-01-01"], "cannot parse time"),
        (["search", ws("idx"), "--image", ws("chip")], "no backbone"),  # KeyError 'backbone'
        (["search", ws("corrupt-backbone"), "--image", ws("chip")], "malformed"),  # int('huge')
        (["info", ws("corrupt-tilesascodes")], "not a readable table"),  # ArrowInvalid
        (["index", ws("scene"), "--out", "o", "--gsd", "nan"], "positive"),  # ValueError from the grid
        (["index", ws("scene"), "--out", "o", "--gsd", "1e-6"], "finer"),  # billions of tiles: a hang
        (["index", ws("scene"), "--out", "o", "--tile-size", "1000000"], "tile size"),  # memory
        (["index", ws("scene"), "--out", "o", "--batch-size", "0"], "batch size"),  # range() step 0
        (["index", ws("scene"), "--out", "o", "--bands", "x"], "bands"),  # int('x')
        (["index", ws("scene"), "--out", "o", "--bands", "1,1,1,1"], "3 bands"),  # encoder shape error
        (["index", ws("scene"), "--out", "o", "--crs", "nonsense"], "crs"),  # pyproj CRSError
        (["index", ws("scene"), "--out", "o", "--bounds", "nan,0,1,1"], "bounds"),  # OverflowError
        (["index", ws("scene"), "--out", "o", "--weights", ws("notes")], "state dict"),  # KeyError from torch
        (["index", ws("scene"), "--out", "o", "--bits", "1000000000"], "up to"),  # memory
        (
            ["index", "--images", ws("chips"), "--labels", ws("labels"), "--out", "o", "--image-size", "0"],
            "image size",
        ),  # PIL ValueError
        (
            ["index", ws("scene"), "--out", "o", "--min-valid", "nan"],
            "--min-valid",
        ),  # silently kept every tile
        (
            [
                "eval",
                "classify",
                "--model",
                "hirise",
                "--images",
                ws("chips"),
                "--labels",
                ws("labels"),
                "--json",
                ws("under:notes"),
            ],
            "exists",
        ),  # FileExistsError from mkdir
        (
            [
                "eval",
                "classify",
                "--model",
                "hirise",
                "--images",
                ws("chips"),
                "--labels",
                ws("labels"),
                "--plot",
                ws("under:notes"),
            ],
            "exists",
        ),  # FileExistsError from mkdir
        (
            [
                "train-classifier",
                "--images",
                ws("chips"),
                "--labels",
                ws("labels"),
                "--out",
                "c.npz",
                "--seed",
                "-1",
            ],
            "--seed",
        ),  # numpy: expected non-negative integer
        (["landmarks", ws("scene"), "--out", "l.parquet", "--crs", "nonsense"], "crs"),
        (
            ["landmarks", ws("scene"), "--out", "l.parquet", "--window", "inf,0,10,10"],
            "window",
        ),  # OverflowError
        (["bench", "search", "--n", "-5"], "at least 1"),  # negative dimensions
        (["bench", "search", "--n", "100", "--bits", "7"], "multiple of 64"),  # faiss RuntimeError
        (["bench", "search", "--n", "100", "--bits", "16"], "multiple of 64"),  # ValueError from the scan
        (["bench", "search", "--n", "100", "--k", "0"], "at least 1"),  # AssertionError
        (["bench", "search", "--n", "100", "--repeat", "0"], "at least 1"),  # TypeError
        (["bench", "search", "--n", "100000000000", "--bits", "512"], "GiB"),  # MemoryError
    ],
)
def test_cli_values_that_crashed_are_one_line(fuzz_workspace, argv, needle):
    result = check_cli(fuzz_workspace, argv)
    assert_message(result, needle)


def test_one_line_even_when_a_message_holds_line_breaks(fuzz_workspace, tmp_path):
    labels = tmp_path / "odd\nname.csv"  # the message quotes the path
    labels.write_text("path,label\nc00.png,crater\n")
    code, _, stderr = run_main(
        ["eval", "retrieval", "--images", fuzz_workspace.path("chips"), "--labels", labels]
    )
    assert_user_error(code, stderr, "odd name.csv", "no split column")


# ------------------------------------------------------------------ GeoJSON regions
# found by the fuzzing: GEOS raised from contains_xy (orientationIndex encountered NaN/Inf)
GEOS_BREAKER = (
    '{"type": "GeometryCollection", "geometries": [{"type": "MultiPoint", "coordinates": [[NaN, '
    "-23.78756144296814], [180, -1], [7722, 300], [2.476631232061171e+16, -4.186704149752408e-136], "
    "[-6.540860502495725e+16, 1.9201436892105724e+16], [-2.564409052879914e-232, 346], [NaN, "
    '-23.78756144296814]]}, {"type": "MultiPolygon", "coordinates": [[[[1, 4.832874809218413e+16], '
    "[1.2216428534353792e+16, 1], [145877729219, -70349], [-2.408468823000852e-146, 0.5], [835132, "
    "5.100313731791669e-77], [-2.2250738585e-313, -5.882577688773382e+16], [-1.7976931348623157e+308,"
    " -7.621465958583726e-226], [1, 4.832874809218413e+16]]], [[[1e+308, -1], [9007199254740992.0, "
    "-1014174], [1e+308, 5.960464477539063e-08], [-1.7976931348623157e+308, 839], [-1, -1], [1189, "
    "-183.0], [-72.00994981406052, 0], [31, -2.7037929347860036e+16], [1e+308, -1]], [[0, "
    "31.236697448922143], [180, 4861987234762], [12.83475224216778, -80.0], [0, "
    "31.236697448922143]]], [[[Infinity, -1e+308], [-117.90405690150097, 2.692589232285174e+300], "
    "[67888, 180], [-11.199053667028608, 859], [Infinity, -1e+308]], [[124.5124519441477, -13940110],"
    " [90, 6.273491844752385e+278], [-1e+308, -1151], [124.5124519441477, -13940110]]]]}]}"
)


def test_region_that_broke_geos_is_a_message(fuzz_workspace):
    assert_message(check_region_api(fuzz_workspace.tiles(), json.loads(GEOS_BREAKER)), "finite")


def test_region_with_nan_coordinates(fuzz_workspace):
    region = {"type": "Polygon", "coordinates": [[[0, 0], [10, float("nan")], [10, 10], [0, 0]]]}
    assert_message(check_region_api(fuzz_workspace.tiles(), region), "finite")


def test_region_file_nested_too_deep(fuzz_workspace):
    result = check_region_cli(fuzz_workspace, b"[" * 100_000 + b"]" * 100_000, ["--tile", "t00001"])
    assert_message(result, "not a GeoJSON file")  # was: RecursionError


# ------------------------------------------------------------------ rasters
@pytest.mark.parametrize(
    "case, needle",
    [
        (RasterCase("tif", width=200, height=200, cut=0.5), "damaged or truncated"),  # RasterioIOError
        (
            RasterCase("tif", width=200, height=200, compress="deflate", flips=50, seed=3),
            "cannot read raster",
        ),
        (RasterCase("tif", dtype="complex64"), "complex64"),  # TypeError from np.percentile
        (RasterCase("tif", width=64, height=2, count=4, flips=5, seed=70), "damaged"),  # UnicodeDecodeError
        (RasterCase("tif", pixel=1e-9, seed=51), "too small to number"),  # OverflowError: int32 rows
    ],
)
def test_rasters_that_crashed(fuzz_workspace, case, needle):
    assert_message(check_raster_cli(fuzz_workspace, case, []), needle)


# ------------------------------------------------------------------ image queries
@pytest.mark.parametrize(
    "case, needle",
    [
        (ImageCase("header", width=100_000, height=100_000), "more than"),  # DecompressionBombError
        (ImageCase("header", width=10_000, height=10_000), "more than"),  # a warning, then a long decode
        # damaged files on which Pillow raised other things than OSError
        (ImageCase("PNG", mode="RGB", width=64, height=64, flips=3, seed=7), "SyntaxError"),
        (ImageCase("TIFF", mode="RGB", width=3, height=5, flips=3, seed=163), "ValueError"),
        (ImageCase("TIFF", mode="RGB", width=3, height=5, flips=3, seed=182), "TypeError"),
        (ImageCase("TIFF", mode="RGB", width=3, height=5, flips=3, seed=54), "more than"),  # a damaged size
    ],
)
def test_image_queries_that_crashed(fuzz_workspace, case, needle):
    assert_message(check_image_api(fuzz_workspace, fuzz_workspace.raster_index(), case), needle)


def test_decompression_bomb_header_on_the_command_line(fuzz_workspace, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))
    code, _, stderr = run_main(["search", fuzz_workspace.path("ridx"), "--image", bomb])
    assert_user_error(code, stderr, "refusing to decode")


@pytest.mark.parametrize("mode", ["L", "CMYK", "I;16", "1", "P"])
def test_odd_image_modes_are_queries(fuzz_workspace, mode):
    case = ImageCase("TIFF" if mode in ("CMYK", "I;16") else "PNG", mode=mode, width=1, height=1)
    result = check_image_api(fuzz_workspace, fuzz_workspace.raster_index(), case)
    assert result.outcome is Outcome.SUCCEEDED, result
