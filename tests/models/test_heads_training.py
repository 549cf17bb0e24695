"""Hashing heads, training on tiny synthetic features, the exported network and model files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import lookalike.models.training as training
from lookalike.data.shipped import default_hash_path
from lookalike.errors import CodeLengthError, LookalikeError
from lookalike.indexer.search import rank_hamming
from lookalike.models.hashing import (
    DEFAULT_BITS,
    DEFAULT_METHOD,
    ConcatHash,
    LinearHash,
    NetworkHash,
    fit_itq,
    fitted_on_features,
    is_current_default,
    load_hash_model,
    resolve_hash,
    unpack_bits,
)
from lookalike.models.heads import AutoencoderHead, MIRSHead, NoisyClassifierHead
from lookalike.models.metrics import retrieval_scores
from lookalike.models.training import METHODS, SUPERVISED, TrainConfig, export_head, train_hash


# ------------------------------------------------------------------ heads
def _layers(module: nn.Module, kind) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def test_mirs_head_architecture_and_outputs():
    torch.manual_seed(0)
    head = MIRSHead(40, 24)
    linears = _layers(head, nn.Linear)
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 512), (512, 256), (256, 24)]
    relus = _layers(head, nn.LeakyReLU)
    assert len(relus) == 2 and all(m.negative_slope == pytest.approx(0.2) for m in relus)
    x = torch.randn(16, 40)
    p = head(x)
    assert p.shape == (16, 24)
    assert torch.all((p > 0) & (p < 1))
    torch.testing.assert_close(p, torch.sigmoid(head.logits(x)))
    head.train()
    torch.testing.assert_close(head(x), p)  # no noise: same in train and eval mode


@pytest.mark.parametrize(
    "make", [lambda: NoisyClassifierHead(20, 3, bits=16), lambda: AutoencoderHead(20, bits=16, hidden=32)]
)
def test_noisy_heads_add_noise_only_in_training(make):
    torch.manual_seed(0)
    head = make()
    x = torch.randn(8, 20)
    head.eval()
    a, b = head(x), head(x)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, torch.sigmoid(head.logits(x)))
    assert torch.all((a > 0) & (a < 1))
    head.train()
    c, d = head(x), head(x)
    assert not torch.equal(c, d) and not torch.allclose(c, a)
    assert torch.all((c >= 0) & (c <= 1))
    # std 4 noise before the sigmoid: far more saturated units than without it
    assert (torch.abs(c - 0.5) > 0.45).float().mean() > (torch.abs(a - 0.5) > 0.45).float().mean()


def test_noisy_classifier_head_shapes():
    head = NoisyClassifierHead(20, 5, bits=32)
    assert (head.code.in_features, head.code.out_features) == (20, 32)
    assert (head.classifier.in_features, head.classifier.out_features) == (32, 5)
    assert head.noise_std == 4.0
    assert head(torch.randn(3, 20)).shape == (3, 32)


def test_autoencoder_head_default_shapes():
    head = AutoencoderHead(100).eval()
    enc = [(m.in_features, m.out_features) for m in _layers(head.encoder, nn.Linear)]
    dec = [(m.in_features, m.out_features) for m in _layers(head.decoder, nn.Linear)]
    assert enc == [(100, 1024), (1024, 512)]
    assert dec == [(512, 1024), (1024, 100)]
    codes = head(torch.randn(4, 100))
    assert codes.shape == (4, 512)
    assert head.reconstruct(codes).shape == (4, 100)


# ------------------------------------------------------------------ training
def _clusters(seed: int = 0, n_per: int = 20, dim: int = 32):
    """Three well separated Gaussian clusters with uneven feature scales and offsets."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, dim))
    labels = np.repeat(np.arange(3), n_per)
    scale = rng.uniform(0.2, 5.0, dim)
    x = (centres[labels] + rng.normal(0, 1, (len(labels), dim))) * scale + 10.0
    return x.astype(np.float32), labels, scale


@pytest.fixture(scope="module")
def clusters():
    return _clusters()


def _views(x, scale, seed=1):
    rng = np.random.default_rng(seed)
    return tuple((x + rng.normal(0, 0.3, x.shape) * scale).astype(np.float32) for _ in range(2))


def _leave_one_out_map(model, x, labels) -> float:
    codes = model.encode(x)
    k = int(np.bincount(labels).min()) - 1
    ranked = rank_hamming(codes, codes, len(x))
    ranked = np.array([[j for j in row if j != i][:k] for i, row in enumerate(ranked)])
    return retrieval_scores(labels, labels, ranked, k)["map_at_k"]


def _hamming_matrix(model, x) -> np.ndarray:
    bits = unpack_bits(model.encode(x), model.bits)
    return (bits[:, None, :] != bits[None, :, :]).sum(-1)


def _train(method, x, labels, scale, epochs=8, **kw):
    cfg = TrainConfig(method=method, bits=32, epochs=epochs, **kw)
    return train_hash(
        x,
        labels if method in SUPERVISED else None,
        _views(x, scale) if method == "mirs-ntxent" else None,
        cfg,
        backbone="synthetic",
        progress=False,
    )


@pytest.mark.parametrize("method", METHODS)
def test_train_hash_groups_clusters(clusters, method):
    x, labels, scale = clusters
    model = _train(method, x, labels, scale)
    assert isinstance(model, NetworkHash)
    assert (model.bits, model.in_features, model.method, model.backbone) == (32, 32, method, "synthetic")
    assert model.meta["n_train"] == len(x) and model.meta["method"] == method
    d = _hamming_matrix(model, x)
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(x), dtype=bool)
    assert d[same & off_diag].mean() < d[~same].mean()
    assert _leave_one_out_map(model, x, labels) > 0.9


def test_train_hash_with_inter_class_triplets(clusters):
    x, labels, scale = clusters
    model = _train("mirs-triplet", x, labels, scale, inter_class_weight=0.5)
    assert _leave_one_out_map(model, x, labels) > 0.9


def test_train_hash_is_deterministic_for_a_seed(clusters):
    x, labels, scale = clusters
    a = _train("descartes-classifier", x, labels, scale, epochs=3)
    b = _train("descartes-classifier", x, labels, scale, epochs=3)
    assert np.array_equal(a.encode(x), b.encode(x))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(method="nope"), "unknown method"),
        (dict(method="mirs-triplet"), "needs labels"),
        (dict(method="descartes-classifier"), "needs labels"),
        (dict(method="mirs-ntxent"), "two augmented views"),
        (dict(method="descartes-autoencoder", bits=12), "multiple of 8"),
    ],
)
def test_train_hash_rejects_bad_requests(clusters, kwargs, needle):
    x, _, _ = clusters  # no labels, no views
    with pytest.raises(LookalikeError, match=needle):
        train_hash(x, None, None, TrainConfig(epochs=1, **kwargs), progress=False)


# ------------------------------------------------------------------ export: folded standardisation
@pytest.mark.parametrize("method", METHODS)
def test_exported_network_matches_torch_head(clusters, method, monkeypatch):
    """The NetworkHash bits are the torch head's ``logits > 0`` on standardised features."""
    x, labels, scale = clusters
    x = x.copy()
    x[:, 5] = 0.0  # a feature that never fires in training (a dead backbone channel)
    captured = {}

    def spy(head, mean, std, cfg, backbone, n_train, **kwargs):
        captured.update(head=head, mean=mean, std=std)
        return export_head(head, mean, std, cfg, backbone, n_train, **kwargs)

    monkeypatch.setattr(training, "export_head", spy)
    model = _train(method, x, labels, scale, epochs=4)
    head, mean, std = captured["head"].eval(), captured["mean"], captured["std"]
    rng = np.random.default_rng(7)
    unseen = x + rng.normal(0, 1, x.shape).astype(np.float32) * scale
    unseen[:, 5] = rng.uniform(0, 0.5, len(x))  # ... that does fire on new images
    for feats in (x, unseen.astype(np.float32)):
        with torch.no_grad():
            ref = head.logits(torch.from_numpy((feats - mean) / std)).numpy()
        got = model.logits(feats)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        assert np.array_equal(unpack_bits(model.encode(feats), model.bits), ref > 0)
    # the dead feature has no say in the codes: its folded weights are zero
    assert np.all(model.weights[0][:, 5] == 0)


def test_export_head_folds_standardisation_exactly():
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    x = (rng.normal(5, 3, (200, 24)) * rng.uniform(0.1, 10, 24)).astype(np.float32)
    mean, std = x.mean(0), x.std(0)
    heads = [
        (MIRSHead(24, 16), 3),
        (NoisyClassifierHead(24, 3, 16), 1),
        (AutoencoderHead(24, 16, hidden=64), 2),
    ]  # the code path only: no classifier/decoder
    for head, n_layers in heads:
        head.eval()
        model = export_head(head, mean, std, TrainConfig(method="x", bits=16), "b", len(x))
        with torch.no_grad():
            ref = head.logits(torch.from_numpy((x - mean) / std)).numpy()
        assert np.array_equal(unpack_bits(model.encode(x), 16), ref > 0)
        assert model.meta["head"]["kind"] == head.config["kind"]
        assert len(model.weights) == n_layers and model.bits == 16 and model.in_features == 24


# ------------------------------------------------------------------ model files
def test_network_hash_save_load_round_trip(tmp_path, clusters):
    x, labels, scale = clusters
    model = _train("mirs-triplet", x, labels, scale, epochs=3)
    path = tmp_path / "head.npz"
    digest = model.save(path)
    assert len(digest) == 64
    loaded = load_hash_model(path)
    assert isinstance(loaded, NetworkHash)
    assert (loaded.bits, loaded.in_features, loaded.slope, loaded.method, loaded.backbone) == (
        model.bits,
        model.in_features,
        model.slope,
        model.method,
        model.backbone,
    )
    assert loaded.meta == model.meta
    for a, b in zip(loaded.weights + loaded.biases, model.weights + model.biases):
        assert np.array_equal(a, b)
    rng = np.random.default_rng(0)
    probe = np.concatenate([x, (x + rng.normal(0, 2, x.shape) * scale).astype(np.float32)])
    assert np.array_equal(loaded.encode(probe), model.encode(probe))
    with pytest.raises(LookalikeError, match="not a linear hash"):
        LinearHash.load(path)
    with pytest.raises(LookalikeError, match="32-d"):
        loaded.encode(np.zeros((2, 31), np.float32))


def test_load_hash_model_opens_linear_and_network_files(tmp_path, clusters):
    x, labels, scale = clusters
    itq = fit_itq(x, 16, backbone="synthetic")
    itq.save(tmp_path / "itq.npz")
    net = _train("descartes-autoencoder", x, labels, scale, epochs=2)
    net.save(tmp_path / "net.npz")
    a, b = load_hash_model(tmp_path / "itq.npz"), load_hash_model(tmp_path / "net.npz")
    assert isinstance(a, LinearHash) and a.method == "pca-itq" and a.bits == 16
    assert isinstance(b, NetworkHash) and b.method == "descartes-autoencoder" and b.bits == 32
    assert np.array_equal(a.encode(x), itq.encode(x))
    assert np.array_equal(b.encode(x), net.encode(x))


def test_shipped_default_model_loads():
    path = default_hash_path()
    assert path.is_file() and path.parent.name == "weights" and path.parent.parent.name == "data"
    model = load_hash_model(path)
    assert model.bits % 8 == 0 and model.bits > 0
    codes = model.encode(np.random.default_rng(0).random((5, model.in_features), np.float32))
    assert codes.shape == (5, model.bits // 8)


def test_resolve_hash(tmp_path, clusters):
    x, labels, scale = clusters
    learned = load_hash_model(default_hash_path())
    x = np.random.default_rng(3).standard_normal((200, learned.in_features)).astype(np.float32)
    # no spec, or "default": the shipped learned code, then PCA-ITQ bits fitted on these features
    for spec in (None, "default"):
        assert fitted_on_features(spec)
        model = resolve_hash(spec, x)
        assert isinstance(model, ConcatHash) and model.bits == DEFAULT_BITS and model.method == DEFAULT_METHOD
        assert is_current_default(model) and model.meta["fitted_on"] == len(x)
        assert model.parts[0].to_bytes() == learned.to_bytes()
        fitted = fit_itq(x, DEFAULT_BITS - learned.bits)
        expected = np.concatenate([learned.encode(x), fitted.encode(x)], axis=1)
        assert np.array_equal(model.encode(x), expected)
    with pytest.raises(CodeLengthError, match=f"{DEFAULT_BITS} bits"):
        resolve_hash("default", x, bits=DEFAULT_BITS + 8)
    # an archive of one tile still gets a code (random hyperplanes through it for the fitted bits)
    one = resolve_hash(None, x[:1])
    assert one.bits == DEFAULT_BITS and one.parts[1].method == "lsh" and one.encode(x).shape == (len(x), 16)
    # another backbone's features have the same width, but the learned bits would be noise on them
    with pytest.raises(LookalikeError, match=f"reads {learned.backbone} features"):
        resolve_hash(None, x, backbone="efficientnet_lite2")
    x, labels, scale = clusters
    # bits without a spec: the PCA-ITQ baseline at that length, fitted on the given features
    model = resolve_hash(None, x, bits=24, backbone="bb")
    assert isinstance(model, LinearHash) and model.method == "pca-itq" and model.bits == 24
    assert model.backbone == "bb" and np.array_equal(model.encode(x), fit_itq(x, 24).encode(x))
    assert resolve_hash("itq", x).bits == 512
    assert resolve_hash("itq", x, bits=16).bits == 16
    net = _train("mirs-triplet", x, labels, scale, epochs=2)
    path = tmp_path / "net.npz"
    net.save(path)
    for spec in (path, str(path)):
        assert np.array_equal(resolve_hash(spec, x).encode(x), net.encode(x))
    assert resolve_hash(str(path), x, bits=32).bits == 32  # the right length is fine
    with pytest.raises(CodeLengthError, match="32-bit"):
        resolve_hash(str(path), x, bits=64)
    with pytest.raises(LookalikeError, match="does not exist"):
        resolve_hash(str(tmp_path / "missing.npz"), x)


# ------------------------------------------------------------------ similarity-preserving code
def test_similarity_matching_loss_is_zero_when_code_cosines_match():
    from lookalike.models.losses import similarity_matching_loss

    codes = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # code cosines 1, 0 / 0, 1
    p = (codes + 1) / 2
    feats = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # feature cosines the same
    assert float(similarity_matching_loss(p, feats)) == pytest.approx(0.0, abs=1e-7)
    assert float(similarity_matching_loss(p, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))) > 0.1
    same = torch.eye(2)
    # blend 1: the target is class agreement only (same as the identity here)
    assert float(
        similarity_matching_loss(p, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), same, 1.0)
    ) == pytest.approx(0.0, abs=1e-7)


def test_similarity_code_keeps_neighbourhoods_in_every_domain(clusters):
    from lookalike.models.training import SimilarityConfig, train_similarity_hash

    x, labels, scale = clusters
    other, other_labels, _ = _clusters(seed=5)  # a second domain, far from the first
    other = other + 100.0
    cfg = SimilarityConfig(bits=32, steps=150, domain_batch=32, labelled_batch=32, label_blend=0.0)
    model = train_similarity_hash({"a": x, "b": other}, None, cfg, backbone="synthetic", progress=False)
    assert isinstance(model, NetworkHash) and model.method == "similarity" and model.bits == 32
    assert model.meta["domains"] == {"a": len(x), "b": len(other)}
    # no labels were seen, yet both domains' clusters stay apart in Hamming space (chance: 1/3)
    assert _leave_one_out_map(model, x, labels) > 0.8
    assert _leave_one_out_map(model, other, other_labels) > 0.8
    # with labels, the blend and the classifier term train too; results are exported as arrays
    cfg = SimilarityConfig(
        bits=32,
        steps=50,
        domain_batch=32,
        labelled_batch=32,
        label_blend=0.5,
        supervised_weight=0.5,
        hidden=16,
    )
    model = train_similarity_hash({"a": x}, {"a": (x, labels)}, cfg, progress=False)
    assert len(model.weights) == 2 and model.meta["labelled"] == {"a": len(x)}
    with pytest.raises(LookalikeError, match="same width"):
        train_similarity_hash({"a": x, "b": other[:, :5]}, progress=False)
    with pytest.raises(LookalikeError, match="at least 2"):
        train_similarity_hash({"a": x[:1]}, progress=False)


def test_joined_codes_save_load_and_reject_a_wrong_header(tmp_path, clusters):
    x, labels, scale = clusters
    joined = ConcatHash(
        [fit_itq(x, 16), _train("descartes-autoencoder", x, labels, scale, epochs=2)],
        "itq+net",
        "bb",
        dict(note="two parts"),
    )
    assert joined.bits == 48 and joined.encode(x).shape == (len(x), 6)
    joined.save(tmp_path / "joined.npz")
    back = load_hash_model(tmp_path / "joined.npz")
    assert isinstance(back, ConcatHash) and back.method == "itq+net" and back.meta == {"note": "two parts"}
    assert np.array_equal(back.encode(x), joined.encode(x)) and not is_current_default(back)
    # a header that disagrees with the arrays is refused rather than making codes of another length
    with np.load(tmp_path / "joined.npz") as z:
        arrays = dict(z)
    header = json.loads(bytes(arrays["header"]).decode())
    arrays["header"] = np.frombuffer(json.dumps(dict(header, bits=64)).encode(), np.uint8)
    np.savez(tmp_path / "lying.npz", **arrays)
    with pytest.raises(LookalikeError, match="64"):
        load_hash_model(tmp_path / "lying.npz")
    with pytest.raises(LookalikeError, match="different widths"):
        ConcatHash([fit_itq(x, 8), fit_itq(x[:, :3], 8)], "bad")


def test_shipped_default_is_the_similarity_code():
    model = load_hash_model(default_hash_path())
    assert model.method == "similarity" and model.bits + 32 == DEFAULT_BITS
    assert model.meta["trained_on"]["views"] == 2
    assert set(model.meta["trained_on"]["labelled"]) == {"hirise_v1", "msl_curiosity"}
