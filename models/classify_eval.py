"""Classification metrics with a reject option, the threshold curve and its plot.

For posteriors ``P`` (N, C) and true labels: the prediction is the arg-max class and its
confidence the max posterior. At a threshold ``t`` the classifier abstains on items with
confidence < t; ``abstention_rate`` is the fraction abstained, ``accuracy_at_threshold`` the
accuracy on the rest (None when everything is abstained). Per class (by true label for recall,
by predicted label for precision): precision = correct predictions of c / predictions of c,
recall = correct predictions of c / items of c (None where the denominator is 0), and at the
threshold the recall and abstention rate of the class's items.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexer.errors import LookalikeError


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-width confidence bins: sum_b |acc_b - conf_b| * n_b / N."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    if not len(confidence):
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += abs(correct[sel].mean() - confidence[sel].mean()) * sel.mean()
    return float(ece)


def classification_metrics(labels, proba: np.ndarray, classes: list[str], threshold: float = 0.9) -> dict:
    """Accuracy, accuracy and abstention at ``threshold``, NLL, ECE and per-class figures."""
    labels = np.asarray(labels).astype(str)
    proba = np.asarray(proba, dtype=np.float64)
    classes = [str(c) for c in classes]
    if proba.ndim != 2 or proba.shape != (len(labels), len(classes)):
        raise LookalikeError(f"posteriors of shape {proba.shape} do not match {len(labels)} items "
                             f"and {len(classes)} classes")
    if not 0.0 <= threshold <= 1.0:
        raise LookalikeError(f"threshold must be within [0, 1], got {threshold}")
    if not len(labels):
        raise LookalikeError("no items to evaluate")
    predicted = np.asarray(classes)[proba.argmax(1)]
    confidence = proba.max(1)
    correct = predicted == labels
    accepted = confidence >= threshold
    index = {c: i for i, c in enumerate(classes)}
    known = np.array([lab in index for lab in labels])
    true_p = np.array([proba[i, index[lab]] if k else 0.0 for i, (lab, k) in enumerate(zip(labels, known))])
    per_class = {}
    for c in sorted(set(classes) | set(labels.tolist())):
        mine, said = labels == c, predicted == c
        per_class[c] = dict(
            support=int(mine.sum()),
            predicted=int(said.sum()),
            precision=_ratio((mine & said).sum(), said.sum()),
            recall=_ratio((mine & said).sum(), mine.sum()),
            precision_at_threshold=_ratio((mine & said & accepted).sum(), (said & accepted).sum()),
            recall_at_threshold=_ratio((mine & said & accepted).sum(), mine.sum()),
            accuracy_at_threshold=_ratio((mine & correct & accepted).sum(), (mine & accepted).sum()),
            abstention_rate=_ratio((mine & ~accepted).sum(), mine.sum()),
            known_to_model=c in index,
        )
    recalls = [v["recall"] for v in per_class.values() if v["recall"] is not None]
    return dict(
        accuracy=float(correct.mean()),
        accuracy_at_threshold=_ratio((correct & accepted).sum(), accepted.sum()),
        abstention_rate=float((~accepted).mean()),
        threshold=float(threshold),
        n=int(len(labels)),
        n_accepted=int(accepted.sum()),
        balanced_accuracy=float(np.mean(recalls)) if recalls else None,
        nll=float(-np.log(np.clip(true_p, 1e-12, 1.0)).mean()),
        ece=expected_calibration_error(confidence, correct),
        unknown_labels=sorted(set(labels[~known].tolist())),
        per_class=per_class,
    )


def threshold_curve(labels, proba: np.ndarray, classes: list[str],
                    thresholds: np.ndarray | None = None) -> dict:
    """Accuracy on accepted items and abstention rate at each threshold."""
    labels = np.asarray(labels).astype(str)
    proba = np.asarray(proba, dtype=np.float64)
    thresholds = np.round(np.linspace(0.0, 1.0, 101), 4) if thresholds is None else np.asarray(thresholds)
    predicted = np.asarray([str(c) for c in classes])[proba.argmax(1)]
    correct = predicted == labels
    confidence = proba.max(1)
    acc, abst = [], []
    for t in thresholds:
        accepted = confidence >= t
        acc.append(_ratio((correct & accepted).sum(), accepted.sum()))
        abst.append(float((~accepted).mean()))
    return dict(threshold=[float(t) for t in thresholds], accuracy_at_threshold=acc, abstention_rate=abst)


def plot_classification(curve: dict, metrics: dict, path: str | Path, title: str = "") -> Path:
    """PNG: accuracy and abstention against the threshold; per-class precision and recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_class = metrics["per_class"]
    names = list(per_class)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, max(4.8, 1.6 + 0.22 * len(names))),
                                   gridspec_kw=dict(width_ratios=[1, 1.3]))
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
    ax1.set_title(f"accuracy {metrics['accuracy']:.3f}; at {metrics['threshold']:g}: "
                  f"{'n/a' if at is None else f'{at:.3f}'}, abstain {metrics['abstention_rate']:.2f}",
                  fontsize=10)
    y = np.arange(len(names))
    val = lambda key: [np.nan if per_class[n][key] is None else per_class[n][key] for n in names]  # noqa: E731
    ax2.barh(y - 0.2, val("precision"), height=0.4, label="precision", color="tab:green")
    ax2.barh(y + 0.2, val("recall"), height=0.4, label="recall", color="tab:purple")
    ax2.set_yticks(y, [f"{n} ({per_class[n]['support']})" for n in names], fontsize=8 if len(names) > 12 else 9)
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


def evaluate_classifier(model_spec: str, root, labels_csv, *, split: str = "test", threshold: float = 0.9,
                        plot: str | Path | None = None, progress: bool = True) -> dict:
    """Classify a split of a labelled image folder with a model file or shipped model name."""
    from indexer.sources import read_labels
    from models.classifier import folder_features, load_classifier, resolve_classifier

    path = resolve_classifier(model_spec)
    model = load_classifier(path)
    table = read_labels(root, labels_csv, split=split)
    feats = folder_features(root, table, image_size=model.image_size, backbone=model.backbone,
                            progress=progress)
    proba = model.predict_proba(feats)
    labels = table["label"].to_numpy()
    metrics = classification_metrics(labels, proba, model.classes, threshold)
    curve = threshold_curve(labels, proba, model.classes)
    result = dict(model=str(model_spec), model_file=path.name, split=split, temperature=model.temperature,
                  backbone=model.backbone, image_size=model.image_size, **metrics, curve=curve)
    if plot:
        result["plot"] = str(plot_classification(curve, metrics, plot,
                                                  title=f"{Path(root).name} {split} - {path.name}"))
    return result
