"""Image augmentations for contrastive training: random crop, 90-degree rotations, flips, noise.

Orbital images have no preferred orientation, so rotations and flips give views of the same
place; crops and sensor-like Gaussian noise make the code robust to framing and noise.
"""

from __future__ import annotations

import numpy as np


def augment(
    image: np.ndarray, rng: np.random.Generator, min_crop: float = 0.6, noise_std: float = 8.0
) -> np.ndarray:
    """One random view of an (H, W, 3) uint8 image, same shape and dtype."""
    from PIL import Image

    h, w = image.shape[:2]
    side = rng.uniform(min_crop, 1.0)
    ch, cw = max(8, int(h * side)), max(8, int(w * side))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = Image.fromarray(image[y : y + ch, x : x + cw]).resize((w, h), Image.BILINEAR)
    view = np.rot90(np.asarray(crop), k=int(rng.integers(4)))
    if rng.random() < 0.5:
        view = view[:, ::-1]
    noisy = view.astype(np.float32) + rng.normal(0.0, noise_std, view.shape)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
