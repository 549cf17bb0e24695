"""Images -> float features with a backbone, in batches, channels_last, with a progress bar."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from models.backbones import Backbone, create_backbone


def fuse_batchnorm(backbone: Backbone) -> Backbone:
    """A copy of ``backbone`` with every BatchNorm folded into the convolution before it
    (inference only): one pass less over each feature map, same outputs up to rounding."""
    from torch.fx.experimental.optimization import fuse

    try:
        return Backbone(fuse(backbone.body, inplace=False), backbone.spec).eval()
    except Exception:  # a body torch.fx cannot trace runs unfused, just slower
        return backbone


class Encoder:
    """Batched feature extraction for uint8 RGB images of any size.

    ``image_size`` resizes inputs (bilinear, antialiased) before the backbone; ``None`` feeds them
    at their own size (tiles are fed at 128 px).
    """

    def __init__(self, backbone: str | Backbone = "efficientnet_lite0", weights: str | None = None,
                 image_size: int | None = None, batch_size: int = 64, device: str | None = None,
                 optimize: bool = True):
        self.model = create_backbone(backbone, weights) if isinstance(backbone, str) else backbone
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = self.model.eval()
        if optimize:
            self.model = fuse_batchnorm(self.model)
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self.optimize = optimize
        self.image_size = image_size
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return self.model.spec.name

    @property
    def dim(self) -> int:
        return self.model.spec.num_features

    def describe(self) -> dict:
        spec = self.model.spec
        return dict(name=spec.name, features=spec.num_features, weights_sha256=spec.weights_sha256,
                    image_size=self.image_size)

    @torch.inference_mode()
    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, D) float32, in batches of ``batch_size``."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) images, got {images.shape}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
            x = batch.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            if self.image_size and x.shape[-1] != self.image_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                  antialias=True, align_corners=False)
            x = x.contiguous(memory_format=torch.channels_last)
            out[start:start + len(batch)] = self.model(x).float().cpu().numpy()
        return out

    def features_stream(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Features for a stream of single images, computed ``batch_size`` at a time."""
        batch: list[np.ndarray] = []
        for image in images:
            batch.append(image)
            if len(batch) == self.batch_size:
                yield from self.features(np.stack(batch))
                batch = []
        if batch:
            yield from self.features(np.stack(batch))
