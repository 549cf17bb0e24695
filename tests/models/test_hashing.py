"""Bit packing, PCA-ITQ hashing and hash model files."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.errors import CodeLengthError, LookalikeError
from lookalike.models.hashing import LinearHash, fit_itq, pack_bits, unpack_bits


@pytest.mark.parametrize("bits", [8, 24, 64, 512])
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    b = rng.random((37, bits)) < 0.5
    packed = pack_bits(b)
    assert packed.shape == (37, bits // 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_bits(packed), b)
    np.testing.assert_array_equal(unpack_bits(packed, bits - 3), b[:, : bits - 3])
    # first bit is the most significant: byte value = sum(bit_i * 2**(7 - i))
    ref = (b.reshape(37, bits // 8, 8) * (1 << np.arange(7, -1, -1))).sum(-1)
    np.testing.assert_array_equal(packed, ref)


def test_pack_bits_order():
    np.testing.assert_array_equal(pack_bits([[1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]]), [[129, 64]])


@pytest.mark.parametrize("shape", [(4, 12), (4, 7), (16,), (2, 3, 8), (0, 5)])
def test_pack_bits_wrong_lengths(shape):
    with pytest.raises(CodeLengthError):
        pack_bits(np.zeros(shape, bool))


@pytest.mark.parametrize("bits", [0, -8, 12, 513])
def test_fit_itq_rejects_bad_code_lengths(bits):
    with pytest.raises(CodeLengthError):
        fit_itq(np.random.default_rng(0).standard_normal((50, 16)), bits)


def test_fit_itq_needs_two_samples():
    with pytest.raises(LookalikeError):
        fit_itq(np.ones((1, 16)), 8)


def test_fit_itq_balanced_bits_and_orthogonal_rotation():
    rng = np.random.default_rng(0)
    # correlated, non-centred features
    x = rng.standard_normal((1500, 48)) @ rng.standard_normal((48, 48)) + 5.0
    model = fit_itq(x, 32, backbone="test")
    assert model.bits == 32 and model.in_features == 48 and model.method == "pca-itq"
    assert model.meta["itq_bits"] == 32 and model.meta["random_bits"] == 0
    codes = unpack_bits(model.encode(x))
    assert codes.shape == (1500, 32)
    rate = codes.mean(axis=0)
    assert ((rate > 0.3) & (rate < 0.7)).all(), rate
    # PCA directions times an orthogonal rotation: orthonormal projection columns
    p = model.projection.astype(np.float64)
    np.testing.assert_allclose(p.T @ p, np.eye(32), atol=1e-4)
    # bits are far from duplicates of each other
    corr = np.corrcoef(codes.T.astype(float))
    assert np.abs(corr[~np.eye(32, dtype=bool)]).max() < 0.6


def test_itq_beats_plain_pca_signs_on_quantisation_error():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 16)) * np.linspace(4, 1, 16)
    model = fit_itq(x, 16)
    v = (x - model.mean) @ model.projection  # rotated projections
    itq_err = ((np.sign(v) - v) ** 2).sum()
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    pca = xc @ vt.T
    pca_err = ((np.sign(pca) - pca) ** 2).sum()
    assert itq_err < pca_err


def test_more_bits_than_samples_tops_up_with_random_projections():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 64))
    model = fit_itq(x, 128)
    assert model.bits == 128
    assert model.meta["itq_bits"] == 9 and model.meta["random_bits"] == 119  # rank of 10 centred rows
    codes = model.encode(rng.standard_normal((500, 64)))
    assert codes.shape == (500, 16)
    rate = unpack_bits(codes).mean(axis=0)
    assert (rate > 0.2).all() and (rate < 0.8).all()  # no constant bits
    # deterministic for a seed, different for another
    np.testing.assert_array_equal(fit_itq(x, 128).projection, model.projection)
    assert not np.array_equal(fit_itq(x, 128, seed=1).projection, model.projection)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 32))
    model = fit_itq(x, 64, backbone="efficientnet_lite0")
    digest = model.save(tmp_path / "h.npz")
    import hashlib

    assert digest == hashlib.sha256((tmp_path / "h.npz").read_bytes()).hexdigest()
    loaded = LinearHash.load(tmp_path / "h.npz")
    assert loaded.bits == 64 and loaded.backbone == "efficientnet_lite0"
    assert loaded.meta == model.meta and loaded.method == model.method
    y = rng.standard_normal((100, 32))
    np.testing.assert_array_equal(loaded.encode(y), model.encode(y))
    assert loaded.to_bytes() == model.to_bytes()


def test_encode_checks_feature_width():
    model = fit_itq(np.random.default_rng(4).standard_normal((20, 8)), 8)
    with pytest.raises(LookalikeError, match="8-d"):
        model.encode(np.zeros((3, 9)))


def _corruptions(good: bytes) -> dict[str, bytes]:
    return {
        "garbage": b"this is not a hash model" * 10,
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "npy not npz": b"\x93NUMPY" + b"\x00" * 100,
        "flipped zip header": good[:30] + bytes([good[30] ^ 0xFF]) + good[31:],
    }


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "npy not npz", "flipped zip header"])
def test_corrupt_model_file_raises_lookalike_error(tmp_path, kind):
    good = fit_itq(np.random.default_rng(5).standard_normal((20, 8)), 8).to_bytes()
    path = tmp_path / "bad.npz"
    path.write_bytes(_corruptions(good)[kind])
    with pytest.raises(LookalikeError, match="bad.npz"):
        LinearHash.load(path)


def test_model_file_without_header_or_wrong_format(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(4))
    with pytest.raises(LookalikeError, match="plain.npy"):
        LinearHash.load(tmp_path / "plain.npy")
    np.savez(tmp_path / "nohdr.npz", mean=np.zeros(4), projection=np.zeros((4, 8)))
    with pytest.raises(LookalikeError, match="nohdr.npz"):
        LinearHash.load(tmp_path / "nohdr.npz")
    import json

    header = json.dumps(dict(format=99, method="x", backbone="", bits=8, in_features=4)).encode()
    np.savez(
        tmp_path / "v99.npz",
        mean=np.zeros(4),
        projection=np.zeros((4, 8)),
        header=np.frombuffer(header, np.uint8),
    )
    with pytest.raises(LookalikeError, match="format 99"):
        LinearHash.load(tmp_path / "v99.npz")
    with pytest.raises(LookalikeError, match="does not exist"):
        LinearHash.load(tmp_path / "absent.npz")
