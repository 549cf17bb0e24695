"""Features pooled over rotations/flips (``Encoder(views=...)``): invariance on a real tile,
option checks, and the index recording its views so that appends and image queries match."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from lookalike_testkit import run_main

from lookalike.errors import OptionError
from lookalike.indexer.defaults import DEFAULT_VIEWS, ORIENTATIONS
from lookalike.indexer.encoding import Encoder, mars_tiles
from lookalike.indexer.store import open_index


@pytest.fixture(scope="module")
def real_tile(data_dir) -> np.ndarray:
    """One 128-px tile of the real Mars mosaic, as an index would cut it."""
    return mars_tiles(1)[0]


def dihedral(tile: np.ndarray) -> list[np.ndarray]:
    """The eight rotations/flips of an (H, W, 3) image."""
    turns = [np.rot90(tile, k) for k in range(4)]
    return [np.ascontiguousarray(t) for t in turns + [t[:, ::-1] for t in turns]]


def test_eight_views_are_invariant_to_every_rotation_and_flip(backbone, real_tile):
    """Every transformed tile feeds the backbone the same eight images, so the pooled feature
    differs only by the order of the sum (float32 rounding, < 1e-6 of its scale)."""
    enc = Encoder(backbone, device="cpu", runtime="torch", views=8)
    feats = enc.features(np.stack(dihedral(real_tile)))
    scale = np.abs(feats[0]).max()
    assert np.abs(feats - feats[0]).max() <= 1e-6 * scale
    single = Encoder(backbone, device="cpu", runtime="torch", views=1).features(np.stack(dihedral(real_tile)))
    assert np.abs(single - single[0]).max() > 1e-2 * scale  # one view is not invariant: the test can fail


def test_the_multilevel_eight_views_are_invariant_on_a_real_tile(real_tile):
    """The same for the multilevel backbone (two pooled depths, each normalised per view)."""
    feats = Encoder("efficientnet_lite0_multilevel", device="cpu", runtime="torch", views=8).features(
        np.stack(dihedral(real_tile))
    )
    assert feats.shape[1] == 1392
    assert np.abs(feats - feats[0]).max() <= 1e-6 * np.abs(feats[0]).max()


def test_two_views_are_invariant_to_their_own_mirror(backbone, real_tile):
    enc = Encoder(backbone, device="cpu", runtime="torch", views=2)
    assert enc.views == DEFAULT_VIEWS == 2 and ORIENTATIONS[2] == ((0, False), (1, True))
    mirrored = np.ascontiguousarray(np.rot90(real_tile, 1)[:, ::-1])
    a, b = enc.features(np.stack([real_tile, mirrored]))
    assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max()
    # the pooled feature is the mean of the two single-view features
    one = Encoder(backbone, device="cpu", runtime="torch", views=1).features(np.stack([real_tile, mirrored]))
    np.testing.assert_allclose(a, one.mean(0), rtol=0, atol=1e-5 * np.abs(a).max())


def test_views_are_checked(backbone):
    with pytest.raises(OptionError, match="views must be one of 1, 2, 4, 8"):
        Encoder(backbone, views=3)
    with pytest.raises(OptionError, match="square"):
        Encoder(backbone, device="cpu", runtime="torch", views=2).features(np.zeros((1, 32, 48, 3), np.uint8))
    assert Encoder(backbone, views=4).describe()["views"] == 4


def test_index_records_views_and_appends_keep_them(mars_index, tmp_path, data_dir):
    index = open_index(mars_index)
    assert index.views == DEFAULT_VIEWS and index.manifest["backbone"]["views"] == DEFAULT_VIEWS
    copy = tmp_path / "index"
    shutil.copytree(mars_index, copy)
    code, _, err = run_main(
        ["index", "mars_8k", "--zones", "32N", "--append", "--views", "1", "--out", copy],
        LOOKALIKE_DATA=data_dir,
    )
    assert code != 0 and "--views 2" in err and "Traceback" not in err
    assert open_index(copy).n == index.n  # nothing was added
