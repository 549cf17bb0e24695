"""The landmark detector (lookalike.models.saliency) on a synthetic Mars scene with planted craters,
a dune field and black fill: recall, tight boxes, edges, false positives, strips, bad input.

The scene is tests/landmark_scene.py; the ``scene`` and ``regions`` fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from landmark_scene import CRATERS, DUNES, SIZE, background, crater_box, fill_x, is_edge_box

from lookalike.errors import LookalikeError
from lookalike.models.saliency import ArrayScene, DetectorConfig, box_iou, detect, salient_regions


def test_planted_craters_and_dunes_found_with_tight_boxes(regions):
    for cx, cy, r in CRATERS:
        iou = box_iou(crater_box(cx, cy, r)[None], regions)[0]
        best = regions[int(iou.argmax())]
        centre = ((best[0] + best[2]) / 2, (best[1] + best[3]) / 2)
        # tolerance: IoU >= 0.6 and the centre within a quarter radius
        assert iou.max() >= 0.6, (cx, cy, r, regions[:, :4])
        assert np.hypot(centre[0] - cx, centre[1] - cy) <= 0.25 * r
    assert box_iou(np.array([DUNES], float), regions)[0].max() >= 0.5


def test_image_edge_is_salient_along_the_whole_boundary(regions):
    edges = np.array([b for b in regions if is_edge_box(b)])
    assert len(edges) >= 4
    covered = np.zeros(SIZE, bool)
    for b in edges:
        covered[int(b[1]) : int(b[3])] = True
    assert covered.mean() >= 0.9  # segments follow the boundary from top to bottom
    # no region lies inside the fill
    assert all(b[0] < fill_x(b[3]) for b in regions)


def test_few_false_positives(regions):
    planted = np.vstack([np.array([crater_box(*c) for c in CRATERS]), np.array([DUNES], float)])
    unexplained = [b for b in regions if not is_edge_box(b) and box_iou(b[None], planted)[0].max() < 0.3]
    assert len(unexplained) <= 1, unexplained
    assert np.all(np.diff(regions[:, 4]) <= 0)  # best first


@pytest.mark.parametrize("seed", [1, 2])
def test_flat_noise_has_few_regions(seed):
    img = np.clip(120 + background(np.random.default_rng(seed), 1000), 1, 255).astype(np.uint8)
    assert len(salient_regions(img)) <= 1


def test_nodata_mask_makes_edges_without_black_fill(scene):
    """Nodata is invalid whatever its values: noise behind the mask still gives edges, no regions."""
    img = scene.copy()
    invalid = img == 0
    img[invalid] = np.random.default_rng(3).integers(1, 255, invalid.sum())
    found = salient_regions(img, ~invalid)
    assert sum(is_edge_box(b) for b in found) >= 4
    assert all(b[0] < fill_x(b[3]) for b in found)
    for cx, cy, r in CRATERS:
        assert box_iou(crater_box(cx, cy, r)[None], found)[0].max() >= 0.6


def test_large_scenes_are_read_in_strips():
    """The map is built from strips; the full image is never read (or converted) at once."""
    rng = np.random.default_rng(4)
    img = rng.integers(100, 140, (3000, 2000), dtype=np.uint8)
    yy, xx = np.mgrid[0:3000, 0:2000]
    img[np.hypot(xx - 1200, yy - 2100) < 80] = 220
    reads = []

    class Counting(ArrayScene):
        def read(self, y0, y1, x0, x1):
            reads.append((y1 - y0) * (x1 - x0))
            return super().read(y0, y1, x0, x1)

    found = detect(Counting(img), DetectorConfig(max_map_pixels=1 << 17, read_pixels=1 << 20))
    assert max(reads) <= 1 << 20 and sum(reads) >= img.size
    assert box_iou(np.array([[1120, 2020, 1280, 2180]], float), found)[0].max() >= 0.5


def test_large_regions_are_split_at_max_size(scene):
    found = salient_regions(scene, max_size=200, edges=False)
    sides = np.maximum(found[:, 2] - found[:, 0], found[:, 3] - found[:, 1])
    assert (sides <= 200).all() and (sides >= 24).all()
    pieces = found[box_iou(np.array([DUNES], float), found)[0] > 0]
    assert len(pieces) >= 2  # the 350 x 250 px dune field, in pieces
    union = np.zeros((SIZE, SIZE), bool)
    for b in pieces.astype(int):
        union[b[1] : b[3], b[0] : b[2]] = True
    x0, y0, x1, y1 = DUNES
    assert union[y0:y1, x0:x1].mean() >= 0.7


def test_bad_input_to_detector():
    with pytest.raises(LookalikeError, match="2-d"):
        salient_regions(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(LookalikeError, match="valid mask"):
        salient_regions(np.zeros((64, 64), np.uint8), np.ones((32, 32), bool))
    with pytest.raises(LookalikeError, match="z_low"):
        salient_regions(np.zeros((64, 64), np.uint8), z_low=9, z_high=3)
