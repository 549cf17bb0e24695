"""Hashing heads: small networks from backbone features to K sigmoid units, thresholded at 0.5.

- ``MIRSHead`` (MIRS, paper 3): three fully connected layers with LeakyReLU, sigmoid output.
- ``NoisyClassifierHead`` (Descartes, paper 1): a sigmoid code layer pushed to binary by noise
  added before the sigmoid during training only, then a linear classifier on the code.
- ``AutoencoderHead`` (Descartes, paper 1): D-1024-512-1024-D trained to reconstruct features
  without labels; the 512 sigmoid code units (noisy in training) are the bits.
"""

from __future__ import annotations

import torch
from torch import nn


class MIRSHead(nn.Module):
    """features (B, D) -> code probabilities (B, bits) in (0, 1)."""

    def __init__(self, in_features: int, bits: int, hidden: tuple[int, int] = (512, 256), slope: float = 0.2):
        super().__init__()
        self.config = dict(kind="mirs", in_features=in_features, bits=bits, hidden=list(hidden), slope=slope)
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden[0]),
            nn.LeakyReLU(slope),
            nn.Linear(hidden[0], hidden[1]),
            nn.LeakyReLU(slope),
            nn.Linear(hidden[1], bits),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def noisy_sigmoid(z: torch.Tensor, noise_std: float, training: bool) -> torch.Tensor:
    """Sigmoid of ``z``, with Gaussian noise added before it in training only.

    Noise makes values near 0.5 unreliable downstream, so training drives the pre-activations
    far from zero and the sigmoid close to 0 or 1: the code becomes binary.
    """
    if training:
        z = z + noise_std * torch.randn_like(z)
    return torch.sigmoid(z)


class NoisyClassifierHead(nn.Module):
    """Code layer with training-time noise, plus a classifier used only for training."""

    def __init__(self, in_features: int, n_classes: int, bits: int = 512, noise_std: float = 4.0):
        super().__init__()
        self.config = dict(
            kind="noisy-classifier",
            in_features=in_features,
            bits=bits,
            noise_std=noise_std,
            n_classes=n_classes,
        )
        self.code = nn.Linear(in_features, bits)
        self.classifier = nn.Linear(bits, n_classes)
        self.noise_std = noise_std

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return noisy_sigmoid(self.code(x), self.noise_std, self.training)


class SimilarityHead(nn.Module):
    """A sigmoid code layer with one linear classifier per labelled set (training only).

    Trained to keep the features' neighbourhoods on unlabelled images of every domain and to
    separate the classes of the labelled sets (``models.training.train_similarity_hash``).
    """

    def __init__(
        self,
        in_features: int,
        bits: int,
        n_classes: tuple[int, ...] = (),
        hidden: int = 0,
        slope: float = 0.2,
    ):
        super().__init__()
        self.config = dict(
            kind="similarity",
            in_features=in_features,
            bits=bits,
            n_classes=list(n_classes),
            hidden=hidden,
            slope=slope,
        )
        self.code = (
            nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(slope), nn.Linear(hidden, bits))
            if hidden
            else nn.Linear(in_features, bits)
        )
        self.classifiers = nn.ModuleList(nn.Linear(bits, n) for n in n_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.code(x))


class AutoencoderHead(nn.Module):
    """D-1024-512-1024-D autoencoder; the 512-unit sigmoid layer is the code."""

    def __init__(self, in_features: int, bits: int = 512, hidden: int = 1024, noise_std: float = 4.0):
        super().__init__()
        self.config = dict(
            kind="autoencoder", in_features=in_features, bits=bits, hidden=hidden, noise_std=noise_std
        )
        self.encoder = nn.Sequential(
            nn.Linear(in_features, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, bits)
        )
        self.decoder = nn.Sequential(
            nn.Linear(bits, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, in_features)
        )
        self.noise_std = noise_std

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return noisy_sigmoid(self.encoder(x), self.noise_std, self.training)

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(codes)
