"""Domain-specific group whitening (MIRS option; after Roy et al., "Unsupervised Domain
Adaptation using Feature-Whitening and Consensus Loss", CVPR 2019).

Features are split into groups of ``group_size`` channels; each group is whitened (ZCA) with the
mean and covariance of its own domain: source (labelled training data) and target (unlabelled
data the codes will index). Both domains then reach the hashing layers with the same first and
second moments. At inference the target statistics are used.
"""

from __future__ import annotations

import torch
from torch import nn

from lookalike.errors import OptionError

SOURCE, TARGET = 0, 1


class GroupWhitening(nn.Module):
    def __init__(self, num_features: int, group_size: int = 32, momentum: float = 0.1, eps: float = 1e-3):
        super().__init__()
        if group_size <= 0 or num_features % group_size:
            raise OptionError(f"group size {group_size} must divide the {num_features} features")
        self.groups, self.group_size = num_features // group_size, group_size
        self.momentum, self.eps = momentum, eps
        eye = torch.eye(group_size).expand(self.groups, group_size, group_size)
        self.register_buffer("running_mean", torch.zeros(2, num_features))
        self.register_buffer("running_cov", eye.unsqueeze(0).repeat(2, 1, 1, 1).clone())

    def _whitener(self, cov: torch.Tensor) -> torch.Tensor:
        """ZCA matrices (G, g, g): cov^(-1/2) of each group."""
        eye = torch.eye(self.group_size, device=cov.device)
        evals, evecs = torch.linalg.eigh(cov + self.eps * eye)
        return evecs @ torch.diag_embed(evals.clamp_min(self.eps).rsqrt()) @ evecs.transpose(-1, -2)

    def forward(self, x: torch.Tensor, domain: int = TARGET) -> torch.Tensor:
        b = len(x)
        if self.training and b > 1:
            mean = x.mean(0)
            xc = (x - mean).view(b, self.groups, self.group_size)
            cov = torch.einsum("bgi,bgj->gij", xc, xc) / (b - 1)
            with torch.no_grad():
                self.running_mean[domain].lerp_(mean, self.momentum)
                self.running_cov[domain].lerp_(cov, self.momentum)
        else:
            mean, cov = self.running_mean[domain], self.running_cov[domain]
            xc = (x - mean).view(b, self.groups, self.group_size)
        return torch.einsum("gij,bgj->bgi", self._whitener(cov), xc).reshape(b, -1)

    def affine(self, domain: int = TARGET) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, mean) with ``forward(x) == A @ (x - mean)`` in eval mode: A is block diagonal."""
        blocks = self._whitener(self.running_cov[domain])
        return torch.block_diag(*blocks), self.running_mean[domain].clone()


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of code probabilities: low when target codes are confident bits."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log()).mean()
