"""The shipped EfficientNet-Lite0/1/2: weights load, shapes, registry errors, ImageNet sanity."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lookalike.indexer.encoding import images_to_tensor, mars_tiles
from lookalike.models.backbones import (
    create_backbone,
    list_backbones,
    lite0_weights_path,
    lite_stages,
    lite_weights_path,
)
from lookalike.models.defaults import DEFAULT_BACKBONE, LITE_BACKBONES, MULTILEVEL_BACKBONE

# ImageNet-1k class ids of buildings a Chinese temple photo may be taken for
# (bell cote, boathouse, church, dome, monastery, mosque, palace, stupa, tile roof, castle)
BUILDINGS = {
    442: "bell cote",
    449: "boathouse",
    497: "church",
    538: "dome",
    663: "monastery",
    668: "mosque",
    698: "palace",
    832: "stupa",
    858: "tile roof",
    483: "castle",
}


def test_shipped_weights_load(backbone):
    spec = backbone.spec
    assert spec.name == "efficientnet_lite0" and spec.num_features == 1280
    path = lite0_weights_path()
    assert spec.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # every tensor came from the file, in order
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = backbone.body.state_dict()
    assert len(ours) == len(state)
    for (_, mine), (_, theirs) in zip(ours.items(), state.items()):
        assert torch.equal(mine, theirs)
    assert not backbone.training


@pytest.mark.parametrize("variant", [1, 2])
def test_larger_lite_weights_load(variant):
    """Lite1 and Lite2: the stage tables scaled by width and depth hold every tensor of the
    packages' files, in order, with the reference implementation's channel counts."""
    net = create_backbone(f"efficientnet_lite{variant}")
    path = lite_weights_path(variant)
    assert net.spec.name == f"efficientnet_lite{variant}" and net.spec.num_features == 1280
    assert net.spec.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = net.body.state_dict()
    assert len(ours) == len(state)
    for (_, mine), (_, theirs) in zip(ours.items(), state.items()):
        assert torch.equal(mine, theirs)
    # block counts 1, 3, 3, 4, 4, 5, 1 for both; Lite2 is 10 % wider
    assert [r for *_, r in lite_stages(variant)] == [1, 3, 3, 4, 4, 5, 1]
    assert [c for *_, c, _ in lite_stages(variant)] == (
        [16, 24, 40, 80, 112, 192, 320] if variant == 1 else [16, 24, 48, 88, 120, 208, 352]
    )
    assert net.body.stage_starts == [3, 4, 7, 10, 14, 18, 23]


@pytest.mark.parametrize("size", [128, 224])
def test_feature_shape(backbone, size):
    x = torch.rand(2, 3, size, size)
    with torch.inference_mode():
        f = backbone(x)
    assert f.shape == (2, 1280) and f.dtype == torch.float32
    assert torch.isfinite(f).all() and (f >= 0).all()  # pooled ReLU6 activations
    assert not torch.allclose(f[0], f[1])


def test_encoder_batches_agree(encoder):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    a = encoder.features(images)
    assert a.shape == (5, 1280) and a.dtype == np.float32
    b = np.stack(list(encoder.features_stream(iter(images))))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        encoder.features(images[..., :2])


def test_multilevel_features_read_the_plain_trunk_at_two_depths(backbone, data_dir):
    """The multilevel backbone: the plain Lite0's pooled head and its pooled 112-channel stage (the
    trunk's first 14 modules), each of unit length, from the same weights."""
    assert DEFAULT_BACKBONE == backbone.spec.name  # the default code reads the plain head
    multi = create_backbone(MULTILEVEL_BACKBONE)
    assert multi.spec.name == "efficientnet_lite0_multilevel" and multi.spec.num_features == 1280 + 112
    assert multi.spec.weights_sha256 == backbone.spec.weights_sha256
    x = images_to_tensor(mars_tiles(2, size=128))
    with torch.inference_mode():
        got = multi(x)
        head = backbone(x)
        middle = backbone.body.features[:14]((x - 0.5) / 0.5).mean((2, 3))
    assert got.shape == (2, 1392)
    torch.testing.assert_close(got[:, :1280], F.normalize(head, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[:, 1280:], F.normalize(middle, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[:, :1280].norm(dim=1), torch.ones(2))
    assert not torch.allclose(got[0], got[1])


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'vgg99'"):
        create_backbone("vgg99")
    assert "efficientnet_lite0" in list_backbones()
    with pytest.raises(ValueError, match="weights"):
        create_backbone("resnet50")  # needs a local weights file


@pytest.mark.parametrize("variant, size", [(0, 224), (1, 240), (2, 260)])
def test_imagenet_classifier_recognises_a_building(variant, size, backbone):
    """The classifier head on our features: china.jpg (a temple) has a building in its top 5."""
    backbone = backbone if variant == 0 else create_backbone(f"efficientnet_lite{variant}")
    datasets = pytest.importorskip("sklearn.datasets")
    image = np.array(datasets.load_sample_image("china.jpg"))  # (427, 640, 3) uint8
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]  # centre crop
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    with torch.inference_mode():
        probs = backbone.body.classifier(backbone(x)).softmax(1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert set(top5) & set(BUILDINGS), f"top-5 ImageNet ids {top5}"
    assert probs[top5[0]] > 0.2
    # and a featureless grey image is not confidently any building
    with torch.inference_mode():
        grey = backbone.body.classifier(backbone(torch.full((1, 3, size, size), 0.5))).softmax(1)[0]
    assert grey[list(BUILDINGS)].sum() < probs[list(BUILDINGS)].sum()


def test_the_light_backbone_names_are_registered():
    """``models.defaults`` names backbones without torch; the registry builds each of them."""
    assert {DEFAULT_BACKBONE, MULTILEVEL_BACKBONE, *LITE_BACKBONES} <= set(list_backbones())
