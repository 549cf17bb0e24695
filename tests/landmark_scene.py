"""A synthetic Mars scene for the landmark tests: textured noise with planted craters, a dune field
and black fill beyond a slanted boundary, and the geometry the tests check against.

A plain module, not a conftest: tests/models/test_saliency.py (the detector) and
tests/workflows/test_landmarks.py (landmarks of a raster) import it by name; the ``scene`` and
``regions`` fixtures built on it are in tests/conftest.py.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SIZE = 1500
CRATERS = ((300, 300, 45), (800, 250, 70), (350, 900, 60), (900, 1150, 40))  # cx, cy, radius
DUNES = (700, 600, 1050, 850)  # x0, y0, x1, y1
FILL_X, FILL_SLOPE, FILL_Y = 1250.0, 0.15, 750.0  # black fill where x > FILL_X + (y - FILL_Y) * slope


def background(rng, size: int) -> np.ndarray:
    """Textured noise: smooth undulations at a few scales plus pixel noise, mean 0, std ~7."""
    out = rng.standard_normal((size, size)).astype(np.float32) * 3.0
    for step, amp in ((4, 3.0), (16, 4.0), (64, 4.0)):
        small = rng.standard_normal((size // step + 2, size // step + 2)).astype(np.float32)
        out += amp * ndi.zoom(small, step, order=1)[:size, :size]
    return out


def synthetic_scene(seed: int = 0) -> np.ndarray:
    """The planted scene as uint8 (0 is the black fill)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    img = 120.0 + background(rng, SIZE)
    for cx, cy, r in CRATERS:
        sl = (slice(cy - 2 * r, cy + 2 * r), slice(cx - 2 * r, cx + 2 * r))
        d = np.hypot(xx[sl] - cx, yy[sl] - cy) / r
        height = np.where(d < 1, d**2 - 1, 0) * 0.6 + 0.35 * np.exp(-(((d - 1) / 0.15) ** 2))
        gx = np.gradient(height * r, axis=1)
        img[sl] += -60.0 * gx + 25.0 * np.exp(-(((d - 1) / 0.1) ** 2))  # shaded bowl, bright rim
    x0, y0, x1, y1 = DUNES
    inside = ndi.gaussian_filter(((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)).astype(np.float32), 6)
    phase = (xx * 0.94 + yy * 0.34) / 24.0  # asymmetric ridges, 24 px apart
    img += inside * ((phase - np.floor(phase)) ** 3 * 2 - 1) * 45.0
    img = np.clip(img, 1, 255)
    img[xx > FILL_X + (yy - FILL_Y) * FILL_SLOPE] = 0
    return img.astype(np.uint8)


def fill_x(y):
    return FILL_X + (np.asarray(y, float) - FILL_Y) * FILL_SLOPE


def crater_box(cx, cy, r):
    return np.array([cx - r, cy - r, cx + r, cy + r], float)


def is_edge_box(b) -> bool:
    """The valid-data boundary runs through the box."""
    ys = np.linspace(b[1], b[3], 9)
    return bool(np.any((fill_x(ys) > b[0]) & (fill_x(ys) < b[2])))
