"""Classifiers: a calibrated probe on frozen backbone features, its metrics and its two commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import assert_user_error, run_main

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

CLASSES = ("red_noise", "green_stripes", "blue_checks")


def _image(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size, 3), dtype=np.float64)
    if kind == "red_noise":
        img[..., 0] = 200
        img += rng.normal(0, 40, img.shape)
    elif kind == "green_stripes":
        period = rng.integers(4, 8)
        img[..., 1] = np.where((xx // period) % 2 == 0, 230, 30)[...]
    else:
        cell = rng.integers(4, 8)
        img[..., 2] = np.where(((xx // cell) + (yy // cell)) % 2 == 0, 240, 20)
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """42 tiny PNGs of 3 visually distinct classes; 30 train and 12 val."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_classes")
    rng = np.random.default_rng(0)
    rows = []
    for kind in CLASSES:
        (root / kind).mkdir()
        for i in range(14):
            path = f"{kind}/{i:02d}.png"
            Image.fromarray(_image(kind, rng)).save(root / path)
            rows.append(dict(path=path, label=kind, split="train" if i < 10 else "val"))
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))


@pytest.fixture(scope="module")
def tiny_model(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_model") / "clf.npz"
    cache = tmp_path_factory.getbasetemp() / "feature-cache"
    code, stdout, stderr = run_main(["train-classifier", "--images", tiny_folder, "--labels",
                                     tiny_folder / "labels.csv", "--out", out, "--hidden", "16",
                                     "--epochs", "30", "--folds", "3", "--val-split", "val",
                                     "--group-pattern", r"^\d{2}"],
                                    LOOKALIKE_CACHE=cache)
    assert code == 0, stderr
    return out, json.loads(stdout)


# ------------------------------------------------------------------ CLI on a synthetic folder
def test_train_classifier_cli(tiny_model):
    out, report = tiny_model
    assert out.is_file() and out.stat().st_size < 200_000
    assert sorted(report["classes"]) == sorted(CLASSES)
    assert report["n_train"] == 30
    assert report["val"]["accuracy"] >= 0.9  # the three classes differ at a glance
    assert report["temperature"] > 0
    model = load_classifier(out)
    assert model.hidden == 16 and model.image_size == 224 and model.backbone == "efficientnet_lite0"
    assert model.meta["trained_on"]["split"] == "train"
    assert model.meta["trained_on"]["group_column"].startswith("pattern") and model.meta["cv"]["grouped"]


def test_eval_classify_cli(tiny_model, tiny_folder, tmp_path):
    out, _ = tiny_model
    js = tmp_path / "eval.json"
    code, stdout, stderr = run_main(["eval", "classify", "--model", out, "--images", tiny_folder,
                                     "--labels", tiny_folder / "labels.csv", "--split", "val",
                                     "--threshold", "0.5", "--json", js])
    assert code == 0, stderr
    result = json.loads(js.read_text())
    assert json.loads(stdout) == result
    for key in ("accuracy", "accuracy_at_threshold", "abstention_rate", "threshold", "per_class"):
        assert key in result
    assert result["threshold"] == 0.5 and result["n"] == 12
    assert set(result["per_class"]) == set(CLASSES)
    assert {"precision", "recall", "support"} <= set(result["per_class"]["blue_checks"])
    png = js.with_suffix(".png")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_one_line(tiny_folder, tmp_path):
    code, _, stderr = run_main(["eval", "classify", "--model", tmp_path / "nope.npz", "--images",
                                tiny_folder, "--labels", tiny_folder / "labels.csv", "--split", "val"])
    assert_user_error(code, stderr, "does not exist")
    not_a_model = tmp_path / "bad.npz"
    not_a_model.write_bytes(b"not a zip")
    code, _, stderr = run_main(["eval", "classify", "--model", not_a_model, "--images", tiny_folder,
                                "--labels", tiny_folder / "labels.csv", "--split", "val"])
    assert_user_error(code, stderr, "not a readable")
    code, _, stderr = run_main(["train-classifier", "--images", tiny_folder, "--labels",
                                tiny_folder / "labels.csv", "--split", "nosuch", "--out", tmp_path / "m.npz"])
    assert_user_error(code, stderr, "nosuch")
    code, _, stderr = run_main(["train-classifier", "--images", tiny_folder, "--labels",
                                tiny_folder / "labels.csv", "--group-pattern", "^zz", "--out", tmp_path / "m.npz"])
    assert_user_error(code, stderr, "matches no part")


# ------------------------------------------------------------------ shipped models
@pytest.mark.parametrize("name, n_classes", [("hirise", 6), ("msl", 24)])
def test_shipped_model_resolves(name, n_classes):
    path = resolve_classifier(name)
    assert path == shipped_classifier_path(name) and path.parent.name == "weights"
    assert path.stat().st_size < 2_000_000
    model = load_classifier(name)
    assert len(model.classes) == n_classes and model.in_features == 1280
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
    model, report = train_classifier(x, labels, config=ClassifierConfig(hidden=8, epochs=15), folds=3,
                                     progress=False)
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
    proba = np.array([
        [0.95, 0.03, 0.02],  # a, right, confident
        [0.60, 0.30, 0.10],  # a, right, abstained at 0.9
        [0.05, 0.92, 0.03],  # a, wrong (b), confident
        [0.02, 0.97, 0.01],  # b, right, confident
        [0.50, 0.40, 0.10],  # b, wrong (a), abstained
        [0.01, 0.01, 0.98],  # c, right, confident
    ])
    m = classification_metrics(labels, proba, classes, threshold=0.9)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["abstention_rate"] == pytest.approx(2 / 6)
    assert m["accuracy_at_threshold"] == pytest.approx(3 / 4)   # rows 0, 2, 3, 5 accepted; 2 wrong
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


# ------------------------------------------------------------------ the shipped models on real data
@pytest.mark.slow
@pytest.mark.parametrize("name, folder, per_class", [("hirise", "hirise_v1", 5), ("msl", "msl_curiosity", 2)])
def test_shipped_models_on_real_val_subset(data_dir, name, folder, per_class, tmp_path):
    root = data_dir / folder
    if not (root / "labels.csv").is_file():
        pytest.skip(f"{root}/labels.csv not found in the shared data folder")
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    subset = table[table["split"] == "val"].groupby("label").head(per_class)
    subset.to_csv(tmp_path / "labels.csv", index=False)
    js = tmp_path / "eval.json"
    code, _, stderr = run_main(["eval", "classify", "--model", name, "--images", root, "--labels",
                                tmp_path / "labels.csv", "--split", "val", "--json", js])
    assert code == 0, stderr
    result = json.loads(js.read_text())
    assert result["n"] == len(subset) and result["threshold"] == 0.9
    assert 0.0 <= result["abstention_rate"] <= 1.0
    assert result["accuracy"] > 0.4
    assert set(result["per_class"]) >= set(subset["label"])
    assert js.with_suffix(".png").is_file()
