"""Defaults and choices of the indexer, here with no heavy import (torch, numba, pyproj), so that
the command line's ``--help`` shows them and the modules that use them agree on one value."""

from __future__ import annotations

TILE_SIZE = 128  # pixels a side of a raster tile (``tiling.TileGrid``)
TILE_STRIDE = 64  # pixels between neighbouring tiles
IMAGE_SIZE = 224  # pixels a side that image chips are resized to
BATCH_SIZE = 64  # images per backbone batch

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")  # ``encoding.Encoder(runtime=...)``
DEFAULT_RUNTIME = "auto"

# The orientations a tile's feature averages over, per number of views: dihedral transforms as
# (quarter turns, then mirror left-right) of (H, W). The pair of 2 was chosen over (0, 180
# degrees) and (0, 90 degrees) on val mAP of HiRISE v1 and EuroSAT.
ORIENTATIONS: dict[int, tuple[tuple[int, bool], ...]] = {
    1: ((0, False),),
    2: ((0, False), (1, True)),
    4: ((0, False), (1, False), (2, False), (3, False)),
    8: tuple((k, m) for k in range(4) for m in (False, True)),
}
DEFAULT_VIEWS = 2
CLASSIFIER_VIEWS = 1  # the shipped landmark classifiers were trained on single-view features

# the approximate index methods (``ann.ANN_METHODS`` holds their classes, in this order)
ANN_NAMES = ("hnsw", "usearch", "ivf", "lsh")
