"""Domain-specific group whitening: statistics per domain, folding into the exported code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lookalike.errors import LookalikeError
from lookalike.models.training import TrainConfig, train_hash
from lookalike.models.whitening import SOURCE, TARGET, GroupWhitening, binary_entropy


def test_group_whitening_gives_identity_covariance_per_domain():
    torch.manual_seed(0)
    layer = GroupWhitening(8, group_size=4, momentum=1.0)
    mix = torch.randn(8, 8)
    source = torch.randn(512, 8) @ mix + 3.0
    target = torch.randn(512, 8) @ mix.T * 5.0 - 2.0
    layer.train()
    for x, d in ((source, SOURCE), (target, TARGET)):
        out = layer(x, d)
        for g in range(2):
            block = out[:, 4 * g : 4 * g + 4]
            assert torch.allclose(block.mean(0), torch.zeros(4), atol=1e-4)
            assert torch.allclose(torch.cov(block.T), torch.eye(4), atol=5e-3)
    layer.eval()  # eval uses the stored statistics of the domain asked for
    assert torch.allclose(torch.cov(layer(target, TARGET)[:, :4].T), torch.eye(4), atol=5e-3)
    assert not torch.allclose(torch.cov(layer(target, SOURCE)[:, :4].T), torch.eye(4), atol=0.5)
    a, mean = layer.affine(TARGET)
    assert torch.allclose(layer(target, TARGET), (target - mean) @ a.T, atol=1e-4)


def test_group_size_must_divide_features():
    with pytest.raises(ValueError):
        GroupWhitening(10, group_size=4)


def test_binary_entropy_is_lowest_for_confident_bits():
    assert binary_entropy(torch.full((4, 8), 0.5)) == pytest.approx(np.log(2), rel=1e-5)
    assert binary_entropy(torch.tensor([[0.0, 1.0]])) < 1e-4


def _clusters(rng, n_per=30, dim=32, shift=0.0, scale=1.0):
    centres = np.random.default_rng(7).normal(0, 4, (3, dim))
    x = np.concatenate([centres[c] + rng.normal(0, 1, (n_per, dim)) for c in range(3)])
    return (x * scale + shift).astype(np.float32), np.repeat(np.arange(3), n_per)


def test_whitened_mirs_head_exports_the_target_domain_code():
    rng = np.random.default_rng(0)
    x, y = _clusters(rng)
    target, target_y = _clusters(rng, shift=6.0, scale=3.0)  # same classes, another sensor
    cfg = TrainConfig(method="mirs-triplet", bits=32, epochs=15, whiten_group=8, seed=0)
    captured = {}
    import lookalike.models.training as training

    original = training.export_head

    def spy(head, mean, std, cfg_, backbone, n_train, whitening=None):
        captured.update(head=head, mean=mean, std=std, whitening=whitening)
        return original(head, mean, std, cfg_, backbone, n_train, whitening=whitening)

    training.export_head = spy
    try:
        model = train_hash(x, y, config=cfg, progress=False, target=target)
    finally:
        training.export_head = original
    head, w = captured["head"].eval(), captured["whitening"]
    xs = torch.from_numpy(((target - captured["mean"]) / captured["std"]).astype(np.float32))
    with torch.no_grad():
        expected = (head.logits(w(xs, TARGET)) > 0).numpy()
    assert (np.unpackbits(model.encode(target), axis=1).astype(bool) == expected).mean() > 0.999
    # the target code still separates the classes
    codes = np.unpackbits(model.encode(target), axis=1)
    d = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    same = target_y[:, None] == target_y[None, :]
    assert d[same].mean() < d[~same].mean()


def test_whitening_needs_target_and_a_mirs_head():
    x, y = _clusters(np.random.default_rng(0))
    with pytest.raises(LookalikeError):
        train_hash(
            x, y, config=TrainConfig(method="mirs-triplet", bits=16, epochs=1, whiten_group=8), progress=False
        )
    with pytest.raises(LookalikeError):
        train_hash(
            x,
            y,
            config=TrainConfig(method="descartes-classifier", bits=16, epochs=1, whiten_group=8),
            progress=False,
            target=x,
        )
