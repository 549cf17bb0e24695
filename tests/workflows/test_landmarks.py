"""Dynamic landmarking end to end (lookalike.workflows.landmarks): landmarks of a synthetic Mars
scene with planted craters, a dune field and black fill, written as a GeoTIFF: crops, lon/lat,
classification, the CLI, and the real mosaic.

The scene is tests/landmark_scene.py; its ``scene`` and ``regions`` fixtures are in
tests/conftest.py. The detector on its own is tested in tests/models/test_saliency.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
from landmark_scene import CRATERS, DUNES, SIZE, crater_box, is_edge_box
from lookalike_testkit import assert_user_error, check_rfc7946, environ, run_main, strict_json
from rasterio.crs import CRS
from rasterio.transform import from_origin

from lookalike.errors import LookalikeError, SourceError
from lookalike.models.saliency import box_iou
from lookalike.workflows.landmarks import COLUMNS, find_landmarks, with_border

# real models, subprocesses and whole builds: `make test` runs these, `make test-fast` does not
pytestmark = pytest.mark.slow

# equirectangular Mars (IAU_2015:49910) at 25 m/px, about 136.65 E, 4.55 S
CRS_CODE, GSD, ORIGIN = "IAU_2015:49910", 25.0, (8.1e6, -2.7e5)
BORDER = 30


def write_scene(path, data, crs=CRS_CODE, nodata=0, **tags):
    data = np.asarray(data)
    data = data[None] if data.ndim == 2 else data
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        transform=from_origin(*ORIGIN, GSD, GSD),
    )
    if crs:
        profile["crs"] = CRS.from_wkt(pyproj.CRS(crs).to_wkt())
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory, scene):
    path = tmp_path_factory.mktemp("landmarks") / "esp_synthetic.tif"
    return write_scene(path, scene, TIFFTAG_DATETIME="2012:08:06 05:17:57")


@pytest.fixture(scope="module")
def crop_encoder():
    """The encoder the shipped classifier needs (its backbone, tail and views), built once."""
    import torch

    from lookalike.indexer.encoding import classifier_encoder
    from lookalike.models.classifier import load_classifier

    torch.set_num_threads(2)  # the backbone on the crops is this module's one heavy step
    return classifier_encoder(load_classifier("hirise"), batch_size=16)


def test_an_encoder_of_other_features_is_refused(scene_tif, backbone):
    from lookalike.errors import LookalikeError
    from lookalike.indexer.encoding import Encoder

    with pytest.raises(LookalikeError, match="the classifier needs features"):
        find_landmarks(
            scene_tif, "hirise", encoder=Encoder(backbone, image_size=224, views=4), progress=False
        )


@pytest.fixture(scope="module")
def landmarks(scene_tif, crop_encoder) -> pd.DataFrame:
    return find_landmarks(scene_tif, "hirise", threshold=0.0, encoder=crop_encoder, progress=False)


# ------------------------------------------------------------------ landmarks of a raster
def test_with_border_clips_to_the_raster():
    boxes = np.array([[10, 20, 100, 120, 5.0], [1450, 1480, 1500, 1500, 4.0]])
    out = with_border(boxes, BORDER, (1500, 1500))
    assert out.tolist() == [[0, 0, 130, 150], [1420, 1450, 1500, 1500]]
    assert with_border(boxes[:1], BORDER, (1500, 1500), offset=(100, 200)).tolist() == [[80, 190, 230, 350]]


def test_columns_and_probabilities(landmarks):
    classes = ["bright_dune", "crater", "dark_dune", "edge", "other", "streak"]
    assert list(landmarks.columns) == list(COLUMNS) + [f"p_{c}" for c in classes]
    p = landmarks[[f"p_{c}" for c in classes]].to_numpy()
    assert np.allclose(p.sum(1), 1.0, atol=1e-6)
    assert (landmarks["label"].to_numpy() == np.asarray(classes)[p.argmax(1)]).all()
    assert np.allclose(landmarks["posterior"], p.max(1))
    assert landmarks["landmark_id"].is_unique
    first = landmarks.iloc[0]
    assert first["landmark_id"] == f"esp_synthetic:{first.x0}:{first.y0}:{first.x1}:{first.y1}"
    assert (landmarks["scene"] == "esp_synthetic").all()
    assert (landmarks["time"] == pd.Timestamp("2012-08-06T05:17:57Z")).all()
    assert np.all(np.diff(landmarks["posterior"]) <= 0)


def test_crops_are_detected_regions_plus_border(landmarks, scene, regions):
    """The raster path (nodata mask) finds what the array path (black fill) finds, 30 px wider."""
    expected = with_border(regions, BORDER, scene.shape)
    got = landmarks[["x0", "y0", "x1", "y1"]].to_numpy()
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, expected.tolist()))
    assert (got[:, :2] >= 0).all() and (got[:, 2] <= SIZE).all() and (got[:, 3] <= SIZE).all()
    assert (got[:, 1] == 0).any()  # an edge segment at the top: its border was clipped
    inner = (expected[:, 0] > 0) & (expected[:, 1] > 0) & (expected[:, 2] < SIZE) & (expected[:, 3] < SIZE)
    ordered = with_border(regions[inner], 0, scene.shape)
    assert np.array_equal(
        expected[inner] - ordered, np.tile([-BORDER, -BORDER, BORDER, BORDER], (inner.sum(), 1))
    )


def test_lonlat_round_trip(landmarks, scene_tif):
    """Box corners and centres, taken back through pyproj and the transform, land on the pixels."""
    with rasterio.open(scene_tif) as src:
        inverse = ~src.transform
    crs = pyproj.CRS(CRS_CODE)
    back = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    corners = (("lon_min", "lat_max", "x0", "y0"), ("lon_max", "lat_min", "x1", "y1"))
    for corner_x, corner_y, px, py in corners:
        x, y = back.transform(landmarks[corner_x].to_numpy(), landmarks[corner_y].to_numpy())
        col, row = inverse * (np.asarray(x), np.asarray(y))
        assert np.allclose(col, landmarks[px], atol=1e-3) and np.allclose(row, landmarks[py], atol=1e-3)
    x, y = back.transform(landmarks["lon"].to_numpy(), landmarks["lat"].to_numpy())
    col, row = inverse * (np.asarray(x), np.asarray(y))
    assert np.allclose(col, (landmarks.x0 + landmarks.x1) / 2, atol=1e-3)
    assert np.allclose(row, (landmarks.y0 + landmarks.y1) / 2, atol=1e-3)
    assert landmarks["lon"].between(136.0, 138.0).all() and landmarks["lat"].between(-6.0, -4.0).all()


def test_planted_features_get_their_classes(landmarks):
    """Crops preprocessed as the classifier's training images are: craters and edges are known."""
    rows = landmarks[["x0", "y0", "x1", "y1"]].to_numpy().astype(float)
    crater_labels = [
        landmarks.label.iloc[int(box_iou(crater_box(*c)[None], rows)[0].argmax())] for c in CRATERS
    ]
    assert crater_labels.count("crater") >= 3, crater_labels
    edge_labels = [
        lab
        for b, lab in zip(rows, landmarks.label)
        if is_edge_box(b) and box_iou(b[None], np.array([DUNES], float))[0, 0] == 0
    ]
    assert edge_labels.count("edge") >= 0.75 * len(edge_labels), edge_labels


def test_cli_threshold_parquet_and_geojson(tmp_path, scene_tif, landmarks):
    out, geo = tmp_path / "lm.parquet", tmp_path / "lm.geojson"
    code, stdout, stderr = run_main(
        ["landmarks", scene_tif, "--threshold", "0.9", "--out", out, "--geojson", geo]
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    table = pd.read_parquet(out)
    kept = landmarks[landmarks["posterior"] >= 0.9]
    assert 0 < len(kept) < len(landmarks)  # the threshold really filters here
    assert sorted(table["landmark_id"]) == sorted(kept["landmark_id"])
    assert (table["posterior"] >= 0.9).all()
    assert summary["n"] == len(table) and summary["by_class"] == table["label"].value_counts().to_dict()
    collection = strict_json(geo.read_text())
    check_rfc7946(collection)
    assert len(collection["features"]) == len(table)
    assert {f["properties"]["landmark_id"] for f in collection["features"]} == set(table["landmark_id"])


def test_featureless_scene_gives_an_empty_table(tmp_path):
    flat = write_scene(tmp_path / "flat.tif", np.full((300, 300), 90, np.uint8))
    code, stdout, stderr = run_main(["landmarks", flat, "--threshold", "0", "--out", tmp_path / "e.parquet"])
    assert code == 0, stderr
    assert json.loads(stdout)["n"] == 0
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert len(table) == 0 and list(table.columns)[: len(COLUMNS)] == list(COLUMNS)
    assert "p_crater" in table.columns


def test_threshold_and_border_validation(scene_tif):
    with pytest.raises(LookalikeError, match="threshold"):
        find_landmarks(scene_tif, threshold=1.5, progress=False)
    with pytest.raises(LookalikeError, match="border"):
        find_landmarks(scene_tif, border=-1, progress=False)


def test_bad_rasters_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not a raster at all")
    code, _, stderr = run_main(["landmarks", garbage, "--out", tmp_path / "x.parquet"])
    assert_user_error(code, stderr, "cannot read raster")
    nocrs = write_scene(tmp_path / "nocrs.tif", np.full((64, 64), 9, np.uint8), crs=None)
    code, _, stderr = run_main(["landmarks", nocrs, "--out", tmp_path / "x.parquet"])
    assert_user_error(code, stderr, "no CRS", "--crs")
    five = write_scene(tmp_path / "five.tif", np.full((5, 64, 64), 9, np.uint8))
    code, _, stderr = run_main(["landmarks", five, "--out", tmp_path / "x.parquet"])
    assert_user_error(code, stderr, "5 bands", "--band")
    code, _, stderr = run_main(
        ["landmarks", five, "--window", "0,0,900,10", "--band", "2", "--out", tmp_path / "x.parquet"]
    )
    assert_user_error(code, stderr, "window")
    code, _, stderr = run_main(["landmarks", tmp_path / "missing.tif", "--out", tmp_path / "x.parquet"])
    assert_user_error(code, stderr, "does not exist")
    with pytest.raises(SourceError, match="band 7"):
        find_landmarks(five, band=7, progress=False)
    assert not (tmp_path / "x.parquet").exists()


# ------------------------------------------------------------------ the real mosaic
def test_real_mosaic_window(data_dir, crop_encoder):
    """Around Gale crater on the 8k Mars mosaic: landmarks lie in the window's footprint."""
    window = (6900, 1900, 7500, 2500)
    with environ(LOOKALIKE_DATA=data_dir):
        found = find_landmarks("mars_8k", threshold=0.0, window=window, encoder=crop_encoder, progress=False)
    assert len(found) >= 1
    deg = 360.0 / 8192  # degrees per pixel, both axes
    west, east = -180 + window[0] * deg, -180 + window[2] * deg
    north, south = 90 - window[1] * deg, 90 - window[3] * deg
    assert found["lon"].between(west, east).all() and found["lat"].between(south, north).all()
    pad = BORDER * deg + 1e-9  # crops reach past the window by at most the border
    assert (found["lon_min"] >= west - pad).all() and (found["lon_max"] <= east + pad).all()
    assert (found["lat_min"] >= south - pad).all() and (found["lat_max"] <= north + pad).all()
    assert np.allclose(found["lon_min"], -180 + found["x0"] * deg)
    assert np.allclose(found["lat_max"], 90 - found["y0"] * deg)
    assert (found["scene"] == "mars_8k").all() and found["time"].isna().all()


# ------------------------------------------------------------------ at the classifier's scale
def test_a_scene_is_read_at_the_ground_scale_asked_for(scene_tif, landmarks, crop_encoder):
    """At 2x the raster's pixel size the planted craters are still found, boxes come back in the
    raster's own pixels, lon/lat agree with those pixels, and the 30 px border is 60 raster px."""
    coarse = find_landmarks(
        scene_tif, "hirise", threshold=0.0, encoder=crop_encoder, progress=False, ground_scale=2 * GSD
    )
    boxes = coarse[["x0", "y0", "x1", "y1"]].to_numpy()
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= SIZE).all() and (boxes[:, [1, 3]] <= SIZE).all()
    for cx, cy, r in CRATERS:
        containing = (
            (boxes[:, 0] <= cx - r)
            & (boxes[:, 2] >= cx + r)
            & (boxes[:, 1] <= cy - r)
            & (boxes[:, 3] >= cy + r)
        )
        assert containing.any(), (cx, cy, r)
    with rasterio.open(scene_tif) as src:
        inverse = ~src.transform
    crs = pyproj.CRS(CRS_CODE)
    back = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    col, row = inverse * back.transform(coarse["lon"].to_numpy(), coarse["lat"].to_numpy())
    assert np.allclose(col, (coarse.x0 + coarse.x1) / 2, atol=1.0)
    assert np.allclose(row, (coarse.y0 + coarse.y1) / 2, atol=1.0)
    # fewer, coarser regions than at the raster's own scale: it was really read coarser
    assert len(coarse) < len(landmarks)


def test_cli_reports_the_scale_each_scene_was_read_at(tmp_path, scene_tif):
    """``auto`` leaves a scene coarser than the classifier's scale as it is; a number reads
    coarser; a bad value is one clear error."""
    from lookalike.models.defaults import LANDMARK_GROUND_SCALES_M

    code, stdout, stderr = run_main(["landmarks", scene_tif, "--threshold", "0", "--out", tmp_path / "a.pq"])
    assert code == 0, stderr
    auto = json.loads(stdout)["ground_scale"]["esp_synthetic"]
    assert LANDMARK_GROUND_SCALES_M["hirise"] < GSD
    assert auto["read_m"] == auto["native_m"] and auto["pixels"] == [SIZE, SIZE]
    assert auto["native_m"] == pytest.approx(GSD, rel=0.01)
    args = ["landmarks", scene_tif, "--threshold", "0", "--ground-scale", "100", "--out", tmp_path / "b.pq"]
    code, stdout, stderr = run_main(args)
    assert code == 0, stderr
    coarse = json.loads(stdout)["ground_scale"]["esp_synthetic"]
    assert coarse["read_m"] == pytest.approx(100.0, rel=0.01)
    assert coarse["pixels"] == [pytest.approx(SIZE / 4, rel=0.01)] * 2  # the scale on the ground
    code, _, stderr = run_main(["landmarks", scene_tif, "--ground-scale", "fine", "--out", tmp_path / "c.pq"])
    assert_user_error(code, stderr, "ground scale")
