"""End to end on the real shared data (skipped when ../shared/data is absent)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import shapely
from lookalike_testkit import check_rfc7946, run_cli, run_main, strict_json
from shapely.geometry import shape

from lookalike.models.hashing import DEFAULT_BITS, DEFAULT_METHOD, load_hash_model

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ Mars: index, info, search
def test_mars_index_info(mars_index, data_dir):
    code, out, err = run_main(["info", mars_index])
    assert code == 0, err
    info = json.loads(out)
    # no --hash: the default recipe, fitted on the index's tiles
    assert info["count"] > 50 and info["bits"] == DEFAULT_BITS and info["zones"] == 2
    assert info["hash"] == DEFAULT_METHOD
    assert info["sources"] == ["mars_8k"] and info["backbone"] == "efficientnet_lite0"
    from lookalike.indexer.store import open_index

    idx = open_index(mars_index)
    tiles = idx.tiles
    assert set(tiles["zone"]) == {"30N", "31N"}
    assert tiles["tile_id"].is_unique
    assert (tiles["lat"] >= 0).all() and tiles["lon"].between(-6, 6).all()
    # every tile centre lies in the zone it is filed under
    from lookalike.indexer.tiling import Zone

    assert all(Zone.at(lo, la).label == z for lo, la, z in zip(tiles["lon"], tiles["lat"], tiles["zone"]))
    # gsd is the mosaic's native resolution: 360 degrees of Mars over 8192 px
    gsd = 2 * np.pi * 3_396_190.0 / 8192
    assert idx.manifest["tiling"]["gsd"] == pytest.approx(gsd)
    assert not list(mars_index.glob(".work-*"))  # the work folder is removed on commit


def test_mars_search_lonlat_geojson(mars_index, tmp_path):
    gpd = pytest.importorskip("geopandas")
    geojson, hits_json = tmp_path / "hits.geojson", tmp_path / "hits.json"
    proc = run_cli(
        ["search", mars_index, "--lonlat", "0,10", "--k", "50", "--geojson", geojson, "--json", hits_json]
    )
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(hits_json.read_text())["hits"]
    assert len(hits) == 50
    distances = [h["distance"] for h in hits]
    assert distances == sorted(distances)
    assert hits[0]["rank"] == 1 and hits[0]["distance"] == 0
    assert [h["rank"] for h in hits] == list(range(1, 51))
    collection = strict_json(geojson.read_text())
    check_rfc7946(collection)
    assert [f["properties"]["tile_id"] for f in collection["features"]] == [h["tile_id"] for h in hits]
    # the query tile's footprint holds the query point
    assert shape(collection["features"][0]["geometry"]).covers(shapely.Point(0, 10))
    for f in collection["features"]:
        assert {"rank", "distance", "tile_id", "zone", "time", "source"} <= set(f["properties"])
        assert f["properties"]["source"] == "mars_8k"
    frame = gpd.read_file(geojson)
    assert len(frame) == 50 and frame.geometry.is_valid.all()
    assert frame["distance"].is_monotonic_increasing
    minx, _, maxx, _ = frame.total_bounds
    assert -180 <= minx and maxx <= 180


def test_mars_search_filters_on_real_index(mars_index):
    from lookalike.indexer.search import Filters, Query, search_index
    from lookalike.indexer.store import open_index

    idx = open_index(mars_index)
    hits = search_index(
        idx, Query(lonlat=(0.0, 10.0)), k=1000, filters=Filters(zones=["31N"], bbox=(0, 0, 6, 30))
    )
    assert len(hits) > 0
    assert (hits["zone"] == "31N").all() and hits["lat"].between(0, 30).all()
    expected = (idx.tiles["zone"] == "31N") & idx.tiles["lon"].between(0, 6) & idx.tiles["lat"].between(0, 30)
    assert len(hits) == int(expected.sum())


def test_earth_index_uses_utm_zones(tmp_path, data_dir):
    out = tmp_path / "earth"
    code, stdout, err = run_main(
        ["index", "earth_8k", "--bbox", "10,40,20,50", "--bits", "64", "--out", out], LOOKALIKE_DATA=data_dir
    )
    assert code == 0, err
    from lookalike.indexer.store import open_index

    tiles = open_index(out).tiles
    assert len(tiles) > 0
    assert set(tiles["zone"]) <= {"32N", "33N", "34N"}
    assert tiles["lon"].between(10, 20).all()
    crs = open_index(out).manifest["sources"]["earth_8k"]["crs"]
    assert "WGS 84" in crs or "4326" in crs


# ------------------------------------------------------------------ resume
class _FlakyEncoder:
    """The session encoder, but it can die after a number of chunks and counts its calls."""

    def __init__(self, encoder, fail_after: int | None = None):
        self._encoder = encoder
        self.fail_after = fail_after
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def features(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return self._encoder.features(images)


def test_interrupted_build_resumes_from_chunks(tmp_path, monkeypatch, data_dir, encoder):
    from lookalike.data.registry import DATASETS
    from lookalike.indexer import build
    from lookalike.indexer.sources import RasterSource
    from lookalike.indexer.store import open_index
    from lookalike.indexer.tiling import Zone

    monkeypatch.setattr(build, "CHUNK", 8)
    ds = DATASETS["mars_8k"]
    source = RasterSource(data_dir / ds.fname, name="mars_8k", crs=ds.crs, bounds=ds.bounds)
    kwargs = dict(zones=[Zone(31, "N")], bbox=(0.0, 0.0, 6.0, 40.0), bits=64, progress=False)

    reference = tmp_path / "reference"
    full = _FlakyEncoder(encoder)
    build.index_rasters([source], reference, encoder=full, **kwargs)
    n_chunks = full.calls
    assert n_chunks >= 3

    out = tmp_path / "resumed"
    first = _FlakyEncoder(encoder, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        build.index_rasters([source], out, encoder=first, **kwargs)
    assert not (out / "manifest.json").exists()
    work = list(out.glob(".work-*"))
    assert len(work) == 1 and len(list(work[0].glob("chunk-*.parquet"))) == 2

    second = _FlakyEncoder(encoder)
    build.index_rasters([source], out, encoder=second, **kwargs)
    assert second.calls == n_chunks - 2  # the two finished chunks were reused
    assert not list(out.glob(".work-*"))
    a, b = open_index(reference), open_index(out)
    assert a.tiles["tile_id"].tolist() == b.tiles["tile_id"].tolist()
    np.testing.assert_array_equal(np.asarray(a.codes), np.asarray(b.codes))


def test_pipelined_build_equals_serial_and_resumes(tmp_path, monkeypatch, data_dir, encoder):
    """The pipelined build (tiles cut on a background thread; with a model file, each chunk
    hashed at once) writes the same codes and tile table, byte for byte, as the serial build;
    interrupted, it resumes from its finished chunks."""
    from lookalike.data.registry import DATASETS
    from lookalike.data.shipped import default_hash_path
    from lookalike.indexer import build
    from lookalike.indexer.pipeline import StageTimes
    from lookalike.indexer.sources import RasterSource
    from lookalike.indexer.store import open_index
    from lookalike.indexer.tiling import Zone

    monkeypatch.setattr(build, "CHUNK", 8)
    ds = DATASETS["mars_8k"]
    source = RasterSource(data_dir / ds.fname, name="mars_8k", crs=ds.crs, bounds=ds.bounds)
    kwargs = dict(
        zones=[Zone(31, "N")], bbox=(0.0, 0.0, 6.0, 40.0), progress=False, hash_path=str(default_hash_path())
    )
    serial, times = tmp_path / "serial", StageTimes()
    build.index_rasters([source], serial, encoder=encoder, prefetch=0, **kwargs)
    build.index_rasters([source], tmp_path / "pipelined", encoder=encoder, prefetch=2, times=times, **kwargs)
    assert {"read", "prepare", "encode", "save", "hash"} <= set(times.as_dict())

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build.index_rasters([source], out, encoder=_FlakyEncoder(encoder, fail_after=2), **kwargs)
    second = _FlakyEncoder(encoder)
    build.index_rasters([source], out, encoder=second, **kwargs)
    a = open_index(serial)
    for other in (open_index(tmp_path / "pipelined"), open_index(out)):
        pd.testing.assert_frame_equal(a.tiles, other.tiles)
        np.testing.assert_array_equal(np.asarray(a.codes), np.asarray(other.codes))
        assert [a.thumbnail(i) for i in range(a.n)] == [other.thumbnail(i) for i in range(other.n)]
    assert second.calls == -(-a.n // 8) - 2  # the two finished chunks were reused

    # thumbnails come from the index now, not from resampling the source
    from PIL import Image

    from lookalike.indexer import thumbnails

    def no_rendering(*args, **kwargs):
        raise AssertionError("a stored thumbnail was rendered from the source")

    monkeypatch.setattr(thumbnails, "source_image", no_rendering)
    tile = a.tiles.iloc[a.n - 1].to_dict()
    jpeg = thumbnails.thumbnail_jpeg(a, tile)
    assert jpeg == a.thumbnail(a.n - 1) and Image.open(io.BytesIO(jpeg)).size == (96, 96)


def test_bench_index_json(tmp_path, data_dir):
    out = tmp_path / "bench.json"
    code, _, err = run_main(
        [
            "bench",
            "index",
            "mars_8k",
            "--zones",
            "31N",
            "--bbox",
            "0,0,6,40",
            "--encode-sample",
            "64",
            "--json",
            str(out),
        ],
        LOOKALIKE_DATA=data_dir,
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    assert {"tiles", "tiles_per_s", "encode_tiles_per_s", "ratio", "peak_rss_mb", "stages"} <= set(result)
    assert result["tiles"] > 0 and result["peak_rss_mb"] > 100
    assert result["ratio"] == pytest.approx(result["tiles_per_s"] / result["encode_tiles_per_s"])
    assert {"read", "encode", "hash", "commit"} <= set(result["stages"]) and result["serial_tiles_per_s"] > 0
    code, _, err = run_main(["bench", "index", "--encode-sample", "0", "mars_8k"], LOOKALIKE_DATA=data_dir)
    assert code == 2 and "encode-sample" in err


def test_stale_chunks_are_not_reused(tmp_path, encoder):
    """A chunk file whose tile ids do not match is recomputed, not trusted."""
    from lookalike.indexer.build import encode_chunks

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    records = [dict(tile_id=f"x{i}") for i in range(3)]
    work = tmp_path / "work"
    f1, t1 = encode_chunks(zip(records, images), encoder, work, progress=False)
    counting = _FlakyEncoder(encoder)
    f2, t2 = encode_chunks(zip(records, images), counting, work, progress=False)
    assert counting.calls == 0
    np.testing.assert_array_equal(f1, f2)
    other = [dict(tile_id=f"y{i}") for i in range(3)]
    f3, t3 = encode_chunks(zip(other, images[::-1]), counting, work, progress=False)
    assert counting.calls == 1 and t3["tile_id"].tolist() == ["y0", "y1", "y2"]
    np.testing.assert_allclose(f3, f1[::-1], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ retrieval evaluation
@pytest.fixture(scope="module")
def hirise_subset(hirise_dir, tmp_path_factory):
    labels = pd.read_csv(hirise_dir / "labels.csv")
    train = labels[labels["split"] == "train"].sample(150, random_state=0)
    val = labels[labels["split"] == "val"].sample(60, random_state=0)
    path = tmp_path_factory.mktemp("hirise") / "subset.csv"
    pd.concat([train, val]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("how", [["--float"], [], ["--bits", "64"]])
def test_eval_retrieval_on_hirise_subset(hirise_dir, hirise_subset, tmp_path_factory, how):
    cache = tmp_path_factory.getbasetemp() / "feature-cache-eval"  # shared by these runs: encoded once
    out = tmp_path_factory.mktemp("eval") / "r.json"
    code, stdout, err = run_main(
        [
            "eval",
            "retrieval",
            "--images",
            hirise_dir,
            "--labels",
            hirise_subset,
            "--query-split",
            "val",
            "--k",
            "20",
            "--json",
            out,
            *how,
        ],
        LOOKALIKE_CACHE=cache,
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    assert {"map_at_k", "k", "n_queries", "n_archive", "bits", "method"} <= set(result)
    assert 0 < result["map_at_k"] <= 1 and 0 < result["precision_at_k"] <= 1
    assert result["k"] == 20 and result["n_queries"] == 60 and result["n_archive"] == 150
    if how == ["--float"]:
        assert result["bits"] == 32 * 1280 and result["method"].startswith("float")
    elif how:
        assert result["bits"] == 64 and result["method"] == "pca-itq-64"
    else:  # the default recipe, fitted on the archive
        assert result["bits"] == DEFAULT_BITS and result["method"] == f"{DEFAULT_METHOD}-{DEFAULT_BITS}"
    # features were cached in LOOKALIKE_CACHE, not in the user's cache
    assert len(list(cache.glob("*.npy"))) == 2


def test_eval_retrieval_beats_chance(hirise_dir, hirise_subset, tmp_path_factory):
    """Float features retrieve same-class crops far better than a random ranking would."""
    cache = tmp_path_factory.getbasetemp() / "feature-cache-eval"
    from lookalike_testkit import environ

    from lookalike.models.metrics import retrieval_scores
    from lookalike.workflows.evaluation import evaluate_retrieval

    with environ(LOOKALIKE_CACHE=cache):
        result = evaluate_retrieval(
            hirise_dir, hirise_subset, query_split="val", k=20, method="float", progress=False
        )
    labels = pd.read_csv(hirise_subset)
    archive = labels[labels["split"] == "train"]["label"].to_numpy()
    queries = labels[labels["split"] == "val"]["label"].to_numpy()
    rng = np.random.default_rng(0)
    chance = np.mean(
        [
            retrieval_scores(
                queries, archive, np.stack([rng.permutation(len(archive))[:20] for _ in queries]), 20
            )["map_at_k"]
            for _ in range(5)
        ]
    )
    assert result["map_at_k"] > chance + 0.05


def test_train_hash_on_an_index_own_tiles(mars_index, tmp_path):
    """Unsupervised training from an index's tiles, then indexing with the new head."""
    model = tmp_path / "tiles_ntxent.npz"
    code, out, err = run_main(
        [
            "train-hash",
            "--index",
            mars_index,
            "--method",
            "mirs-ntxent",
            "--bits",
            "32",
            "--epochs",
            "3",
            "--limit",
            "60",
            "--out",
            model,
        ]
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["n_train"] == 60 and report["bits"] == 32 and model.exists()
    head = load_hash_model(model)
    assert head.method == "mirs-ntxent" and head.meta["trained_on"]["n"] == 60
    code, _, err = run_main(
        ["train-hash", "--index", mars_index, "--method", "mirs-triplet", "--out", tmp_path / "x.npz"]
    )
    assert code == 2 and "needs labels" in err


# ------------------------------------------------------------------ landmarks in the real index
def test_real_landmarks_catalogued_on_their_tiles(mars_index, data_dir, tmp_path):
    """`lookalike landmarks mars_8k --window ... --index` on the 30N/31N index of the mosaic."""
    from lookalike.indexer.catalogue import scene_keys
    from lookalike.indexer.store import open_index

    code, stdout, err = run_main(
        [
            "landmarks",
            "mars_8k",
            "--window",
            "3900,600,4300,2040",
            "--threshold",
            "0",
            "--out",
            tmp_path / "lm.parquet",
            "--index",
            mars_index,
            "--json",
            tmp_path / "lm.json",
        ],
        LOOKALIKE_DATA=data_dir,
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "lm.json").read_text())
    index = open_index(mars_index)
    lm = index.landmarks
    assert summary["catalogued"] == len(lm) == summary["n"] > 0
    placed = lm[lm["row"] >= 0]
    assert len(placed) == summary["on_indexed_tiles"] > 0
    tiles = index.tiles.iloc[placed["row"].to_numpy()]
    for (_, landmark), (_, tile) in zip(placed.iterrows(), tiles.iterrows()):
        footprint = shapely.Polygon([(tile[f"lon{i}"], tile[f"lat{i}"]) for i in range(4)])
        assert footprint.buffer(1e-6).contains(shapely.Point(landmark["lon"], landmark["lat"]))
    assert len(set(scene_keys(index.tiles))) == index.n  # mosaic tiles are their own scenes
    code, out, err = run_main(["info", mars_index, "--no-verify"])
    info = strict_json(out)["landmarks"]
    assert info["landmarks"] == len(lm) and sum(info["by_class"].values()) == len(lm)
    best = lm.loc[placed["posterior"].idxmax()]
    code, out, err = run_main(
        [
            "search",
            mars_index,
            "--lonlat",
            "0,10",
            "--classes",
            best["label"],
            "--min-confidence",
            str(best["posterior"] - 1e-6),
            "--json",
            tmp_path / "h.json",
        ]
    )
    assert code == 0, err
    hits = json.loads((tmp_path / "h.json").read_text())
    hit_ids = {h["tile_id"] for h in (hits["hits"] if isinstance(hits, dict) else hits)}
    assert index.tiles["tile_id"].iat[int(best["row"])] in hit_ids


def test_bench_index_json_for_an_image_folder(tmp_path, hirise_dir):
    """The image-folder benchmark on 12 real chips: the same JSON, each build against the
    encoder timed around it."""
    import pandas as pd

    rows = pd.read_csv(hirise_dir / "labels.csv").query("split == 'val'").head(12)
    labels = tmp_path / "labels.csv"
    rows.to_csv(labels, index=False)
    out = tmp_path / "bench.json"
    code, _, err = run_main(
        [
            "bench",
            "index",
            "--images",
            str(hirise_dir),
            "--labels",
            str(labels),
            "--image-size",
            "64",
            "--encode-sample",
            "8",
            "--json",
            str(out),
        ]
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["tiles"] == 12 and len(result["encode_passes_tiles_per_s"]) == 3
    assert result["encode_tiles_per_s"] == max(result["encode_passes_tiles_per_s"][:2])
    assert result["serial_encode_tiles_per_s"] == max(result["encode_passes_tiles_per_s"][1:])
    assert result["ratio"] == pytest.approx(result["tiles_per_s"] / result["encode_tiles_per_s"])
