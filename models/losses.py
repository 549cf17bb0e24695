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


def similarity_matching_loss(
    p: torch.Tensor, features: torch.Tensor, same: torch.Tensor | None = None, blend: float = 0.0
) -> torch.Tensor:
    """Mean squared gap between the codes' cosine and the features' cosine, over all pairs.

    ``features`` are centred (by their own domain's mean, so that the target measures how two
    items of one kind of imagery differ, not how far that kind sits from the others). With
    binary codes the code cosine is ``1 - 2 * Hamming / K``: Hamming ranks follow feature ranks.
    With ``same`` (B, B: 1 where two items share a class) the target is
    ``(1 - blend) * cosine + blend * same``.
    """
    z = signed(p)
    x = torch.nn.functional.normalize(features, dim=1)
    target = x @ x.T
    if same is not None:
        target = (1.0 - blend) * target + blend * same
    return ((z @ z.T / z.shape[1] - target) ** 2).mean()


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
        self.projection = torch.nn.Sequential(
            torch.nn.Linear(bits, bits), torch.nn.ReLU(), torch.nn.Linear(bits, projection)
        )
        self.temperature = temperature

    def forward(self, p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
        return nt_xent(self.projection(signed(p_a)), self.projection(signed(p_b)), self.temperature)


def inter_class_triplets(
    labels: torch.Tensor, clusters: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, ...]:
    """(anchor, positive, negative) indices whose three members have three different labels.

    ``clusters`` are k-means clusters of class-standardised features (see
    ``models.training.class_standardised_clusters``): what is left of an item once its class
    mean and spread are removed, i.e. its appearance mode (lighting, scale, texture). The
    positive shares the anchor's cluster, the negative does not, so the code also orders items
    across classes by appearance. Anchors without such a pair in the batch are skipped.
    """
    labels, clusters = labels.view(-1), clusters.view(-1)
    other_label = labels[:, None] != labels[None, :]
    same_cluster = clusters[:, None] == clusters[None, :]
    pos_ok = other_label & same_cluster
    anchors, positives, negatives = [], [], []
    for i in torch.nonzero(pos_ok.any(1)).flatten().tolist():
        cand = torch.nonzero(pos_ok[i]).flatten()
        j = int(cand[torch.randint(len(cand), (1,), generator=generator)])
        neg = torch.nonzero(other_label[i] & other_label[j] & ~same_cluster[i]).flatten()
        if len(neg) == 0:
            continue
        anchors.append(i)
        positives.append(j)
        negatives.append(int(neg[torch.randint(len(neg), (1,), generator=generator)]))
    as_tensor = lambda v: torch.tensor(v, dtype=torch.long, device=labels.device)  # noqa: E731
    return as_tensor(anchors), as_tensor(positives), as_tensor(negatives)
