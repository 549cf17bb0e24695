"""Dynamic landmarking: salient regions of a large grayscale scene, cropped and classified.

Following the HiRISE landmarks of the PDS Imaging Atlas (Wagstaff et al., "Deep Mars"): a
saliency detector finds regions that stand out from their surroundings, each is cropped with a
30 px border, classified (crater, dark_dune, bright_dune, streak, edge, other), and kept when the
calibrated posterior reaches a threshold.

The detector (``salient_regions``) works on a downsampled map of the scene, built in strips so a
scene of any size is never held as one float array:

1. block means of the valid pixels (nodata, alpha = 0 and large areas of black fill are invalid);
2. per scale ``s`` (Gaussian sigma, full-resolution pixels): a centre-surround difference of
   Gaussians of the intensity, ``|G_s * I - G_3s * I|``, and a centre-surround ratio of gradient
   energy, ``log(G_s * |grad I|^2) - log(G_4s * |grad I|^2)``; smoothing is normalised by the
   valid weight so a data boundary makes no response of its own;
3. each feature map is scaled to robust z-scores (median, MAD) over the valid area and the scene
   saliency is their maximum over features and scales;
4. hysteresis threshold (seed ``z_high``, grow ``z_low``), a closing that joins the ridges of a
   dune field, connected components, a box per component from its pixels at or above half its
   peak, a size floor and ceiling (larger regions are split), non-maximum suppression;
5. each box refined at full resolution in a window of its own (to the pixels of high local
   gradient energy);
6. valid-data boundaries (nodata or black fill against imagery) cut into segments, each one an
   ``edge`` region: HiRISE's edge class is exactly such a crop.

Regions are ``(x0, y0, x1, y1, score)`` in pixels, ``x1``/``y1`` exclusive; the score is the
robust z-score of the region's peak saliency (for an edge, of the step from imagery to fill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lookalike.errors import LookalikeError

DEFAULT_SCALES = (6.0, 12.0, 24.0, 48.0, 96.0)


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of ``salient_regions`` (pixel sizes are at full resolution)."""

    scales: tuple[float, ...] = DEFAULT_SCALES
    z_high: float = 8.0  # a region needs a pixel this salient ...
    z_low: float = 4.0  # ... and grows over pixels above this
    min_size: int = 24  # boxes whose longer side is smaller are dropped
    max_size: int = 768  # larger regions are split into boxes of at most this side
    max_regions: int | None = 500  # the most salient ones are kept
    nms_overlap: float = 0.5  # intersection over the smaller box that suppresses a box
    edges: bool = True  # valid-data boundaries as regions
    edge_size: int = 256  # side of the boundary segments that make edge regions
    fill_value: float | None = 0  # value of black fill around imagery (None: no fill)
    min_fill: int = 4096  # fill areas smaller than this (pixels) are dark imagery
    max_map_pixels: int = 1 << 20  # the saliency map is downsampled to at most this many pixels
    refine: bool = True  # refine boxes at full resolution
    read_pixels: int = 1 << 22  # the map is built from strips of about this many pixels

    def __post_init__(self):
        if not self.scales or min(self.scales) <= 0:
            raise LookalikeError(f"saliency scales must be positive, got {self.scales}")
        if self.z_low > self.z_high:
            raise LookalikeError(f"z_low ({self.z_low}) must not exceed z_high ({self.z_high})")
        if not 1 <= self.min_size <= self.max_size:
            raise LookalikeError(f"need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.max_regions is not None and self.max_regions < 1:
            raise LookalikeError(f"max_regions must be at least 1, got {self.max_regions}")
        if self.edge_size < 2 or self.max_map_pixels < 1024:
            raise LookalikeError("edge_size must be >= 2 and max_map_pixels >= 1024")


# ------------------------------------------------------------------ scenes
class ArrayScene:
    """A scene held in memory: ``gray`` (H, W) and optional ``valid`` (H, W) bool."""

    def __init__(self, gray: np.ndarray, valid: np.ndarray | None = None):
        gray = np.asarray(gray)
        if gray.ndim != 2:
            raise LookalikeError(f"expected a 2-d grayscale image, got shape {gray.shape}")
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != gray.shape:
                raise LookalikeError(
                    f"valid mask of shape {valid.shape} does not match the image {gray.shape}"
                )
        self.gray, self.valid = gray, valid
        self.shape = gray.shape

    def read(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        g = self.gray[y0:y1, x0:x1]
        v = np.ones(g.shape, bool) if self.valid is None else self.valid[y0:y1, x0:x1]
        finite = np.isfinite(g) if g.dtype.kind == "f" else None
        return g, (v if finite is None else v & finite)


def _block_reduce(a: np.ndarray, f: int) -> np.ndarray:
    """Sums over f x f blocks as float32 (the last block of a row or column may be smaller)."""
    a = np.asarray(a, dtype=np.float32)
    if f == 1:
        return a
    h, w = a.shape
    ph, pw = -h % f, -w % f
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)))
    return a.reshape((h + ph) // f, f, (w + pw) // f, f).sum(axis=(1, 3), dtype=np.float32)


def _block_counts(h: int, w: int, f: int) -> np.ndarray:
    """Pixels in each f x f block of an h x w array."""
    rows = np.minimum(f, h - np.arange(0, h, f)).astype(np.float32)
    cols = np.minimum(f, w - np.arange(0, w, f)).astype(np.float32)
    return np.outer(rows, cols)


def overview(
    scene, factor: int, fill_value: float | None = 0, strip_pixels: int = 1 << 22, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block means of the valid non-fill pixels, valid fraction and fill fraction of f x f blocks.

    The scene is read in strips of about ``strip_pixels`` pixels, so memory is bounded by one
    strip whatever the scene's size.
    """
    from tqdm.auto import tqdm

    h, w = scene.shape
    f = int(factor)
    hs, ws = -(-h // f), -(-w // f)
    strip_rows = max(1, strip_pixels // (f * f * ws))
    mean = np.zeros((hs, ws), np.float32)
    vfrac = np.zeros((hs, ws), np.float32)
    ffrac = np.zeros((hs, ws), np.float32)
    starts = range(0, hs, strip_rows)
    for r0 in tqdm(starts, desc="saliency map", unit="strip", disable=not progress or len(starts) < 4):
        r1 = min(hs, r0 + strip_rows)
        g, v = scene.read(r0 * f, min(h, r1 * f), 0, w)
        count = _block_counts(g.shape[0], g.shape[1], f)
        vfrac[r0:r1] = _block_reduce(v.astype(np.float32), f) / count
        if fill_value is not None:
            fill = v & (g == fill_value)
            ffrac[r0:r1] = _block_reduce(fill.astype(np.float32), f) / count
            v = v & ~fill  # the mean is of imagery; an all-fill block's mean is the fill value
        nv = _block_reduce(v.astype(np.float32), f)
        total = _block_reduce(np.where(v, g, 0).astype(np.float32), f)
        mean[r0:r1] = np.where(nv > 0, total / np.maximum(nv, 1.0), fill_value or 0)
    return mean, vfrac, ffrac


# ------------------------------------------------------------------ saliency map
def _interpolation_matrix(n: int, m: int, d: int):
    """Sparse (n, m) matrix of linear interpolation from m block centres (blocks of d) to n pixels."""
    from scipy import sparse

    pos = np.clip((np.arange(n) + 0.5) / d - 0.5, 0, m - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), max(m - 2, 0))
    frac = pos - lo if m > 1 else np.zeros(n)
    rows = np.repeat(np.arange(n), 2)
    cols = np.stack([lo, np.minimum(lo + 1, m - 1)], 1).ravel()
    vals = np.stack([1.0 - frac, frac], 1).ravel()
    return sparse.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, m))


def _upsample(small: np.ndarray, shape: tuple[int, int], d: int) -> np.ndarray:
    """Bilinear upsampling of a block-reduced map back to ``shape`` (separable, sparse)."""
    ry = _interpolation_matrix(shape[0], small.shape[0], d)
    rx = _interpolation_matrix(shape[1], small.shape[1], d)
    return np.asarray((rx @ (ry @ small).T).T, dtype=np.float32)


def _nsmooth(img: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing normalised by the valid weight; large sigmas on a coarser grid."""
    d = max(1, int(sigma // 4))
    if d > 1:
        small_w = _block_reduce(weight, d)
        small = _block_reduce(img * weight, d)
        num = ndi.gaussian_filter(small, sigma / d, mode="reflect")
        den = ndi.gaussian_filter(small_w, sigma / d, mode="reflect")
        return _upsample(num / np.maximum(den, 1e-6), img.shape, d)
    num = ndi.gaussian_filter(img * weight, sigma, mode="reflect")
    den = ndi.gaussian_filter(weight, sigma, mode="reflect")
    return num / np.maximum(den, 1e-6)


def _robust_z(m: np.ndarray, mask: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """(m - median) / (1.4826 MAD) over the valid pixels: signed robust z-scores.

    ``floor`` bounds the spread from below, so rounding noise on a featureless scene never
    scores as salient."""
    vals = m[mask]
    if vals.size < 16:
        return np.zeros_like(m)
    vals = vals[:: max(1, vals.size // 250_000)]  # a quarter million samples pin the median down
    med = np.median(vals)
    spread = max(1.4826 * float(np.median(np.abs(vals - med))), floor)
    return ((m - med) / spread).astype(np.float32)


def saliency_map(img: np.ndarray, weight: np.ndarray, scales: tuple[float, ...]) -> np.ndarray:
    """Robust z-score saliency (max over features and scales) of a map; scales in map pixels.

    Features are scored against their own spread over the scene (signed, before taking the
    magnitude), so a scene of uniform texture has no salient part however busy it is.
    """
    img = np.asarray(img, np.float32)
    weight = np.asarray(weight, np.float32)
    mask = weight > 0.5
    out = np.zeros(img.shape, np.float32)
    if not mask.any():
        return out
    lo, hi = np.percentile(img[mask], [0.1, 99.9])
    contrast_floor = max(1e-3 * float(hi - lo), 1e-6 * max(abs(float(hi)), abs(float(lo))), 1e-9)
    for s in scales:
        centre = _nsmooth(img, weight, s)
        dog = np.abs(_robust_z(centre - _nsmooth(img, weight, 3.0 * s), mask, contrast_floor))
        fine = _nsmooth(img, weight, max(s / 2.0, 0.7))
        gy, gx = np.gradient(fine)
        local = _nsmooth(gx * gx + gy * gy, weight, s)
        eps = 1e-3 * float(np.median(local[mask])) + 1e-9
        ratio = np.log(local + eps) - np.log(_nsmooth(local, weight, 4.0 * s) + eps)
        np.maximum(out, dog, out=out)
        np.maximum(out, _robust_z(ratio, mask, 0.05), out=out)  # 5% in energy at least
    out[~mask] = 0.0
    return out


def box_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, (len(a), len(b)), boxes x0, y0, x1, y1."""
    a, b = np.asarray(a, float)[:, None, :4], np.asarray(b, float)[None, :, :4]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return iw * ih / np.maximum(np.minimum(area_a, area_b), 1e-9)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union, (len(a), len(b))."""
    a, b = np.asarray(a, float)[:, None, :4], np.asarray(b, float)[None, :, :4]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def non_max_suppression(boxes: np.ndarray, overlap: float) -> np.ndarray:
    """Boxes (M, 5) by falling score, dropping each that overlaps a kept one by more than
    ``overlap`` of the smaller box's area."""
    boxes = np.asarray(boxes, float).reshape(-1, 5)
    order = np.argsort(-boxes[:, 4], kind="stable")
    kept: list[int] = []
    for i in order:
        if kept and box_overlap(boxes[i : i + 1], boxes[kept]).max() > overlap:
            continue
        kept.append(int(i))
    return boxes[kept]


def _component_boxes(z: np.ndarray, cfg: DetectorConfig, f: int) -> list[tuple]:
    """Boxes (map pixels) of the salient components of a z-score map, split at max_size."""
    low = z > cfg.z_low
    smallest = max(1, int(round(min(cfg.scales) / f)))
    # join the ridges of a dune field and the rim segments of a crater into one region
    low = ndi.binary_closing(low, structure=np.ones((3, 3), bool), iterations=smallest) & (z > 0)
    labels, n = ndi.label(low)
    if n == 0:
        return []
    boxes = []
    max_side = max(1, cfg.max_size // f)
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        peak = float(z[sl][labels[sl] == lab].max())
        if peak < cfg.z_high:
            continue
        part = (labels[sl] == lab) & (z[sl] >= max(cfg.z_low, 0.5 * peak))
        ys, xs = np.nonzero(part)
        if not len(ys):
            continue
        y0, x0 = sl[0].start + ys.min(), sl[1].start + xs.min()
        y1, x1 = sl[0].start + ys.max() + 1, sl[1].start + xs.max() + 1
        ny, nx = -(-(y1 - y0) // max_side), -(-(x1 - x0) // max_side)
        if ny * nx == 1:
            boxes.append((x0, y0, x1, y1, peak))
            continue
        # a large region (a wide dune field): one box per cell of an even grid over it, each
        # shrunk to the part of the region inside it
        ys_cut = np.linspace(y0, y1, ny + 1).round().astype(int)
        xs_cut = np.linspace(x0, x1, nx + 1).round().astype(int)
        for ya, yb in zip(ys_cut[:-1], ys_cut[1:]):
            for xa, xb in zip(xs_cut[:-1], xs_cut[1:]):
                cell = labels[ya:yb, xa:xb] == lab
                if cell.mean() < 0.1:
                    continue
                cy, cx = np.nonzero(cell)
                boxes.append(
                    (
                        xa + cx.min(),
                        ya + cy.min(),
                        xa + cx.max() + 1,
                        ya + cy.max() + 1,
                        float(z[ya:yb, xa:xb][cell].max()),
                    )
                )
    return boxes


def _edge_boxes(valid: np.ndarray, mean: np.ndarray, cfg: DetectorConfig, f: int) -> list[tuple]:
    """Segments of the valid-data boundary (map pixels), scored by the step to the fill."""
    inner = ndi.binary_erosion(valid, structure=np.ones((3, 3), bool), border_value=1)
    boundary = valid & ~inner
    if not boundary.any():
        return []
    vals = mean[valid]
    med = float(np.median(vals))
    spread = max(1.4826 * float(np.median(np.abs(vals - med))), 1e-6)
    cell = max(2, cfg.edge_size // f)
    half = cell // 2
    h, w = valid.shape
    boxes = []
    for y in range(0, h, cell):
        for x in range(0, w, cell):
            ys, xs = np.nonzero(boundary[y : y + cell, x : x + cell])
            if len(ys) < max(2, cell // 4):
                continue
            cy, cx = y + int(np.median(ys)), x + int(np.median(xs))
            x0, y0 = max(0, cx - half), max(0, cy - half)
            x1, y1 = min(w, x0 + cell), min(h, y0 + cell)
            x0, y0 = max(0, x1 - cell), max(0, y1 - cell)
            inside = valid[y0:y1, x0:x1]
            if inside.mean() < 0.2 or inside.mean() > 0.95:
                continue  # a sliver of imagery or of fill is not a readable edge
            level = float(np.median(mean[y0:y1, x0:x1][inside]))
            boxes.append((x0, y0, x1, y1, abs(level) / spread))
    return boxes


def _refine(scene, box: np.ndarray, f: int, fill_value: float | None = None) -> np.ndarray:
    """Tighten a box at full resolution to the pixels near it whose local gradient energy is a
    quarter of the way or more from the window's median to its peak."""
    h, w = scene.shape
    x0, y0, x1, y1, score = box
    pad = 2 * f
    wx0, wy0 = int(max(0, x0 - pad)), int(max(0, y0 - pad))
    wx1, wy1 = int(min(w, x1 + pad)), int(min(h, y1 + pad))
    g, v = scene.read(wy0, wy1, wx0, wx1)
    if fill_value is not None:
        v = v & (g != fill_value)  # the scene has black fill: its step is an edge, not this box
    if not v.any():
        return box
    g = np.where(v, g, np.median(g[v])).astype(np.float32)
    sm = ndi.gaussian_filter(g, max(1.0, f / 2.0))
    gy, gx = np.gradient(sm)
    energy = ndi.gaussian_filter(gx * gx + gy * gy, max(1.0, float(f)))
    energy[~v] = 0
    base, peak = float(np.median(energy)), float(energy.max())
    if peak <= base:
        return box
    hot = energy >= base + 0.25 * (peak - base)
    labels, n = ndi.label(hot)
    core = labels[int(y0 - wy0) : int(y1 - wy0), int(x0 - wx0) : int(x1 - wx0)]
    ids = np.unique(core[core > 0])
    if not len(ids):
        return box
    ys, xs = np.nonzero(np.isin(labels, ids))
    nx0, ny0, nx1, ny1 = wx0 + xs.min(), wy0 + ys.min(), wx0 + xs.max() + 1, wy0 + ys.max() + 1
    # never drift beyond the window the map allowed, and keep at least half of the map box
    if (nx1 - nx0) * (ny1 - ny0) < 0.25 * (x1 - x0) * (y1 - y0):
        return box
    return np.array([nx0, ny0, nx1, ny1, score], float)


def detect(scene, config: DetectorConfig | None = None, progress: bool = False) -> np.ndarray:
    """Salient regions (M, 5) of a scene object (``shape`` and ``read(y0, y1, x0, x1)``)."""
    cfg = config or DetectorConfig()
    h, w = scene.shape
    if h < 1 or w < 1:
        raise LookalikeError(f"cannot look for landmarks in an empty image of shape {scene.shape}")
    f = max(1, math.ceil(math.sqrt(h * w / cfg.max_map_pixels)))
    mean, vfrac, ffrac = overview(scene, f, cfg.fill_value, cfg.read_pixels, progress)
    fill = ffrac > 0.5
    if fill.any():
        labels, n = ndi.label(fill)
        sizes = ndi.sum(fill, labels, index=np.arange(1, n + 1)) * f * f
        fill = np.isin(labels, np.flatnonzero(sizes >= cfg.min_fill) + 1)
    # blocks on the rim of a fill area count only their imagery
    near_fill = ndi.binary_dilation(fill, structure=np.ones((3, 3), bool)) if fill.any() else fill
    weight = np.clip(vfrac - ffrac * near_fill, 0.0, 1.0).astype(np.float32)
    valid = weight > 0.5
    if valid.sum() < 16:
        return np.zeros((0, 5))
    scales = tuple(s / f for s in cfg.scales if s / f >= 0.7)
    if not scales:
        raise LookalikeError(
            f"no saliency scale fits a map downsampled {f}x (scales {cfg.scales}); "
            "give larger scales or a larger max_map_pixels"
        )
    z = saliency_map(mean, weight, scales)
    boxes = [np.array(b, float) for b in _component_boxes(z, cfg, f)]
    boxes = [np.array([b[0] * f, b[1] * f, min(w, b[2] * f), min(h, b[3] * f), b[4]]) for b in boxes]
    if cfg.refine and f > 1:
        refined = [_refine(scene, b, f, cfg.fill_value if fill.any() else None) for b in boxes]
        boxes = [r if max(r[2] - r[0], r[3] - r[1]) <= cfg.max_size else b for r, b in zip(refined, boxes)]
    if cfg.edges:
        boxes += [
            np.array([b[0] * f, b[1] * f, min(w, b[2] * f), min(h, b[3] * f), b[4]])
            for b in _edge_boxes(valid, mean, cfg, f)
        ]
    out = np.array(boxes, float).reshape(-1, 5)
    side = np.maximum(out[:, 2] - out[:, 0], out[:, 3] - out[:, 1])
    out = out[side >= cfg.min_size]
    out = non_max_suppression(out, cfg.nms_overlap)
    if cfg.max_regions is not None:
        out = out[: cfg.max_regions]
    return out


def salient_regions(gray: np.ndarray, valid: np.ndarray | None = None, **settings) -> np.ndarray:
    """Salient regions of a grayscale image: (M, 5) ``x0, y0, x1, y1, score``, best first.

    ``valid`` marks imagery (False: nodata); black fill (``fill_value``, default 0) in areas of
    at least ``min_fill`` pixels counts as invalid too. ``settings`` are ``DetectorConfig``
    fields. The image is read in strips, so ``gray`` may be a memory-mapped array.
    """
    return detect(ArrayScene(gray, valid), DetectorConfig(**settings))
