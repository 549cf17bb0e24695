"""Retrieval and classification metrics: pure functions over numpy arrays.

Retrieval. mAP@k: for each query, AP@k = (1 / min(R, k)) * sum_{i<=k} P(i) * rel(i), where R is
the number of archive items sharing the query's label and P(i) the precision of the first i
results; mAP@k is its mean over queries. Precision@k is the fraction of the first k results
that are relevant.

Classification with a reject option. For posteriors ``P`` (N, C) and true labels: the
prediction is the arg-max class and its confidence the max posterior. At a threshold ``t`` the
classifier abstains on items with confidence < t; ``abstention_rate`` is the fraction
abstained, ``accuracy_at_threshold`` the accuracy on the rest (None when everything is
abstained). Per class (by true label for recall, by predicted label for precision): precision =
correct predictions of c / predictions of c, recall = correct predictions of c / items of c
(None where the denominator is 0), and at the threshold the recall and abstention rate of the
class's items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lookalike.errors import LookalikeError


def average_precision_at_k(relevant: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k per query from a (Q, >=k) boolean relevance matrix of ranked results."""
    rel = np.asarray(relevant, dtype=bool)[:, :k]
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    denom = np.minimum(np.asarray(n_relevant), k)
    ap = (precision * rel).sum(axis=1) / np.maximum(denom, 1)
    return np.where(denom > 0, ap, 0.0)


def retrieval_scores(
    query_labels: np.ndarray, archive_labels: np.ndarray, ranked: np.ndarray, k: int
) -> dict:
    """mAP@k and precision@k of ranked archive indices (Q, k) for labelled queries."""
    query_labels, archive_labels = np.asarray(query_labels), np.asarray(archive_labels)
    relevant = archive_labels[ranked] == query_labels[:, None]
    counts = pd.Series(archive_labels).value_counts()
    n_relevant = counts.reindex(query_labels).fillna(0).to_numpy()
    return dict(
        map_at_k=float(average_precision_at_k(relevant, n_relevant, k).mean()),
        precision_at_k=float(relevant[:, :k].mean()),
    )


def rank_euclidean(archive: np.ndarray, queries: np.ndarray, k: int, batch: int = 256) -> np.ndarray:
    """Indices of the k nearest archive rows by Euclidean distance, ties by archive order."""
    archive = np.asarray(archive, dtype=np.float32)
    sq = (archive**2).sum(1)
    out = np.empty((len(queries), min(k, len(archive))), dtype=np.int64)
    for s in range(0, len(queries), batch):
        q = np.asarray(queries[s : s + batch], dtype=np.float32)
        d = sq[None, :] - 2.0 * q @ archive.T
        out[s : s + len(q)] = np.argsort(d, axis=1, kind="stable")[:, : out.shape[1]]
    return out


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
        raise LookalikeError(
            f"posteriors of shape {proba.shape} do not match {len(labels)} items and {len(classes)} classes"
        )
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
        n=len(labels),
        n_accepted=int(accepted.sum()),
        balanced_accuracy=float(np.mean(recalls)) if recalls else None,
        nll=float(-np.log(np.clip(true_p, 1e-12, 1.0)).mean()),
        ece=expected_calibration_error(confidence, correct),
        unknown_labels=sorted(set(labels[~known].tolist())),
        per_class=per_class,
    )


def threshold_curve(
    labels, proba: np.ndarray, classes: list[str], thresholds: np.ndarray | None = None
) -> dict:
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


def distance_recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k distances (a multiset) that ``found`` reproduces: rows tied at
    the k-th distance are interchangeable, so rows are not compared."""
    found, exact = np.asarray(found, np.int64), np.asarray(exact, np.int64)
    if len(exact) == 0:
        return 1.0
    top = int(max(exact.max(), found.max() if len(found) else 0)) + 1
    return float(
        np.minimum(np.bincount(found, minlength=top), np.bincount(exact, minlength=top)).sum() / len(exact)
    )
