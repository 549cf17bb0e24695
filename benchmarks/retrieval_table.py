"""Retrieval benchmark: the default code's candidates on every labelled set, archive = train,
queries = val, mAP@64 (micro: mean over queries; macro: mean over query classes), plus a
leave-one-class-out run on HiRISE v1. Writes benchmarks/results/retrieval.{md,json}.

    LOOKALIKE_DATA=../shared/data python benchmarks/retrieval_table.py
    LOOKALIKE_DATA=../shared/data python benchmarks/retrieval_table.py \
        --backbone efficientnet_lite0_multilevel

Another ``--backbone`` trains and scores every candidate on that backbone's features, writes
retrieval_<backbone>.{md,json}, adds float and PCA-ITQ rows of the default backbone's features
for comparison, and leaves out the shipped code (it reads the default backbone's features).

Features are computed once and cached (LOOKALIKE_CACHE). Codes are fitted on train splits only
(EuroSAT's labels are read only to score); nothing here reads a test split. Choose on val only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from lookalike.indexer.encoding import Encoder
from lookalike.indexer.features import image_features, mosaic_features
from lookalike.indexer.image_folders import read_labels
from lookalike.indexer.search import rank_hamming
from lookalike.models.defaults import DEFAULT_BACKBONE
from lookalike.models.hashing import DEFAULT_BITS, ConcatHash, fit_default, fit_itq
from lookalike.models.metrics import average_precision_at_k, rank_euclidean
from lookalike.models.training import SimilarityConfig, TrainConfig, train_hash, train_similarity_hash

K = 64
RESULTS = Path(__file__).resolve().parent / "results"
SETS = ("hirise_v1", "msl_curiosity", "eurosat")
LABELLED = ("hirise_v1", "msl_curiosity")  # the default's class terms; EuroSAT is unlabelled
MOSAICS = ("mars_8k", "earth_8k")


def data_root() -> Path:
    env = os.environ.get("LOOKALIKE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def load(views: int, backbone: str = DEFAULT_BACKBONE) -> dict:
    """Per set: (archive features, archive labels, query features, query labels)."""
    encoder = Encoder(backbone, image_size=224, views=views)
    out = {}
    for name in SETS:
        root = data_root() / name
        train, val = (read_labels(root, root / "labels.csv", s) for s in ("train", "val"))
        out[name] = (
            image_features(root, train, encoder),
            train["label"].to_numpy(),
            image_features(root, val, encoder),
            val["label"].to_numpy(),
        )
    return out


def scores(ranked: np.ndarray, yq: np.ndarray, ya: np.ndarray) -> dict:
    relevant = ya[ranked] == yq[:, None]
    classes, counts = np.unique(ya, return_counts=True)
    n_rel = np.array([counts[classes == c][0] if c in classes else 0 for c in yq])
    ap = average_precision_at_k(relevant, n_rel, K)
    return dict(
        micro=float(ap.mean()),
        macro=float(np.mean([ap[yq == c].mean() for c in np.unique(yq)])),
        per_class={str(c): float(ap[yq == c].mean()) for c in np.unique(yq)},
    )


# the learned part of the default recipe (data/weights/README.md); the rest is PCA-ITQ on the archive
LEARNED = SimilarityConfig(bits=96, steps=6000)
PREVIOUS = SimilarityConfig()  # the previous default: all 128 bits learned, 3,000 steps


def recipe(feats: dict, tiles: dict, config: SimilarityConfig, labelled=LABELLED, drop: str | None = None):
    """The learned code's recipe on these features; ``drop`` removes a HiRISE class from training."""
    domains, sets = {}, {}
    for name, (fa, ya, _, _) in feats.items():
        keep = ya != drop if name == "hirise_v1" and drop else np.ones(len(ya), bool)
        domains[name] = fa[keep]
        if name in labelled:
            sets[name] = (fa[keep], ya[keep])
    return train_similarity_hash(domains | tiles, sets, config, progress=False)


def fixed(model):
    """A code that does not depend on the archive."""
    return lambda fa: model


def with_fitted_bits(learned):
    """The default recipe around a learned code: its bits, then PCA-ITQ bits fitted on the archive."""
    return lambda fa: ConcatHash([learned, fit_itq(fa, DEFAULT_BITS - learned.bits)], "recipe")


def candidates(
    one: dict, two: dict, tiles: dict, reference: dict | None = None
) -> list[tuple[str, dict, object]]:
    """(name, features it reads, 'float' or a function of the archive's features to a code);
    ``reference``: the default backbone's features (2 views) when these are another backbone's."""
    hirise = one["hirise_v1"]
    noisy = train_hash(
        hirise[0], hirise[1], None, TrainConfig(method="descartes-classifier", bits=128), progress=False
    )
    if reference is not None:
        return [
            (f"float, {DEFAULT_BACKBONE} (the default feature), 2 views", reference, "float"),
            (
                f"PCA-ITQ 128 fitted on the archive, {DEFAULT_BACKBONE}, 2 views",
                reference,
                lambda fa: fit_itq(fa, 128),
            ),
            *_shared_candidates(one, two, tiles, noisy),
        ]
    return [
        *_shared_candidates(one, two, tiles, noisy),
        ("shipped default: hash_default.npz + PCA-ITQ 32 fitted on the archive, 2 views", two, fit_default),
    ]


def _shared_candidates(one: dict, two: dict, tiles: dict, noisy) -> list[tuple[str, dict, object]]:
    return [
        ("float, 1 view (Euclidean)", one, "float"),
        ("float, 2 views (Euclidean)", two, "float"),
        ("PCA-ITQ 128 fitted on the archive, 2 views", two, lambda fa: fit_itq(fa, 128)),
        ("noisy classifier 128 on HiRISE labels (default two versions ago), 1 view", one, fixed(noisy)),
        ("similarity code 128, no labels, 2 views", two, fixed(recipe(two, tiles, PREVIOUS, labelled=()))),
        (
            "similarity code 128 + HiRISE/MSL labels (previous default), 2 views",
            two,
            fixed(recipe(two, tiles, PREVIOUS)),
        ),
        (
            "similarity code 96 + labels, then PCA-ITQ 32 fitted on the archive (default recipe), 2 views",
            two,
            with_fitted_bits(recipe(two, tiles, LEARNED)),
        ),
    ]


def evaluate(code, fa, ya, fq, yq) -> dict:
    t0 = time.perf_counter()
    if isinstance(code, str) and code == "float":
        ranked = rank_euclidean(fa, fq, K)
    else:
        model = code(fa)
        ranked = rank_hamming(model.encode(fa), model.encode(fq), K)
    return dict(scores(ranked, yq, ya), seconds=time.perf_counter() - t0)


def leave_one_class_out(two: dict, tiles: dict) -> list[dict]:
    """Train the learned codes without HiRISE class c; score class-c queries against the full archive
    (the archive-fitted bits see every crop: they are fitted without labels at index time)."""
    fa, ya, fq, yq = two["hirise_v1"]
    full = with_fitted_bits(recipe(two, tiles, LEARNED))
    rows = []
    for c in np.unique(ya):
        q = yq == c
        previous = fixed(recipe(two, tiles, PREVIOUS, drop=c))
        without = with_fitted_bits(recipe(two, tiles, LEARNED, drop=c))
        row = dict(held_out=str(c), n_queries=int(q.sum()))
        for name, code in (
            ("float", "float"),
            ("itq", lambda a: fit_itq(a, 128)),
            ("previous", previous),
            ("without", without),
            ("with", full),
        ):
            row[name] = evaluate(code, fa, ya, fq[q], yq[q])["micro"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def to_markdown(result: dict) -> str:
    backbone = result.get("backbone", DEFAULT_BACKBONE)
    other = (
        []
        if backbone == DEFAULT_BACKBONE
        else [
            f"**Backbone `{backbone}`** (`--backbone {backbone}`): every code below is trained and fitted on "
            f"its features; the first two rows read the default backbone's (`{DEFAULT_BACKBONE}`) for "
            "comparison. The shipped code reads the default backbone's features, so it is not here; the "
            "default recipe's row is the same recipe trained on these features.",
            "",
        ]
    )
    lines = [
        "# Retrieval benchmark (archive = train, queries = val, mAP@64)",
        "",
        *other,
        "Produced by `python benchmarks/retrieval_table.py`. Backbone: EfficientNet-Lite0, ImageNet "
        "weights, frozen, images at 224 px; *views*: the feature is the mean over the image as is "
        "and mirrored across a diagonal (`Encoder(views=2)`, the default) or the image alone. "
        "mAP@64 as in `models/metrics.py`; *micro* averages over queries, *macro* over query "
        "classes (HiRISE's `other` is most of its val split). Codes are fitted on train splits only; "
        "EuroSAT's labels are read only to score. The similarity codes train on the train images "
        "of all three sets plus every tile of the Mars and Earth mosaics (`lookalike train-hash "
        "--method similarity`). The default recipe (`models.hashing.fit_default`, what every "
        "command uses without `--hash`) is a learned 96-bit similarity code (6,000 steps), followed "
        "by 32 PCA-ITQ bits fitted on the archive's own features, no labels.",
        "",
        "| method | bits | HiRISE v1 | HiRISE macro | MSL | MSL macro | EuroSAT |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["candidates"]:
        s = row["scores"]
        lines.append(
            f"| {row['method']} | {row['bits']} | {s['hirise_v1']['micro']:.3f} | "
            f"{s['hirise_v1']['macro']:.3f} | {s['msl_curiosity']['micro']:.3f} | "
            f"{s['msl_curiosity']['macro']:.3f} | {s['eurosat']['micro']:.3f} |"
        )
    lines += [
        "",
        "## Unseen classes: leave one HiRISE v1 class out",
        "",
        "The learned codes trained again without class *c* (its crops leave both the labelled "
        "and the unlabelled terms), then class-*c* val queries against the whole train archive. "
        "The default recipe's PCA-ITQ bits are fitted on that archive, class *c* included, as "
        "`lookalike index` fits them on an index's own tiles (no labels). *with*: the default "
        "recipe trained on every class.",
        "",
        "| held-out class | queries | float, 2 views | PCA-ITQ 128 | previous default without c "
        "| default recipe without c | default recipe with c |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("float", "itq", "previous", "without", "with")
    for r in result["leave_one_class_out"]:
        cells = " | ".join(f"{r[k]:.3f}" for k in keys)
        lines.append(f"| {r['held_out']} | {r['n_queries']} | {cells} |")
    lo = result["leave_one_class_out"]
    means = " | ".join(f"{np.mean([r[k] for r in lo]):.3f}" for k in keys)
    lines.append(f"| mean over classes | | {means} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    parser.add_argument(
        "--backbone", default=DEFAULT_BACKBONE, help="the features to train and score the codes on"
    )
    args = parser.parse_args()
    stem = "retrieval" if args.backbone == DEFAULT_BACKBONE else f"retrieval_{args.backbone}"
    saved = RESULTS / f"{stem}.json"
    if args.markdown_only:
        (RESULTS / f"{stem}.md").write_text(to_markdown(json.loads(saved.read_text())))
        return
    one, two = load(1, args.backbone), load(2, args.backbone)
    reference = load(2) if args.backbone != DEFAULT_BACKBONE else None
    tile_encoder = Encoder(args.backbone, views=2)
    tiles = {name: mosaic_features(name, tile_encoder) for name in MOSAICS}
    rows = []
    for name, feats, code in candidates(one, two, tiles, reference):
        is_float = isinstance(code, str) and code == "float"
        bits = 32 * feats["hirise_v1"][0].shape[1] if is_float else DEFAULT_BITS
        row = dict(method=name, bits=bits, scores={s: evaluate(code, *feats[s]) for s in SETS})
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = dict(k=K, candidates=rows, leave_one_class_out=leave_one_class_out(two, tiles))
    if args.backbone != DEFAULT_BACKBONE:  # the default run's JSON keeps its fields as they were
        result["backbone"] = args.backbone
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, indent=2))
    (RESULTS / f"{stem}.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
