"""Beyond one machine: the dask build gives the single-machine index, sharded search gives the
single-index ranking (ties and filters included), and worker failures are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from lookalike_testkit import assert_user_error, make_index, run_main
from rasterio.transform import from_origin

from lookalike.errors import LookalikeError
from lookalike.indexer import build, shards
from lookalike.indexer import distributed as dist
from lookalike.indexer.search import Filters, Query, search_index
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.store import open_index

pytest.importorskip("distributed")

SIZE, STRIDE = 64, 32  # small tiles keep the CNN cheap; the scene crosses zones 32N/33N at 12 E
SPEC = dist.EncoderSpec(device="cpu")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A uint8 EPSG:4326 scene over 11.7-12.3 E with a no-data band (skipped tiles)."""
    rng = np.random.default_rng(1)
    data = rng.integers(1, 255, (3, 280, 600), dtype=np.uint8)
    data[:, 200:, :240] = 0
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=600,
        height=280,
        count=3,
        dtype="uint8",
        crs="EPSG:4326",
        transform=from_origin(11.7, 45.28, 0.001, 0.001),
        nodata=0,
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def single(scene, tmp_path_factory):
    """The single-machine build with chunks of 16, the reference for everything below."""
    out = tmp_path_factory.mktemp("single") / "index"
    mp = pytest.MonkeyPatch()
    mp.setattr(build, "CHUNK", 16)
    try:
        build.index_rasters(
            [RasterSource(scene, name="scene")],
            out,
            size=SIZE,
            stride=STRIDE,
            encoder=dist.worker_encoder(SPEC),
            progress=False,
        )
    finally:
        mp.undo()
    return open_index(out)


def test_distributed_build_is_the_single_machine_index(client, scene, single, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "CHUNK", 16)
    tiles = single.tiles
    assert set(tiles["zone"]) == {"32N", "33N"} and len(tiles) > 48
    # some chunk of 16 holds tiles of both zones, i.e. of two scans on possibly two workers
    assert any(tiles["zone"].iloc[i : i + 16].nunique() == 2 for i in range(0, len(tiles), 16))

    out = tmp_path / "dask"
    dist.index_rasters_distributed(
        client,
        [RasterSource(scene, name="scene")],
        out,
        size=SIZE,
        stride=STRIDE,
        encoder=SPEC,
        progress=False,
        ahead=1,
    )
    built = open_index(out)
    assert np.asarray(built.codes).tobytes() == np.asarray(single.codes).tobytes()
    pd.testing.assert_frame_equal(built.tiles, single.tiles)
    assert built.manifest["hash"] == single.manifest["hash"]
    assert built.manifest["tiling"] == single.manifest["tiling"]
    assert not list(out.glob(".work-*"))


def test_distributed_build_resumes_from_single_machine_chunks(client, scene, single, tmp_path, monkeypatch):
    """Chunks finished by an interrupted one-machine build are reused, not re-encoded."""
    monkeypatch.setattr(build, "CHUNK", 16)
    source = RasterSource(scene, name="scene")
    out = tmp_path / "resumed"

    class Counting:
        def __init__(self, encoder, die_after: int | None = None):
            self.encoder, self.die_after, self.tiles = encoder, die_after, []

        def __getattr__(self, name):
            return getattr(self.encoder, name)

        def features(self, images):
            if len(self.tiles) == self.die_after:
                raise KeyboardInterrupt("simulated interruption")
            self.tiles.append(len(images))
            return self.encoder.features(images)

    with pytest.raises(KeyboardInterrupt):
        build.index_rasters(
            [source],
            out,
            size=SIZE,
            stride=STRIDE,
            encoder=Counting(dist.worker_encoder(SPEC), die_after=2),
            progress=False,
        )
    # the workers run in this process, so they find this encoder in their per-process cache
    on_workers = Counting(dist.worker_encoder(SPEC))
    monkeypatch.setitem(dist._ENCODERS, SPEC, on_workers)
    dist.index_rasters_distributed(
        client, [source], out, size=SIZE, stride=STRIDE, encoder=SPEC, progress=False
    )
    assert sum(on_workers.tiles) == len(single.tiles) - 32  # two chunks came from the work folder
    assert np.asarray(open_index(out).codes).tobytes() == np.asarray(single.codes).tobytes()


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """500 tiles whose 64-bit codes take few byte values: many tied distances."""
    root = tmp_path_factory.mktemp("tied")
    index = make_index(root / "whole", n=500, bits=64, seed=3, values=3)
    with open(index.hash_model_path, "rb") as fh:
        model = fh.read()
    shards.write_shards(
        root / "sharded",
        np.asarray(index.codes),
        index.tiles,
        3,
        bits=64,
        hash_model=model,
        info=dict(kind="test"),
    )
    return index, root / "sharded"


@pytest.mark.parametrize("k", [1, 37, 200, 500])
def test_sharded_search_equals_one_index(client, tied, k):
    index, sharded = tied
    engine = dist.ShardedSearch(client, sharded)
    assert len(engine) == index.n and len(engine.shards) == 3
    rng = np.random.default_rng(k)
    filters = [
        None,
        Filters(zones=sorted(set(index.tiles["zone"]))[:12]),
        Filters(bbox=(150.0, -60.0, -150.0, 60.0), sources=["alpha", "gamma"]),
    ]
    for f in filters:
        for q in rng.integers(0, 3, size=(2, 8), dtype=np.uint8):
            want = search_index(index, q, k=k, filters=f)
            got = engine.search(q, k=k, filters=f)
            np.testing.assert_array_equal(got.attrs["index_row"], want.attrs["index_row"])
            pd.testing.assert_frame_equal(got, want)
    # the merge really had ties to break across shards
    full = search_index(index, rng.integers(0, 3, 8, dtype=np.uint8), k=500)
    assert full["distance"].value_counts().max() > 20


def test_sharded_queries_by_tile_lonlat_and_examples(client, tied):
    index, sharded = tied
    engine = dist.ShardedSearch(client, [sharded / "shard-000", sharded / "shard-001", sharded / "shard-002"])
    ids = index.tiles["tile_id"]
    row = int(index.tiles["lon"].abs().idxmin())
    lon, lat = float(index.tiles["lon"].iat[row]), float(index.tiles["lat"].iat[row])
    for query in [
        Query(tile_id=ids.iat[400]),
        Query(lonlat=(lon, lat)),
        Query(positives=[ids.iat[10], ids.iat[250]], negatives=[ids.iat[480]]),
    ]:
        pd.testing.assert_frame_equal(engine.search(query, k=50), search_index(index, query, k=50))
    with pytest.raises(LookalikeError, match="not in the sharded index"):
        engine.search(Query(tile_id="nope"), k=5)


def test_shard_manifest_is_checked(tied, tmp_path):
    _, sharded = tied
    body = json.loads((sharded / shards.SHARD_MANIFEST).read_text())
    body["shards"][0]["count"] += 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / shards.SHARD_MANIFEST).write_text(json.dumps(body))
    with pytest.raises(LookalikeError, match="checksum"):
        shards.read_shards(bad)


def test_worker_side_errors_are_lookalike_errors(client, tied, scene, tmp_path):
    index, sharded = tied
    # a shard whose codes were altered after it was written: the worker's open_index refuses it
    copy = tmp_path / "sharded"
    import shutil

    shutil.copytree(sharded, copy)
    codes = next((copy / "shard-001").glob("codes-*.npy"))
    data = bytearray(codes.read_bytes())
    data[-1] ^= 0xFF
    codes.write_bytes(bytes(data))
    with pytest.raises(LookalikeError, match="checksum"):
        dist.ShardedSearch(client, copy)
    # a raster the workers cannot read (gone after the client opened it)
    moved = tmp_path / "scene.tif"
    shutil.copy(scene, moved)
    source = RasterSource(moved, name="scene")
    moved.unlink()
    with pytest.raises(LookalikeError, match="cannot read raster"):
        dist.index_rasters_distributed(
            client, [source], tmp_path / "out", size=SIZE, stride=STRIDE, encoder=SPEC, progress=False
        )


def test_cli_sharded_build_and_search(scene, single, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "CHUNK", 16)
    out = tmp_path / "cli"
    code, stdout, err = run_main(
        [
            "index",
            scene,
            "--name",
            "scene",
            "--tile-size",
            SIZE,
            "--stride",
            STRIDE,
            "--scheduler",
            "local",
            "--shards",
            2,
            "--out",
            out,
        ]
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["count"] == len(single.tiles) and len(summary["shards"]) == 2
    tile = single.tiles["tile_id"].iat[5]
    code, stdout, err = run_main(
        [
            "search",
            out,
            "--scheduler",
            "local",
            "--tile",
            tile,
            "--k",
            30,
            "--zones",
            "33N",
            "--json",
            tmp_path / "hits.json",
        ]
    )
    assert code == 0, err
    hits = json.loads((tmp_path / "hits.json").read_text())["hits"]
    want = search_index(single, Query(tile_id=tile), k=30, filters=Filters(zones=["33N"]))
    assert [h["tile_id"] for h in hits] == want["tile_id"].tolist()
    assert [h["distance"] for h in hits] == want["distance"].tolist()
    code, _, err = run_main(["search", out, "--tile", tile, "--k", 5, "--scheduler", "nowhere:x"])
    assert_user_error(code, err, "dask scheduler")


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(LookalikeError, match="cannot reach the dask scheduler"):
        with dist.connect("tcp://127.0.0.1:9", timeout="1s"):
            pass
