"""Classifiers: a calibrated probe on frozen backbone features and its metrics.

The two commands (train-classifier, eval classify) are tested in tests/workflows/test_classifier_cli.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.data.shipped import shipped_classifier_path
from lookalike.models.classifier import (
    ClassifierConfig,
    ProbeClassifier,
    fit_temperature,
    load_classifier,
    make_folds,
    nll,
    resolve_classifier,
    softmax,
    train_classifier,
)
from lookalike.models.metrics import classification_metrics, threshold_curve


# ------------------------------------------------------------------ shipped models
@pytest.mark.parametrize("name, n_classes", [("hirise", 6), ("msl", 24)])
def test_shipped_model_resolves(name, n_classes):
    path = resolve_classifier(name)
    assert path == shipped_classifier_path(name) and path.parent.name == "weights"
    assert path.stat().st_size < 2_000_000  # small enough to ship (a fine-tuned tail is ~1.8 MB)
    model = load_classifier(name)
    assert len(model.classes) == n_classes and model.in_features == 1280
    assert model.views in (1, 2, 4, 8) and (model.tail is None or model.cut is not None)
    assert 0.05 < model.temperature < 20
    assert model.meta["val"]["accuracy"] > 0.5


# ------------------------------------------------------------------ calibration
def test_temperature_lowers_nll_of_overconfident_model():
    rng = np.random.default_rng(0)
    n, c = 2000, 4
    targets = rng.integers(0, c, n)
    # honest logits: the true class gets +1.5, so the argmax is right ~60% of the time
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), targets] += 1.5
    overconfident = 8.0 * logits
    t = fit_temperature(overconfident, targets)
    assert t > 3.0
    assert nll(overconfident, targets, t) < 0.5 * nll(overconfident, targets)
    assert nll(overconfident, targets, t) <= nll(overconfident, targets, t * 1.1) + 1e-9
    assert nll(overconfident, targets, t) <= nll(overconfident, targets, t / 1.1) + 1e-9
    # argmax, hence accuracy, is unchanged by a temperature
    assert (softmax(overconfident / t).argmax(1) == overconfident.argmax(1)).all()
    # an under-confident model is sharpened
    assert fit_temperature(0.2 * logits, targets) < 1.0


def test_trained_probe_is_calibrated_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (3, 20))
    labels = np.repeat(np.array(["a", "b", "c"]), 60)
    x = centres[np.repeat(np.arange(3), 60)] + rng.normal(0, 1.2, (180, 20))
    model, report = train_classifier(
        x, labels, config=ClassifierConfig(hidden=8, epochs=15), folds=3, progress=False
    )
    assert report["cv_accuracy"] > 0.8
    assert model.meta["cv"]["nll"] <= model.meta["cv"]["nll_uncalibrated"] + 1e-9
    path = tmp_path / "m.npz"
    model.save(path)
    again = ProbeClassifier.load(path)
    np.testing.assert_allclose(again.predict_proba(x), model.predict_proba(x), atol=1e-5)
    assert again.classes == ["a", "b", "c"] and again.temperature == model.temperature


def test_grouped_folds_keep_groups_together():
    groups = np.repeat(np.arange(12), 5)
    ids = np.arange(60) % 3
    fold = make_folds(60, ids, groups, 4)
    for g in range(12):
        assert len(set(fold[groups == g])) == 1
    assert set(fold) == {0, 1, 2, 3}


# ------------------------------------------------------------------ metrics, by hand
def test_metrics_against_hand_computed_example():
    classes = ["a", "b", "c"]
    labels = np.array(["a", "a", "a", "b", "b", "c"])
    proba = np.array(
        [
            [0.95, 0.03, 0.02],  # a, right, confident
            [0.60, 0.30, 0.10],  # a, right, abstained at 0.9
            [0.05, 0.92, 0.03],  # a, wrong (b), confident
            [0.02, 0.97, 0.01],  # b, right, confident
            [0.50, 0.40, 0.10],  # b, wrong (a), abstained
            [0.01, 0.01, 0.98],  # c, right, confident
        ]
    )
    m = classification_metrics(labels, proba, classes, threshold=0.9)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["abstention_rate"] == pytest.approx(2 / 6)
    assert m["accuracy_at_threshold"] == pytest.approx(3 / 4)  # rows 0, 2, 3, 5 accepted; 2 wrong
    a, b, c = m["per_class"]["a"], m["per_class"]["b"], m["per_class"]["c"]
    # predicted a: rows 0, 1, 4 (2 right); predicted b: rows 2, 3 (1 right); predicted c: row 5
    assert a["precision"] == pytest.approx(2 / 3) and a["recall"] == pytest.approx(2 / 3)
    assert b["precision"] == pytest.approx(1 / 2) and b["recall"] == pytest.approx(1 / 2)
    assert c["precision"] == 1.0 and c["recall"] == 1.0
    assert (a["support"], b["support"], c["support"]) == (3, 2, 1)
    assert a["abstention_rate"] == pytest.approx(1 / 3) and a["accuracy_at_threshold"] == pytest.approx(1 / 2)
    assert b["abstention_rate"] == pytest.approx(1 / 2) and b["accuracy_at_threshold"] == 1.0
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.95, 0.60, 0.05, 0.97, 0.40, 0.98])))
    # everything abstained: accuracy on the accepted is undefined, not 0
    none = classification_metrics(labels, proba, classes, threshold=0.99)
    assert none["accuracy_at_threshold"] is None and none["abstention_rate"] == 1.0
    curve = threshold_curve(labels, proba, classes, thresholds=np.array([0.0, 0.9, 0.99]))
    assert curve["abstention_rate"] == pytest.approx([0.0, 2 / 6, 1.0])
    assert curve["accuracy_at_threshold"][:2] == pytest.approx([4 / 6, 3 / 4])
