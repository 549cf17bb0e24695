"""Losses for learned hashing, small and composable; metric learning from pytorch-metric-learning.

All take code probabilities ``p`` in (0, 1) of shape (B, K) unless stated.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import distances, losses, miners


def push_loss(p: torch.Tensor) -> torch.Tensor:
    """Mean of ``0.25 - (p - 0.5)^2``: 0.25 at p = 0.5, 0 at p in {0, 1}.

    MIRS writes it as ``-mean((p - 0.5)^2)``; minimising either pushes outputs away from 0.5,
    this form is offset to be non-negative.
    """
    return (0.25 - (p - 0.5) ** 2).mean()


def balance_loss(p: torch.Tensor) -> torch.Tensor:
    """Mean over bits of ``(batch mean of p - 0.5)^2``: each bit on for half of the items."""
    return ((p.mean(dim=0) - 0.5) ** 2).mean()


def signed(p: torch.Tensor) -> torch.Tensor:
    """Probabilities to [-1, 1]: the cosine of two binary codes is 1 - 2 * Hamming / K."""
    return 2.0 * p - 1.0


class SemiHardTriplet(torch.nn.Module):
    """Online triplet loss with semi-hard mining, on signed codes with cosine similarity."""

    def __init__(self, margin: float = 0.25):
        super().__init__()
        distance = distances.CosineSimilarity()
        self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=distance)
        self.loss = losses.TripletMarginLoss(margin=margin, distance=distance)

    def forward(self, p: torch.Tensor, labels: torch.Tensor, indices_tuple=None) -> torch.Tensor:
        z = signed(p)
        if indices_tuple is None:
            indices_tuple = self.miner(z, labels)
        return self.loss(z, labels, indices_tuple)


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) for embeddings of two views, row i of each being the same item.

    Same value as pytorch-metric-learning's ``NTXentLoss`` with pair labels (a test checks it),
    computed as one cross-entropy over the 2B x 2B similarity matrix: pml materialises every
    (positive, negative) pair, O(B^3) memory, which takes seconds per step at B = 256 on a CPU.
    """
    z = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=1)
    sim = z @ z.T / temperature
    n = len(z_a)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return torch.nn.functional.cross_entropy(sim, target)


class ContrastivePairs(torch.nn.Module):
    """NT-Xent (SimCLR) on a projection of the signed codes of two views of each item."""

    def __init__(self, bits: int, projection: int = 128, temperature: float = 0.2):
        super().__init__()
        self.projection = torch.nn.Sequential(torch.nn.Linear(bits, bits), torch.nn.ReLU(),
                                              torch.nn.Linear(bits, projection))
        self.temperature = temperature

    def forward(self, p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
        return nt_xent(self.projection(signed(p_a)), self.projection(signed(p_b)), self.temperature)


def inter_class_triplets(labels: torch.Tensor, nearest_class: dict[int, int],
                         farthest_class: dict[int, int]) -> tuple[torch.Tensor, ...]:
    """(anchor, positive, negative) indices whose members have three different labels.

    The positive comes from the class whose (standardised) feature centroid is nearest to the
    anchor's class, the negative from the farthest: class-level neighbourhoods survive hashing.
    """
    anchors, positives, negatives = [], [], []
    by_label: dict[int, torch.Tensor] = {int(c): torch.nonzero(labels == c).flatten()
                                         for c in labels.unique()}
    for i, c in enumerate(labels.tolist()):
        pos_c, neg_c = nearest_class.get(c), farthest_class.get(c)
        if pos_c is None or neg_c is None or pos_c not in by_label or neg_c not in by_label \
                or len({c, pos_c, neg_c}) < 3:  # e.g. two classes: nearest is farthest
            continue
        pos = by_label[pos_c][torch.randint(len(by_label[pos_c]), (1,))]
        neg = by_label[neg_c][torch.randint(len(by_label[neg_c]), (1,))]
        anchors.append(i)
        positives.append(int(pos))
        negatives.append(int(neg))
    as_tensor = lambda v: torch.tensor(v, dtype=torch.long, device=labels.device)  # noqa: E731
    return as_tensor(anchors), as_tensor(positives), as_tensor(negatives)
