"""Which depths of EfficientNet-Lite0 make the best retrieval feature: float features and PCA-ITQ 128
(fitted on the archive) from the pooled head alone and from the head with one or two pooled middle
stages, each part of unit length, on every labelled set (archive = train, queries = val, mAP@64).
Writes benchmarks/results/feature_layers.{md,json}; the depth that
``efficientnet_lite0_multilevel`` adds to the head was chosen from this table.

    LOOKALIKE_DATA=../shared/data python benchmarks/feature_layers.py

Each part is normalised per view, then the views are averaged, as ``Encoder(views=2)`` does with
the multilevel backbone. Pooled outputs of every candidate depth come from one pass and are cached
(LOOKALIKE_CACHE).
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from retrieval_table import RESULTS, SETS, K, data_root, scores
from torch import nn

from lookalike.indexer.encoding import Encoder
from lookalike.indexer.features import image_features
from lookalike.indexer.image_folders import read_labels
from lookalike.indexer.search import rank_hamming
from lookalike.models.backbones import Backbone, BackboneSpec, create_backbone
from lookalike.models.hashing import fit_itq
from lookalike.models.metrics import rank_euclidean

# trunk module whose output is pooled -> its channels (the last block of Lite0's stages 4, 5, 6)
DEPTHS = {"stage 4 (112 ch)": (13, 112), "stage 5 (192 ch)": (17, 192), "stage 6 (320 ch)": (18, 320)}
HEAD = "head (1280 ch)"
COMBOS = [
    (HEAD,),
    (HEAD, "stage 4 (112 ch)"),
    (HEAD, "stage 5 (192 ch)"),
    (HEAD, "stage 6 (320 ch)"),
    (HEAD, "stage 4 (112 ch)", "stage 5 (192 ch)"),
    (HEAD, "stage 5 (192 ch)", "stage 6 (320 ch)"),
]


class _AllDepths(nn.Module):
    """Every candidate depth pooled and normalised, concatenated (head first)."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features
        self.taps = [module for module, _ in DEPTHS.values()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                middle.append(F.normalize(x.mean((2, 3)), dim=1))
        return torch.cat([F.normalize(x.mean((2, 3)), dim=1), *middle], 1)


def _slices() -> dict[str, slice]:
    out, start = {HEAD: slice(0, 1280)}, 1280
    for name, (_, channels) in DEPTHS.items():
        out[name] = slice(start, start + channels)
        start += channels
    return out


def main() -> None:
    plain = create_backbone("efficientnet_lite0")
    width = 1280 + sum(c for _, c in DEPTHS.values())
    spec = BackboneSpec(
        "efficientnet_lite0_all_depths", width, plain.spec.mean, plain.spec.std, plain.spec.weights_sha256
    )
    encoder = Encoder(
        Backbone(_AllDepths(plain.body.features), spec), image_size=224, views=2, runtime="torch"
    )
    parts = _slices()
    rows = []
    for name in SETS:
        root = data_root() / name
        train, val = (read_labels(root, root / "labels.csv", s) for s in ("train", "val"))
        fa, fq = image_features(root, train, encoder), image_features(root, val, encoder)
        ya, yq = train["label"].to_numpy(), val["label"].to_numpy()
        for combo in COMBOS:
            a, q = (np.concatenate([f[:, parts[p]] for p in combo], 1) for f in (fa, fq))
            itq = fit_itq(a, 128)
            row = dict(
                set=name,
                depths=list(combo),
                float=scores(rank_euclidean(a, q, K), yq, ya),
                itq=scores(rank_hamming(itq.encode(a), itq.encode(q), K), yq, ya),
            )
            for key in ("float", "itq"):
                row[key].pop("per_class")
            print(json.dumps(row), flush=True)
            rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feature_layers.json").write_text(json.dumps(dict(k=K, rows=rows), indent=2))
    (RESULTS / "feature_layers.md").write_text(to_markdown(rows))


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "# Retrieval features from more than the last layer (archive = train, queries = val, mAP@64)",
        "",
        "Produced by `python benchmarks/feature_layers.py`. EfficientNet-Lite0, ImageNet weights, "
        "frozen, 224 px, 2 views; each depth's output average-pooled and of unit length, the parts "
        "concatenated. Cells: float features (Euclidean) / PCA-ITQ 128 fitted on the archive, micro "
        "mAP@64 (HiRISE macro in brackets).",
        "",
        "| depths | " + " | ".join(SETS) + " |",
        "|---|" + "---:|" * len(SETS),
    ]
    for combo in COMBOS:
        cells = []
        for name in SETS:
            r = next(r for r in rows if r["set"] == name and tuple(r["depths"]) == combo)
            extra = f" ({r['float']['macro']:.3f} / {r['itq']['macro']:.3f})" if name == "hirise_v1" else ""
            cells.append(f"{r['float']['micro']:.3f} / {r['itq']['micro']:.3f}{extra}")
        lines.append(f"| {' + '.join(combo)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
