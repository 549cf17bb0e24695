"""The ``lookalike`` command: user mistakes are one line on stderr and exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from lookalike_testkit import assert_user_error, make_index, run_cli, run_main
from rasterio.transform import from_origin


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "idx"
    make_index(path, n=200, bits=64, seed=21)
    return path


@pytest.fixture
def corrupt_index(tmp_path):
    path = tmp_path / "bad"
    idx = make_index(path, n=50, bits=64, seed=3)
    codes = path / idx.manifest["files"]["codes"]["name"]
    data = bytearray(codes.read_bytes())
    data[-1] ^= 0x10
    codes.write_bytes(bytes(data))
    return path


@pytest.fixture
def nocrs_tif(tmp_path):
    path = tmp_path / "nocrs.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=1,
        dtype="uint8",
        transform=from_origin(500000, 5000000, 10, 10),
    ) as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (1, 64, 64), dtype=np.uint8))
    return path


# ------------------------------------------------------------------ in a real process
def test_missing_index_dir_subprocess(tmp_path):
    proc = run_cli(["search", tmp_path / "no-such-index", "--tile", "x"])
    assert_user_error(proc.returncode, proc.stderr, "no-such-index")
    assert proc.stdout == ""


def test_wrong_bbox_format_subprocess(index_dir):
    proc = run_cli(["search", index_dir, "--tile", "t00000", "--bbox", "1,2,3"])
    assert_user_error(proc.returncode, proc.stderr, "bbox", "1,2,3")


# ------------------------------------------------------------------ in-process
def test_missing_index_dir(tmp_path):
    for argv in (["info", tmp_path / "nope"], ["search", tmp_path / "nope", "--lonlat", "0,0"]):
        assert_user_error(*run_main(argv)[::2], "nope")


def test_corrupt_index(corrupt_index):
    code, out, err = run_main(["info", corrupt_index])
    assert_user_error(code, err, "checksum")
    code, out, err = run_main(["search", corrupt_index, "--tile", "t00001"])
    assert_user_error(code, err, "checksum")


def test_corrupt_manifest(tmp_path):
    path = tmp_path / "m"
    make_index(path, n=10)
    (path / "manifest.json").write_text("{ not json")
    assert_user_error(*run_main(["search", path, "--tile", "t00001"])[::2], "JSON")


@pytest.mark.parametrize(
    "option, value",
    [
        ("--bbox", "1,2,3"),
        ("--bbox", "a,b,c,d"),
        ("--bbox", "1,2,3,4,5"),
        ("--lonlat", "10"),
        ("--lonlat", "x,y"),
        ("--k", "many"),
        ("--zones", "99Q"),
        ("--zones", "33N,0S"),
    ],
)
def test_bad_option_values(index_dir, option, value):
    code, out, err = run_main(["search", index_dir, "--tile", "t00000", option, value])
    assert_user_error(code, err, option)


def test_usage_errors_are_one_line(index_dir):
    assert_user_error(*run_main([])[::2])
    assert_user_error(*run_main(["search"])[::2])
    assert_user_error(*run_main(["search", index_dir, "--no-such-option"])[::2], "no-such-option")
    assert_user_error(*run_main(["frobnicate"])[::2])
    code, out, err = run_main(["search", "--help"])
    assert code == 0 and "--lonlat" in out


def test_negative_coordinates_are_values_not_options(index_dir):
    """``--bbox -10,...`` and ``--lonlat -45,10`` parse as numbers (western longitudes)."""
    code, out, err = run_main(
        [
            "search",
            index_dir,
            "--tile",
            "t00000",
            "--bbox",
            "-180,-60,180,60",
            "--json",
            index_dir.parent / "neg.json",
        ]
    )
    assert code == 0, err
    code, out, err = run_main(["search", index_dir, "--lonlat", "-45.5,-10", "--k", "3"])
    # parsed; either a tile covers the point or the one-line "no indexed tile covers" error
    assert code in (0, 2), err
    if code == 2:
        assert_user_error(code, err, "-45.5")


@pytest.mark.parametrize("k", ["0", "-1", "10001"])
def test_k_out_of_range(index_dir, k):
    assert_user_error(*run_main(["search", index_dir, "--tile", "t00000", "--k", k])[::2], "k")


def test_two_query_kinds(index_dir):
    assert_user_error(
        *run_main(["search", index_dir, "--tile", "t00000", "--lonlat", "0,0"])[::2], "exactly one"
    )


def test_unknown_tile(index_dir):
    assert_user_error(*run_main(["search", index_dir, "--tile", "nope"])[::2], "nope")


@pytest.mark.parametrize("content", ["{ broken", '{"type": "Spaceship"}', '{"foo": 1}'])
def test_bad_region_file(index_dir, tmp_path, content):
    region = tmp_path / "region.geojson"
    region.write_text(content)
    assert_user_error(*run_main(["search", index_dir, "--tile", "t00000", "--region", region])[::2], "region")


def test_missing_region_file(index_dir, tmp_path):
    assert_user_error(
        *run_main(["search", index_dir, "--tile", "t00000", "--region", tmp_path / "absent.geojson"])[::2],
        "absent.geojson",
    )


def test_empty_labels_csv(tmp_path):
    (tmp_path / "imgs").mkdir()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, out, err = run_main(
        ["eval", "retrieval", "--images", tmp_path / "imgs", "--labels", empty, "--query-split", "val"],
        LOOKALIKE_CACHE=tmp_path / "cache",
    )
    assert_user_error(code, err, "empty.csv", "empty")
    code, out, err = run_main(
        ["index", "--images", tmp_path / "imgs", "--labels", empty, "--out", tmp_path / "o"]
    )
    assert_user_error(code, err, "empty.csv", "empty")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_raster_without_crs(nocrs_tif, tmp_path):
    code, out, err = run_main(["index", nocrs_tif, "--out", tmp_path / "o"])
    assert_user_error(code, err, "nocrs.tif", "--crs")


def test_bad_time(nocrs_tif, tmp_path):
    code, out, err = run_main(
        ["index", nocrs_tif, "--crs", "EPSG:32633", "--time", "yesterday-ish", "--out", tmp_path / "o"]
    )
    assert_user_error(code, err, "time")


def test_index_needs_a_source(tmp_path):
    assert_user_error(*run_main(["index", "--out", tmp_path / "o"])[::2], "raster")


def test_info_and_search_output(index_dir, tmp_path):
    code, out, err = run_main(["info", index_dir, "--json", tmp_path / "info.json"])
    assert code == 0, err
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["count"] == 200 and info["bits"] == 64 and info["verified"] is True
    assert json.loads(out) == info
    code, out, err = run_main(
        [
            "search",
            index_dir,
            "--tile",
            "t00007",
            "--k",
            "15",
            "--sources",
            "alpha,beta",
            "--json",
            tmp_path / "hits.json",
            "--geojson",
            tmp_path / "hits.geojson",
        ]
    )
    assert code == 0, err
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert hits["n_hits"] == len(hits["hits"]) == 15
    assert {h["source"] for h in hits["hits"]} <= {"alpha", "beta"}
    d = [h["distance"] for h in hits["hits"]]
    assert d == sorted(d)
    collection = json.loads((tmp_path / "hits.geojson").read_text())
    assert [f["properties"]["tile_id"] for f in collection["features"]] == [
        h["tile_id"] for h in hits["hits"]
    ]
    assert collection["lookalike"]["filters"]["sources"] == ["alpha", "beta"]


def test_bench_search(tmp_path):
    """`lookalike bench search --n 20000 --bits 512 --k 100`: the exact scan agrees with faiss."""
    pytest.importorskip("faiss")
    code, out, err = run_main(
        [
            "bench",
            "search",
            "--n",
            "20000",
            "--bits",
            "512",
            "--k",
            "100",
            "--repeat",
            "2",
            "--json",
            tmp_path / "b.json",
        ]
    )
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["recall"] == 1.0
    assert result["n"] == 20000 and result["bits"] == 512 and result["k"] == 100
    assert result["ours_ms"] > 0 and result["faiss_ms"] > 0


def test_demo_serves_both_planets_by_default():
    from lookalike.cli import build_parser

    assert build_parser().parse_args(["demo"]).bodies == ["mars", "earth"]
    assert build_parser().parse_args(["demo", "--bodies", "mars"]).bodies == ["mars"]
