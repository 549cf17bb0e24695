"""Retrieval and classification evaluations on labelled image folders (``lookalike eval``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.indexer.defaults import DEFAULT_VIEWS
from lookalike.indexer.encoding import Encoder, classifier_encoder
from lookalike.indexer.features import folder_features, image_features
from lookalike.indexer.image_folders import read_labels
from lookalike.indexer.search import rank_hamming
from lookalike.models.classifier import load_classifier, resolve_classifier
from lookalike.models.defaults import DEFAULT_BACKBONE
from lookalike.models.hashing import resolve_hash
from lookalike.models.metrics import classification_metrics, rank_euclidean, retrieval_scores, threshold_curve


def evaluate_retrieval(
    root: str | Path,
    labels_csv: str | Path,
    *,
    archive_split: str = "train",
    query_split: str = "test",
    k: int = 64,
    method: str = "default",
    hash_path: str | None = None,
    bits: int | None = None,
    image_size: int = 224,
    views: int = DEFAULT_VIEWS,
    backbone: str = DEFAULT_BACKBONE,
    progress: bool = True,
) -> dict:
    """mAP@k of archive-vs-query retrieval; ``method`` is ``float`` or ``hash``.

    ``float``: backbone features, Euclidean distance. ``hash``: the code ``hash_path`` names
    (see ``models.hashing.resolve_hash``): the default recipe (the shipped learned code plus
    PCA-ITQ bits, fitted on the archive's own features) when it and ``bits`` are None, ``"itq"``
    for the PCA-ITQ baseline fitted on the archive, or a file. ``backbone``: a name of
    ``models.backbones`` (the default code reads only the default backbone's features).
    """

    if k < 1:
        raise LookalikeError("k must be at least 1")
    archive = read_labels(root, labels_csv, split=archive_split)
    queries = read_labels(root, labels_csv, split=query_split)
    encoder = Encoder(backbone, image_size=image_size, views=views)
    fa = image_features(root, archive, encoder, progress)
    fq = image_features(root, queries, encoder, progress)
    t0 = time.perf_counter()
    if method == "float":
        ranked = rank_euclidean(fa, fq, k)
        n_bits, name, bytes_per_item = 32 * fa.shape[1], f"float-{encoder.name}-euclidean", 4 * fa.shape[1]
    else:
        model = resolve_hash(hash_path, fa, bits, encoder.name)
        ca, cq = model.encode(fa), model.encode(fq)
        t0 = time.perf_counter()
        ranked = rank_hamming(ca, cq, k)
        n_bits, name, bytes_per_item = model.bits, f"{model.method}-{model.bits}", model.bits // 8
    query_ms = (time.perf_counter() - t0) * 1000.0 / max(len(fq), 1)
    scores = retrieval_scores(queries["label"].to_numpy(), archive["label"].to_numpy(), ranked, k)
    return dict(
        map_at_k=scores["map_at_k"],
        precision_at_k=scores["precision_at_k"],
        k=k,
        n_queries=len(queries),
        n_archive=len(archive),
        bits=int(n_bits),
        method=name,
        bytes_per_item=int(bytes_per_item),
        query_ms=query_ms,
        backbone=encoder.name,
        image_size=image_size,
        views=views,
    )


def plot_classification(curve: dict, metrics: dict, path: str | Path, title: str = "") -> Path:
    """PNG: accuracy and abstention against the threshold; per-class precision and recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_class = metrics["per_class"]
    names = list(per_class)
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(12, max(4.8, 1.6 + 0.22 * len(names))), gridspec_kw=dict(width_ratios=[1, 1.3])
    )
    t = np.asarray(curve["threshold"])
    acc = np.array([np.nan if a is None else a for a in curve["accuracy_at_threshold"]])
    ax1.plot(t, acc, label="accuracy on accepted", color="tab:blue")
    ax1.plot(t, curve["abstention_rate"], label="abstention rate", color="tab:orange")
    ax1.axvline(metrics["threshold"], color="grey", linestyle=":", linewidth=1)
    ax1.set_xlabel("confidence threshold (calibrated max posterior)")
    ax1.set_ylim(0, 1.02)
    ax1.set_xlim(0, 1)
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower left")
    at = metrics["accuracy_at_threshold"]
    ax1.set_title(
        f"accuracy {metrics['accuracy']:.3f}; at {metrics['threshold']:g}: "
        f"{'n/a' if at is None else f'{at:.3f}'}, abstain {metrics['abstention_rate']:.2f}",
        fontsize=10,
    )
    y = np.arange(len(names))
    val = lambda key: [np.nan if per_class[n][key] is None else per_class[n][key] for n in names]  # noqa: E731
    ax2.barh(y - 0.2, val("precision"), height=0.4, label="precision", color="tab:green")
    ax2.barh(y + 0.2, val("recall"), height=0.4, label="recall", color="tab:purple")
    ax2.set_yticks(
        y, [f"{n} ({per_class[n]['support']})" for n in names], fontsize=8 if len(names) > 12 else 9
    )
    ax2.invert_yaxis()
    ax2.set_xlim(0, 1)
    ax2.grid(axis="x", alpha=0.3)
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8, frameon=False)
    ax2.set_title("per class (support)", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_classifier(
    model_spec: str,
    root,
    labels_csv,
    *,
    split: str = "test",
    threshold: float = 0.9,
    plot: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Classify a split of a labelled image folder with a model file or shipped model name."""
    if not 0.0 <= threshold <= 1.0:
        raise LookalikeError(f"--threshold must be within [0, 1], got {threshold}")

    path = resolve_classifier(model_spec)
    model = load_classifier(path)
    table = read_labels(root, labels_csv, split=split)
    feats = folder_features(root, table, encoder=classifier_encoder(model), progress=progress)
    proba = model.predict_proba(feats)
    labels = table["label"].to_numpy()
    metrics = classification_metrics(labels, proba, model.classes, threshold)
    curve = threshold_curve(labels, proba, model.classes)
    result = dict(
        model=str(model_spec),
        model_file=path.name,
        split=split,
        temperature=model.temperature,
        backbone=model.backbone,
        image_size=model.image_size,
        views=model.views,
        fine_tuned=bool(model.tail),
        **metrics,
        curve=curve,
    )
    if plot:
        result["plot"] = str(
            plot_classification(curve, metrics, plot, title=f"{Path(root).name} {split} - {path.name}")
        )
    return result
