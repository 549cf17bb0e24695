"""The classifier commands (train-classifier, eval classify) on a synthetic folder, and the
shipped models on real data.

The probe, its calibration and its metrics are tested in tests/models/test_classifier.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lookalike_testkit import assert_user_error, run_main

from lookalike.config import features_dir
from lookalike.models.classifier import load_classifier

# real models, subprocesses and whole builds: `make test` runs these, `make test-fast` does not
pytestmark = pytest.mark.slow

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
    code, stdout, stderr = run_main(
        [
            "train-classifier",
            "--images",
            tiny_folder,
            "--labels",
            tiny_folder / "labels.csv",
            "--out",
            out,
            "--hidden",
            "16",
            "--epochs",
            "30",
            "--folds",
            "3",
            "--val-split",
            "val",
            "--group-pattern",
            r"^\d{2}",
        ],
        LOOKALIKE_CACHE=cache,
    )
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
    code, stdout, stderr = run_main(
        [
            "eval",
            "classify",
            "--model",
            out,
            "--images",
            tiny_folder,
            "--labels",
            tiny_folder / "labels.csv",
            "--split",
            "val",
            "--threshold",
            "0.5",
            "--json",
            js,
        ]
    )
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


def test_finetune_cli_smoke(tiny_folder, tmp_path):
    """`train-classifier --finetune` on 30 tiny images finishes in seconds (the last trunk
    modules only), saves a calibrated model with its tail and test-time views, and `eval
    classify` runs it through the fine-tuned network; an interrupted stem cache resumes."""
    import time

    out, js = tmp_path / "ft.npz", tmp_path / "ft.json"
    args = [
        "train-classifier",
        "--finetune",
        "--images",
        tiny_folder,
        "--labels",
        tiny_folder / "labels.csv",
        "--cut",
        "19",
        "--epochs",
        "3",
        "--tta",
        "2",
        "--val-split",
        "val",
        "--group-pattern",
        r"^\d{2}",
        "--out",
        out,
        "--json",
        js,
    ]
    t0 = time.perf_counter()
    code, _, stderr = run_main(args)
    assert code == 0, stderr
    assert time.perf_counter() - t0 < 120  # a smoke run, not a benchmark: generous on busy cores
    report = json.loads(js.read_text())
    assert report["views"] == 2 and report["temperature"] > 0
    assert report["n_train"] + report["n_calibration"] == 30 and report["n_calibration"] >= 3
    assert 0.0 <= report["val"]["accuracy"] <= 1.0 and "balanced_accuracy" in report["val"]
    model = load_classifier(out)
    assert model.tail and model.cut == 19 and model.views == 2 and model.hidden == 0
    assert model.meta["training"]["steps"] >= 3
    assert report["resumed_after_epoch"] == 0
    assert not list(features_dir().glob("finetune-*.pt"))  # the training's checkpoint goes with its model
    code, stdout, stderr = run_main(
        [
            "eval",
            "classify",
            "--model",
            out,
            "--images",
            tiny_folder,
            "--labels",
            tiny_folder / "labels.csv",
            "--split",
            "val",
        ]
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["fine_tuned"] and result["views"] == 2 and result["n"] == 12
    assert abs(result["accuracy"] - report["val"]["accuracy"]) < 1e-9  # same path as the report
    code, _, stderr = run_main([*args[:-4], "--cut", "99", "--out", tmp_path / "bad.npz"])
    assert_user_error(code, stderr, "cut")


def test_finetune_calibrated_on_val_reports_cross_fitted_figures(tiny_folder, tmp_path):
    """--calibrate-on val: the whole train split trains, the temperature comes from val, and
    the report adds val figures with each half scored by the temperature of the other half."""
    js = tmp_path / "ft.json"
    args = [
        "train-classifier",
        "--finetune",
        "--images",
        tiny_folder,
        "--labels",
        tiny_folder / "labels.csv",
        "--cut",
        "19",
        "--epochs",
        "2",
        "--val-split",
        "val",
        "--group-pattern",
        r"^\d{2}",
    ]
    code, _, stderr = run_main([*args, "--calibrate-on", "val", "--out", tmp_path / "ft.npz", "--json", js])
    assert code == 0, stderr
    report = json.loads(js.read_text())
    assert report["n_train"] == 30 and report["n_calibration"] == 12
    assert report["calibration"]["split"] == "val"
    cross = report["calibration_cross_fitted"]
    assert len(cross["temperatures"]) == 2 and 0.0 <= cross["abstention_rate"] <= 1.0
    assert load_classifier(tmp_path / "ft.npz").meta["calibration_cross_fitted"] == cross
    code, _, stderr = run_main([*args, "--calibrate-on", "train", "--out", tmp_path / "bad.npz"])
    assert_user_error(code, stderr, "another split")


def test_cli_errors_are_one_line(tiny_folder, tmp_path):
    code, _, stderr = run_main(
        [
            "eval",
            "classify",
            "--model",
            tmp_path / "nope.npz",
            "--images",
            tiny_folder,
            "--labels",
            tiny_folder / "labels.csv",
            "--split",
            "val",
        ]
    )
    assert_user_error(code, stderr, "does not exist")
    not_a_model = tmp_path / "bad.npz"
    not_a_model.write_bytes(b"not a zip")
    code, _, stderr = run_main(
        [
            "eval",
            "classify",
            "--model",
            not_a_model,
            "--images",
            tiny_folder,
            "--labels",
            tiny_folder / "labels.csv",
            "--split",
            "val",
        ]
    )
    assert_user_error(code, stderr, "not a readable")
    code, _, stderr = run_main(
        [
            "train-classifier",
            "--images",
            tiny_folder,
            "--labels",
            tiny_folder / "labels.csv",
            "--split",
            "nosuch",
            "--out",
            tmp_path / "m.npz",
        ]
    )
    assert_user_error(code, stderr, "nosuch")
    code, _, stderr = run_main(
        [
            "train-classifier",
            "--images",
            tiny_folder,
            "--labels",
            tiny_folder / "labels.csv",
            "--group-pattern",
            "^zz",
            "--out",
            tmp_path / "m.npz",
        ]
    )
    assert_user_error(code, stderr, "matches no part")


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
    code, _, stderr = run_main(
        [
            "eval",
            "classify",
            "--model",
            name,
            "--images",
            root,
            "--labels",
            tmp_path / "labels.csv",
            "--split",
            "val",
            "--json",
            js,
        ]
    )
    assert code == 0, stderr
    result = json.loads(js.read_text())
    assert result["n"] == len(subset) and result["threshold"] == 0.9
    assert 0.0 <= result["abstention_rate"] <= 1.0
    assert result["accuracy"] > 0.4
    assert set(result["per_class"]) >= set(subset["label"])
    assert js.with_suffix(".png").is_file()
