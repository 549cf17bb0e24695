"""The hashing losses on tiny hand-made tensors: values, gradients, and the triplets they pick."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lookalike.models.losses import (
    ContrastivePairs,
    SemiHardTriplet,
    balance_loss,
    inter_class_triplets,
    push_loss,
    signed,
)
from lookalike.models.training import class_standardised_clusters


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _sgd_step(p: torch.Tensor, loss: torch.Tensor, lr: float = 0.1) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, p)
    return (p - lr * grad).detach()


# ------------------------------------------------------------------ push
def test_push_loss_values():
    assert float(push_loss(torch.full((3, 8), 0.5))) == pytest.approx(0.25)
    assert float(push_loss(torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))) == pytest.approx(0.0)
    # mean of 0.25 - (p - 0.5)^2 over the elements
    p = torch.tensor([[0.5, 0.9], [0.0, 0.3]])
    assert float(push_loss(p)) == pytest.approx((0.25 + 0.09 + 0.0 + 0.21) / 4)


def test_push_loss_non_negative_and_at_most_a_quarter():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        p = torch.rand(7, 16, generator=g)
        value = float(push_loss(p))
        assert 0.0 <= value <= 0.25
    for p in (torch.zeros(2, 4), torch.ones(2, 4)):  # the extremes, where it is smallest
        assert float(push_loss(p)) == 0.0


def test_push_loss_gradient_pushes_away_from_half():
    p = torch.tensor([[0.6, 0.4, 0.9, 0.1]], requires_grad=True)
    stepped = _sgd_step(p, push_loss(p))
    assert stepped[0, 0] > 0.6 and stepped[0, 2] > 0.9  # above 0.5: up
    assert stepped[0, 1] < 0.4 and stepped[0, 3] < 0.1  # below 0.5: down
    assert float(push_loss(stepped)) < float(push_loss(p.detach()))
    # 0.5 is a stationary point (an unstable one)
    half = torch.full((1, 3), 0.5, requires_grad=True)
    (grad,) = torch.autograd.grad(push_loss(half), half)
    assert torch.equal(grad, torch.zeros_like(grad))


# ------------------------------------------------------------------ balance
@pytest.mark.parametrize(
    "p",
    [
        [[0.0, 1.0], [1.0, 0.0]],
        [[0.2, 0.9], [0.8, 0.1]],
        [[0.5, 0.5], [0.5, 0.5]],
        [[1.0, 0.0, 0.3], [0.0, 1.0, 0.7], [0.5, 0.5, 0.5]],
    ],
)
def test_balance_loss_zero_when_each_bit_is_on_half_the_time(p):
    assert float(balance_loss(torch.tensor(p))) == pytest.approx(0.0, abs=1e-12)


def test_balance_loss_positive_otherwise():
    # bit means (1, 0.5): ((0.5)^2 + 0) / 2
    assert float(balance_loss(torch.tensor([[1.0, 1.0], [1.0, 0.0]]))) == pytest.approx(0.125)
    assert float(balance_loss(torch.zeros(4, 3))) == pytest.approx(0.25)
    g = torch.Generator().manual_seed(1)
    assert float(balance_loss(torch.rand(5, 6, generator=g) * 0.4)) > 0  # all below 0.5


def test_balance_loss_gradient_moves_means_toward_half():
    p = torch.tensor([[0.9, 0.1, 0.6], [0.7, 0.3, 0.2]], requires_grad=True)  # means .8 .2 .4
    before = (p.detach().mean(0) - 0.5).abs()
    stepped = _sgd_step(p, balance_loss(p), lr=1.0)
    after = (stepped.mean(0) - 0.5).abs()
    assert torch.all(after < before)
    assert float(balance_loss(stepped)) < float(balance_loss(p.detach()))


# ------------------------------------------------------------------ semi-hard triplets
def _codes(*rows: str) -> torch.Tensor:
    return torch.tensor([[float(c) for c in row] for row in rows])


def test_semihard_triplet_zero_when_classes_separated_beyond_margin():
    crit = SemiHardTriplet(margin=0.25)
    # class 0 near 1111 0000, class 1 near 0000 1111: same-class cosine >= 0.5, other-class <= -0.5
    p = _codes("11110000", "11100000", "11110001", "00001111", "00011111", "00001110")
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    anchors, _, _ = crit.miner(signed(p), labels)
    assert len(anchors) == 0
    p = p.clamp(0.02, 0.98).requires_grad_()
    loss = crit(p, labels)
    assert _f(loss) == 0.0
    loss.backward()  # still differentiable, with a zero gradient
    assert torch.count_nonzero(p.grad) == 0


def _semihard_batch() -> tuple[torch.Tensor, torch.Tensor]:
    # 16 bits, signed cosine = 1 - 2 * Hamming / 16: a and its positive differ in 4 bits
    # (similarity 0.5), the negatives differ from a in 5 bits (0.375): 0 < 0.5 - 0.375 <= margin
    a = "1111111111111111"
    pos = "0000111111111111"
    neg1 = "1111000001111111"
    neg2 = "1111111100000111"
    p = _codes(a, pos, neg1, neg2)
    return p, torch.tensor([0, 0, 1, 1])


def test_semihard_triplet_positive_with_semihard_triplets():
    margin = 0.25
    crit = SemiHardTriplet(margin=margin)
    p, labels = _semihard_batch()
    z = signed(p)
    sim = torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(z, dim=1).T
    assert float(sim[0, 1]) == pytest.approx(0.5) and float(sim[0, 2]) == pytest.approx(0.375)
    anchors, positives, negatives = crit.miner(z, labels)
    assert len(anchors) > 0
    gap = sim[anchors, positives] - sim[anchors, negatives]
    assert torch.all(gap > 0) and torch.all(gap <= margin + 1e-6)  # semi-hard by definition
    assert torch.all(labels[anchors] == labels[positives])
    assert torch.all(labels[anchors] != labels[negatives])
    loss = crit(p, labels)
    # the triplet margin loss, averaged over the triplets with a non-zero loss
    per = torch.relu(sim[anchors, negatives] - sim[anchors, positives] + margin)
    assert float(loss) > 0
    assert float(loss) == pytest.approx(float(per[per > 0].mean()), rel=1e-5)


def test_semihard_triplet_gradient_step_lowers_loss():
    crit = SemiHardTriplet(margin=0.25)
    p, labels = _semihard_batch()
    p = p.clamp(0.1, 0.9).requires_grad_()
    triplets = crit.miner(signed(p), labels)
    assert len(triplets[0]) > 0
    loss = crit(p, labels, triplets)
    stepped = _sgd_step(p, loss, lr=0.05)
    assert _f(crit(stepped, labels, triplets)) < _f(loss)
    # the mined (and so the reported) loss goes down too
    assert _f(crit(stepped, labels)) < _f(crit(p.detach(), labels))


def test_semihard_triplet_optimiser_step_on_random_codes():
    torch.manual_seed(0)
    crit = SemiHardTriplet(margin=0.25)
    logits = torch.randn(24, 32, requires_grad=True)
    labels = torch.arange(24) % 4
    opt = torch.optim.SGD([logits], lr=0.5)
    triplets = crit.miner(signed(torch.sigmoid(logits)), labels)
    before = crit(torch.sigmoid(logits), labels, triplets)
    assert _f(before) > 0
    opt.zero_grad()
    before.backward()
    opt.step()
    assert _f(crit(torch.sigmoid(logits), labels, triplets)) < _f(before)


# ------------------------------------------------------------------ NT-Xent
def test_contrastive_pairs_lower_when_views_agree():
    torch.manual_seed(0)
    crit = ContrastivePairs(bits=32, projection=16, temperature=0.2)
    p_a = (torch.rand(12, 32) > 0.5).float().clamp(0.05, 0.95)
    flip = torch.rand(12, 32) < 0.1  # a noisy second view: 10% of the bits flipped
    p_b = torch.where(flip, 1 - p_a, p_a)
    shuffled = p_b[torch.roll(torch.arange(12), 1)]  # every item paired with another item
    agree, noisy, mismatched = _f(crit(p_a, p_a)), _f(crit(p_a, p_b)), _f(crit(p_a, shuffled))
    assert agree < mismatched
    assert noisy < mismatched
    assert np.isfinite([agree, noisy, mismatched]).all()


def test_contrastive_pairs_gradient_step_lowers_loss():
    torch.manual_seed(1)
    crit = ContrastivePairs(bits=16, projection=8)
    logits = torch.randn(10, 16, requires_grad=True)
    noisy = (logits + 0.5 * torch.randn(10, 16)).detach()
    opt = torch.optim.SGD([logits, *crit.parameters()], lr=0.1)
    before = crit(torch.sigmoid(logits), torch.sigmoid(noisy))
    opt.zero_grad()
    before.backward()
    opt.step()
    assert _f(crit(torch.sigmoid(logits), torch.sigmoid(noisy))) < _f(before)


# ------------------------------------------------------------------ inter-class triplets
def test_inter_class_triplets_three_labels_positive_in_anchor_cluster():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    clusters = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 0, 1])
    for _ in range(10):  # positives and negatives are drawn at random
        a, p, n = inter_class_triplets(labels, clusters)
        assert a.dtype == p.dtype == n.dtype == torch.long and len(a) > 0
        for i, j, k in zip(a.tolist(), p.tolist(), n.tolist()):
            assert len({int(labels[i]), int(labels[j]), int(labels[k])}) == 3
            assert clusters[j] == clusters[i] and clusters[k] != clusters[i]
    # item 6 (label 0, cluster 2) has a cluster mate of another label (item 7) -> it anchors
    assert 6 in inter_class_triplets(labels, clusters)[0].tolist()


def test_inter_class_triplets_none_when_impossible():
    # two classes: no three-label triplet exists
    a, _, _ = inter_class_triplets(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]))
    assert len(a) == 0
    # one cluster: no negative outside the anchor's cluster
    a, _, _ = inter_class_triplets(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]))
    assert len(a) == 0


def test_class_standardised_clusters_find_modes_shared_across_classes():
    # three classes far apart; inside each, a "bright" and a "dark" mode along feature 1.
    # Removing each class's mean and spread leaves the mode, which k-means finds across classes.
    rng = np.random.default_rng(0)
    feats, labels, modes = [], [], []
    for c, centre in enumerate((0.0, 50.0, 100.0)):
        for mode in (-1.0, 1.0):
            for _ in range(10):
                feats.append([centre + rng.normal(0, 0.1), 3.0 * mode + rng.normal(0, 0.1)])
                labels.append(c)
                modes.append(mode)
    clusters = class_standardised_clusters(np.array(feats), np.array(labels), k=2)
    modes = np.array(modes)
    assert len(set(clusters[modes > 0])) == 1 and len(set(clusters[modes < 0])) == 1
    assert clusters[modes > 0][0] != clusters[modes < 0][0]


def test_nt_xent_equals_pytorch_metric_learning():
    """Our one-matrix NT-Xent gives pml's NTXentLoss value (and is usable at large batches)."""
    from pytorch_metric_learning import losses as pml_losses

    from lookalike.models.losses import nt_xent

    torch.manual_seed(0)
    a = torch.randn(24, 8)
    b = a + 0.3 * torch.randn(24, 8)
    ids = torch.arange(24)
    ref = pml_losses.NTXentLoss(temperature=0.2)(torch.cat([a, b]), torch.cat([ids, ids]))
    assert torch.allclose(nt_xent(a, b, 0.2), ref, atol=1e-5)
    shuffled = nt_xent(a, b[torch.randperm(24)], 0.2)
    assert shuffled > nt_xent(a, b, 0.2)
