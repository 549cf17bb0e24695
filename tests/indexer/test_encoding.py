"""Encoder runtimes: ONNX Runtime fp32 and int8 against PyTorch, the ONNX model cache, the
automatic choice, ``--runtime`` validation and the GPU path (skipped without one)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from lookalike_testkit import assert_user_error, run_main

from lookalike.errors import LookalikeError
from lookalike.indexer import encoding
from lookalike.indexer.encoding import Encoder, RuntimeUnavailable

pytest.importorskip("onnxruntime")
# ONNX Runtime picks its kernels by processor (AVX2, AVX-512, VNNI): `make test-cpu` runs these
pytestmark = pytest.mark.cpu_dependent


def realish_tiles(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth terrain-like RGB tiles: low-frequency relief, a bright rim and dark bowl, grain."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.random((n, 1, 6, 6), dtype=np.float32))
    relief = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[
        :, 0
    ].numpy()
    yy, xx = np.mgrid[:size, :size] / size
    cy, cx, r = rng.uniform(0.3, 0.7, (3, n, 1, 1))
    d = np.hypot(yy - cy, xx - cx) / (r * 0.5)
    crater = np.where(d < 1, -0.4 * (1 - d**2), 0.3 * np.exp(-(((d - 1) * 6) ** 2)))
    grey = relief + crater + rng.normal(0, 0.03, (n, size, size))
    tint = np.array([0.75, 0.5, 0.35]) + rng.uniform(-0.05, 0.05, (n, 1, 1, 3))
    return np.clip(grey[..., None] * tint * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiles():
    return realish_tiles(6)


@pytest.fixture(scope="module")
def exported(backbone, tiles, tmp_path_factory):
    """A cache holding the fp32 export for the test tiles (exporting is the slow part)."""
    root = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKALIKE_CACHE", str(root))
        mp.setattr(encoding, "_SESSIONS", {})
        Encoder(backbone, device="cpu", runtime="onnx").features(tiles[:1])
    return root / "onnx"


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh, empty ONNX cache directory and no sessions left over in the process."""
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    monkeypatch.setattr(encoding, "_SESSIONS", {})
    return tmp_path / "onnx"


@pytest.fixture()
def warm_cache(cache, exported):
    """A fresh cache directory holding a copy of the module's fp32 export."""
    shutil.copytree(exported, cache)
    return cache


@pytest.fixture(scope="module")
def torch_features(backbone, tiles):
    return Encoder(backbone, device="cpu", runtime="torch", batch_size=4).features(tiles)


def codes(features: np.ndarray) -> np.ndarray:
    from lookalike.data.shipped import default_hash_path
    from lookalike.models.hashing import load_hash_model

    return load_hash_model(default_hash_path()).encode(features)


def test_onnx_matches_torch_and_codes_agree(backbone, tiles, torch_features, warm_cache):
    enc = Encoder(backbone, device="cpu", runtime="onnx", batch_size=4)  # 4: a ragged last batch
    feats = enc.features(tiles)
    assert enc.runtime == "onnx" and enc.describe()["runtime"] == "onnx"
    scale = np.abs(torch_features).max()
    assert np.abs(feats - torch_features).max() <= 1e-4 * scale
    np.testing.assert_array_equal(codes(feats), codes(torch_features))
    [path] = warm_cache.glob("*.onnx")  # keyed by model and input size, batch dynamic
    assert path.name.startswith("efficientnet_lite0-64x64-fp32-")


def test_onnx_resizes_like_torch(backbone, warm_cache):
    chips = realish_tiles(2, size=40, seed=3)
    a = Encoder(backbone, device="cpu", runtime="onnx", image_size=64).features(chips)
    b = Encoder(backbone, device="cpu", runtime="torch", image_size=64).features(chips)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert len(list(warm_cache.glob("*.onnx"))) == 1  # resized to 64 px: the 64 px model serves


def test_int8_is_close_but_opt_in(backbone, tiles, torch_features, warm_cache):
    """int8 is judged by what a search sees, against the spread of the tiles themselves (not by
    one processor's numbers): each tile's int8 feature and code find that tile's fp32 feature and
    code first, and the codes' disagreement is well under that between different tiles."""
    enc = Encoder(backbone, device="cpu", runtime="onnx-int8", calibration=realish_tiles(4, seed=1))
    feats = enc.features(tiles)
    assert enc.describe()["runtime"] == "onnx-int8"
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cosine = unit(feats) @ unit(torch_features).T
    np.testing.assert_array_equal(cosine.argmax(1), np.arange(len(tiles)), err_msg=str(cosine))
    int8_bits, fp32_bits = np.unpackbits(codes(feats), axis=1), np.unpackbits(codes(torch_features), axis=1)
    hamming = (int8_bits[:, None] != fp32_bits[None]).mean(2)
    np.testing.assert_array_equal(hamming.argmin(1), np.arange(len(tiles)), err_msg=str(hamming))
    between = (fp32_bits[:, None] != fp32_bits[None]).mean(2)[~np.eye(len(tiles), dtype=bool)]
    assert np.diag(hamming).mean() < 0.5 * between.mean(), (np.diag(hamming), between.mean())
    assert Encoder(backbone, device="cpu").runtime == "onnx"  # int8 is never the default


def test_cache_is_reused(backbone, tiles, torch_features, warm_cache, monkeypatch):
    [path] = warm_cache.glob("*.onnx")
    stamp = path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("the cached model should have been used")

    monkeypatch.setattr(encoding, "export_onnx", no_export)
    feats = Encoder(backbone, device="cpu", runtime="onnx").features(tiles)
    assert np.abs(feats - torch_features).max() <= 1e-4 * np.abs(torch_features).max()
    assert path.stat().st_mtime_ns == stamp and list(warm_cache.iterdir()) == [path]


def wrong_model(path) -> None:
    """A valid ONNX model with the right input name that computes something else."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"]),
        ],
        "wrong",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("damage", ["truncated", "other model"])
def test_corrupt_cache_is_exported_again(backbone, tiles, torch_features, warm_cache, damage):
    [path] = warm_cache.glob("*.onnx")
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        wrong_model(path)
    feats = Encoder(backbone, device="cpu", runtime="onnx").features(tiles)
    assert np.abs(feats - torch_features).max() <= 1e-4 * np.abs(torch_features).max()
    assert len(path.read_bytes()) > len(good) // 2  # exported again, in place
    assert list(warm_cache.iterdir()) == [path]  # no temporary files left behind


def test_auto_falls_back_to_torch_when_export_fails(backbone, tiles, torch_features, cache, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(encoding, "export_onnx", broken)
    auto = Encoder(backbone, device="cpu")
    with pytest.warns(RuntimeWarning, match="exporter exploded"):
        feats = auto.features(tiles)
    assert auto.runtime == "torch" and auto.describe()["runtime"] == "torch"
    np.testing.assert_array_equal(feats, torch_features)
    with pytest.raises(RuntimeUnavailable, match="exporter exploded"):
        Encoder(backbone, device="cpu", runtime="onnx").features(tiles)


def test_runtime_validation(backbone, tmp_path):
    with pytest.raises(LookalikeError, match="unknown runtime"):
        Encoder(backbone, device="cpu", runtime="tensorrt")
    code, _, stderr = run_main(["index", "scene.tif", "--out", tmp_path / "i", "--runtime", "fast"])
    assert_user_error(code, stderr, "--runtime", "onnx-int8")
    with pytest.raises(RuntimeUnavailable, match="CPU"):
        Encoder(backbone, device="meta", runtime="onnx")


def test_bench_encode_reports_every_path(backbone, warm_cache, monkeypatch):
    from lookalike.bench import encode as encode_benchmark

    monkeypatch.setattr(encode_benchmark, "sample_tiles", lambda n, size=128: (realish_tiles(n, 64), "test"))
    result = encode_benchmark.bench_encode(
        n=2, batch_size=2, repeat=1, batch_sizes=(), compile=False, int8=False, jit=False, backbone=backbone
    )
    assert set(result["paths"]) == {"eager", "torch", "onnx"}
    assert result["backbone"] == "efficientnet_lite0" and result["multilevel"]["tiles_per_s"] > 0
    assert result["multilevel"]["cost_vs_default"] > 0
    assert result["default_runtime"] == "onnx" and result["ratio"] == result["paths"]["onnx"]["ratio"]
    for row in result["paths"].values():
        assert row["tiles_per_s"] > 0 and row["bit_error_rate"] == 0.0
    assert "| onnx (default) |" in encode_benchmark.markdown_table(result)
    # the cost of pooling views is timed on the same tiles, relative to one view
    assert set(result["views"]) == {"1", "2", "8"} and result["views"]["1"]["cost_vs_one_view"] == 1.0
    assert all(row["tiles_per_s"] > 0 for row in result["views"].values())
    assert "| 8 |" in encode_benchmark.markdown_table(result)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path is not exercised")
def test_cuda_is_used_automatically(backbone, tiles, torch_features):
    enc = Encoder(backbone)
    assert enc.device.type == "cuda" and enc.runtime == "torch"
    feats = enc.features(tiles)
    assert np.abs(feats - torch_features).max() <= 1e-3 * np.abs(torch_features).max()
