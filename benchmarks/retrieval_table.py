"""Retrieval benchmark: every code side by side on the labelled Mars sets, archive = train,
queries = val, mAP@64. Writes benchmarks/results/retrieval.{md,json}.

    LOOKALIKE_DATA=../shared/data python benchmarks/retrieval_table.py [--datasets hirise_v1 msl_curiosity]

Backbone features (and two augmented views of the train images for NT-Xent) are computed once
and cached (LOOKALIKE_CACHE). Heads are trained on train only; nothing here sees a test split.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from lookalike.data.shipped import default_hash_path
from lookalike.indexer.encoding import Encoder
from lookalike.indexer.features import augmented_features, image_features
from lookalike.indexer.search import rank_hamming
from lookalike.indexer.sources import read_labels
from lookalike.models.hashing import fit_itq, load_hash_model
from lookalike.models.metrics import rank_euclidean, retrieval_scores
from lookalike.models.training import TrainConfig, train_hash

K = 64
RESULTS = Path(__file__).resolve().parent / "results"


def data_root() -> Path:
    env = os.environ.get("LOOKALIKE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def methods() -> list[tuple[str, dict]]:
    rows = [("float (Euclidean)", dict(kind="float"))]
    rows += [(f"PCA-ITQ (spine baseline) {b}", dict(kind="itq", bits=b)) for b in (64, 128, 512)]
    for bits in (64, 128):
        rows += [
            (f"MIRS triplet {bits}", dict(kind="train", method="mirs-triplet", bits=bits)),
            (f"MIRS NT-Xent (unsupervised) {bits}", dict(kind="train", method="mirs-ntxent", bits=bits)),
            (f"Descartes noisy classifier {bits}", dict(kind="train", method="descartes-classifier", bits=bits)),
        ]
    rows += [
        ("MIRS triplet + inter-class 128", dict(kind="train", method="mirs-triplet", bits=128,
                                                inter_class_weight=0.5)),
        ("Descartes autoencoder (unsupervised) 128", dict(kind="train", method="descartes-autoencoder", bits=128)),
        ("Descartes autoencoder (unsupervised) 512", dict(kind="train", method="descartes-autoencoder", bits=512)),
    ]
    rows.append(("shipped default (hash_default.npz)", dict(kind="default")))
    return rows


def run(dataset: str) -> list[dict]:
    root = data_root() / dataset
    csv = root / "labels.csv"
    train, val = read_labels(root, csv, "train"), read_labels(root, csv, "val")
    encoder = Encoder(image_size=224)
    fa, fq = image_features(root, train, encoder), image_features(root, val, encoder)
    views = None
    ya, yq = train["label"].to_numpy(), val["label"].to_numpy()
    out = []
    for name, spec in methods():
        t0 = time.perf_counter()
        if spec["kind"] == "float":
            t1 = time.perf_counter()
            ranked = rank_euclidean(fa, fq, K)
            bits, bytes_per_item = 32 * fa.shape[1], 4 * fa.shape[1]
        else:
            if spec["kind"] == "itq":
                model = fit_itq(fa, spec["bits"], backbone=encoder.name)
            elif spec["kind"] == "default":
                model = load_hash_model(default_hash_path())
            else:
                if spec["method"] == "mirs-ntxent" and views is None:
                    views = tuple(augmented_features(root, train, encoder, v) for v in (0, 1))
                cfg = TrainConfig(method=spec["method"], bits=spec["bits"],
                                  inter_class_weight=spec.get("inter_class_weight", 0.0))
                model = train_hash(fa, ya, views if spec["method"] == "mirs-ntxent" else None, cfg,
                                   backbone=encoder.name, progress=False)
            ca, cq = model.encode(fa), model.encode(fq)
            t1 = time.perf_counter()
            ranked = rank_hamming(ca, cq, K)
            bits, bytes_per_item = model.bits, model.bits // 8
        query_ms = (time.perf_counter() - t1) * 1000 / len(fq)
        scores = retrieval_scores(yq, ya, ranked, K)
        row = dict(dataset=dataset, method=name, bits=int(bits), bytes_per_item=int(bytes_per_item),
                   map_at_64=scores["map_at_k"], precision_at_64=scores["precision_at_k"],
                   query_ms=query_ms, fit_s=t1 - t0, n_archive=len(fa), n_queries=len(fq))
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def to_markdown(rows: list[dict]) -> str:
    lines = ["# Retrieval benchmark (archive = train, queries = val, mAP@64)", "",
             "Produced by `python benchmarks/retrieval_table.py`. Backbone: EfficientNet-Lite0, "
             "ImageNet weights, frozen, images at 224 px. mAP@64 as defined in "
             "`models/metrics.py` (AP over the top 64 normalised by min(R, 64)). Query time: "
             "exact ranking of the whole archive for one query, numpy reference scan, this "
             "2-core machine. Heads trained on train only (supervised heads see its labels; "
             "NT-Xent and the autoencoder do not). The shipped default was trained on HiRISE "
             "train, so on MSL it is a transfer result.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines += [f"## {dataset}", "", "| method | bits | bytes/item | mAP@64 | P@64 | query ms | fit s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["dataset"] == dataset):
            lines.append(f"| {r['method']} | {r['bits']} | {r['bytes_per_item']} | {r['map_at_64']:.4f} | "
                         f"{r['precision_at_64']:.4f} | {r['query_ms']:.2f} | {r['fit_s']:.1f} |")
        lines += [""] + claims([r for r in rows if r["dataset"] == dataset]) + [""]
    return "\n".join(lines)


def claims(rows: list[dict]) -> list[str]:
    """The two claims the benchmark exists to check, stated from the numbers above."""
    learned = ("MIRS", "Descartes")
    unsupervised = ("NT-Xent", "autoencoder")
    float_row = next(r for r in rows if r["method"].startswith("float"))
    best128 = max((r for r in rows if r["bits"] == 128 and r["method"].startswith(learned)),
                  key=lambda r: r["map_at_64"])
    best_unsup = max((r for r in rows if any(u in r["method"] for u in unsupervised)),
                     key=lambda r: r["map_at_64"])
    best_itq = max((r for r in rows if r["method"].startswith("PCA-ITQ")), key=lambda r: r["map_at_64"])
    ratio = float_row["bytes_per_item"] / best128["bytes_per_item"]
    beats = best128["map_at_64"] > float_row["map_at_64"]
    return [
        f"- Best learned 128-bit code, {best128['method']}: mAP@64 {best128['map_at_64']:.4f} vs float "
        f"{float_row['map_at_64']:.4f} ({'beats' if beats else 'does NOT beat'} it), archive "
        f"{ratio:.0f}x smaller. MIRS claim (better and >= 10x smaller): "
        f"{'holds' if beats and ratio >= 10 else 'does not hold'}.",
        f"- Best unsupervised head, {best_unsup['method']}: {best_unsup['map_at_64']:.4f} vs the best "
        f"PCA-ITQ baseline, {best_itq['method']}: {best_itq['map_at_64']:.4f}: "
        f"{'holds' if best_unsup['map_at_64'] > best_itq['map_at_64'] else 'does not hold'}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["hirise_v1", "msl_curiosity"])
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args()
    if args.markdown_only:
        return rewrite_markdown()
    rows = [row for dataset in args.datasets for row in run(dataset)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved = RESULTS / "retrieval.json"
    if saved.exists():  # keep rows of datasets not rerun this time
        rows = [r for r in json.loads(saved.read_text()) if r["dataset"] not in args.datasets] + rows
    saved.write_text(json.dumps(rows, indent=2))
    (RESULTS / "retrieval.md").write_text(to_markdown(rows))
    print(to_markdown(rows))


def rewrite_markdown() -> None:
    """Regenerate retrieval.md from retrieval.json without recomputing."""
    (RESULTS / "retrieval.md").write_text(to_markdown(json.loads((RESULTS / "retrieval.json").read_text())))


if __name__ == "__main__":
    main()
