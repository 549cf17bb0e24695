"""`lookalike train-hash`, `eval retrieval` and `index --hash` on a tiny synthetic image folder.

The folder holds 3 visually distinct classes of 32 px chips (dark craters on a light ground,
brown stripes, smooth blue gradients); the real EfficientNet-Lite0 encodes them at 64 px on the
CPU. Features go to a temporary LOOKALIKE_CACHE, shared by the tests of this module.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from lookalike_testkit import assert_user_error, run_main
from PIL import Image

# real models, subprocesses and whole builds: `make test` runs these, `make test-fast` does not
pytestmark = pytest.mark.slow

CLASSES = ("crater", "dune", "plain")
SPLITS = dict(train=8, val=3)
SIZE = "64"  # --image-size: small, so the backbone is quick on a CPU


def synthetic_chip(label: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if label == "crater":
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.2, size * 0.35)
        d = np.hypot(yy - cy, xx - cx)
        grey = np.where(d < r, 40.0, 200.0) + np.where(np.abs(d - r) < 2, 60.0, 0.0)
        rgb = np.stack([grey, grey * 0.9, grey * 0.8], -1)
    elif label == "dune":
        f, phase, angle = rng.uniform(0.5, 0.9), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
        wave = np.sin(f * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        rgb = np.stack([170 + 70 * wave, 110 + 50 * wave, 40 + 20 * wave], -1)
    else:
        g = rng.uniform(-1, 1, 2)
        base = 90 + 30 * (g[0] * xx + g[1] * yy) / size
        rgb = np.stack([base * 0.5, base * 1.2, base * 1.6], -1)
    return np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path]:
    """ROOT/{class}/{split}_{i}.png (JPEG for the val split) and ROOT/labels.csv."""
    root = tmp_path_factory.mktemp("chips")
    rng = np.random.default_rng(0)
    rows = []
    for label in CLASSES:
        (root / label).mkdir()
        for split, n in SPLITS.items():
            for i in range(n):
                rel = f"{label}/{split}_{i}.{'jpg' if split == 'val' else 'png'}"
                Image.fromarray(synthetic_chip(label, rng)).save(root / rel)
                rows.append(f"{rel},{label},{split}")
    labels = root / "labels.csv"
    labels.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return root, labels


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="module")
def trained(folder, cache, tmp_path_factory) -> tuple[Path, dict, Path]:
    root, labels = folder
    out = tmp_path_factory.mktemp("model")
    model, report = out / "head.npz", out / "report.json"
    code, stdout, stderr = run_main(
        [
            "train-hash",
            "--images",
            root,
            "--labels",
            labels,
            "--epochs",
            "3",
            "--bits",
            "32",
            "--val-split",
            "val",
            "--image-size",
            SIZE,
            "--out",
            model,
            "--json",
            report,
        ],
        LOOKALIKE_CACHE=cache,
    )
    assert code == 0, stderr
    return model, json.loads(report.read_text()), cache


def _json(stdout: str) -> dict:
    return json.loads(stdout)


def test_train_hash_cli_writes_model_and_report(trained, folder):
    import hashlib

    from lookalike.models.hashing import NetworkHash, load_hash_model

    model_path, report, cache = trained
    assert model_path.is_file()
    assert report["out"] == str(model_path)
    assert (report["method"], report["bits"], report["n_train"]) == ("mirs-triplet", 32, 3 * SPLITS["train"])
    assert report["val_split"] == "val" and report["k"] == 64
    assert 0.0 <= report["val_precision_at_k"] <= 1.0
    # three distinct classes (float features: mAP 0.96): the code finds them (about 0.8; chance is
    # about 0.4, and so is a code swamped by features that never fired in training)
    assert 0.7 < report["val_map_at_k"] <= 1.0
    assert report["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    model = load_hash_model(model_path)
    assert isinstance(model, NetworkHash)
    assert (model.bits, model.method, model.backbone) == (32, "mirs-triplet", "efficientnet_lite0")
    assert model.meta["trained_on"] == dict(data=folder[0].name, split="train", n=24, image_size=64)
    assert model.meta["val"]["map_at_k"] == pytest.approx(report["val_map_at_k"])
    assert model.meta["epochs"] == 3
    assert any(cache.iterdir())  # features went to LOOKALIKE_CACHE


def test_eval_retrieval_with_trained_model(trained, folder):
    model_path, report, cache = trained
    root, labels = folder
    code, stdout, stderr = run_main(
        [
            "eval",
            "retrieval",
            "--images",
            root,
            "--labels",
            labels,
            "--query-split",
            "val",
            "--k",
            "64",
            "--image-size",
            SIZE,
            "--hash",
            model_path,
        ],
        LOOKALIKE_CACHE=cache,
    )
    assert code == 0, stderr
    result = _json(stdout)
    assert (result["bits"], result["method"], result["bytes_per_item"]) == (32, "mirs-triplet-32", 4)
    assert (result["n_queries"], result["n_archive"]) == (9, 24)
    # the same model, archive and queries as the report of train-hash: the same number
    assert result["map_at_k"] == pytest.approx(report["val_map_at_k"])


def test_eval_retrieval_wrong_bits_for_model_file(trained, folder):
    model_path, _, cache = trained
    root, labels = folder
    code, _, stderr = run_main(
        [
            "eval",
            "retrieval",
            "--images",
            root,
            "--labels",
            labels,
            "--query-split",
            "val",
            "--image-size",
            SIZE,
            "--hash",
            model_path,
            "--bits",
            "64",
        ],
        LOOKALIKE_CACHE=cache,
    )
    assert_user_error(code, stderr, "32-bit", "64")


def test_index_images_with_trained_model(trained, folder, tmp_path):
    model_path, _, cache = trained
    root, labels = folder
    out = tmp_path / "idx"
    code, stdout, stderr = run_main(
        [
            "index",
            "--images",
            root,
            "--labels",
            labels,
            "--split",
            "val",
            "--image-size",
            SIZE,
            "--hash",
            model_path,
            "--out",
            out,
        ],
        LOOKALIKE_CACHE=cache,
    )
    assert code == 0, stderr
    info = _json(stdout)
    assert (info["count"], info["bits"], info["hash"], info["kind"]) == (9, 32, "mirs-triplet", "images")


def test_train_hash_cli_unsupervised_without_val(folder, cache, tmp_path):
    from lookalike.models.hashing import load_hash_model

    root, labels = folder
    out = tmp_path / "ae.npz"
    code, stdout, stderr = run_main(
        [
            "train-hash",
            "--images",
            root,
            "--labels",
            labels,
            "--method",
            "descartes-autoencoder",
            "--epochs",
            "2",
            "--bits",
            "16",
            "--image-size",
            SIZE,
            "--out",
            out,
        ],
        LOOKALIKE_CACHE=cache,
    )
    assert code == 0, stderr
    report = _json(stdout)
    assert (report["method"], report["bits"]) == ("descartes-autoencoder", 16)
    assert "val_map_at_k" not in report
    assert load_hash_model(out).bits == 16


def test_train_hash_cli_user_errors(folder, cache, tmp_path):
    root, labels = folder
    base = [
        "train-hash",
        "--images",
        root,
        "--labels",
        labels,
        "--epochs",
        "1",
        "--image-size",
        SIZE,
        "--out",
        tmp_path / "m.npz",
    ]
    assert_user_error(*run_main(base + ["--bits", "12"], LOOKALIKE_CACHE=cache)[::2], "multiple of 8")
    assert_user_error(*run_main(base + ["--split", "nope"], LOOKALIKE_CACHE=cache)[::2], "nope")
    assert not (tmp_path / "m.npz").exists()


# ------------------------------------------------------------------ a known answer
@pytest.fixture(scope="module")
def duplicates(folder) -> tuple[Path, Path]:
    """Queries that are byte-identical copies of archive images, one of them mislabelled.

    With k = 1 the nearest archive image of each query is its own original (distance 0), so
    the query is a hit exactly when its label is the original's: 2 hits of 3, mAP@1 = 2/3.
    """
    root, _ = folder
    rows = [f"{label}/train_{i}.png,{label},train" for label in CLASSES for i in range(SPLITS["train"])]
    (root / "dup").mkdir(exist_ok=True)
    for name, original, label in (
        ("a.png", "crater/train_2.png", "crater"),
        ("b.png", "dune/train_5.png", "dune"),
        ("c.png", "plain/train_0.png", "crater"),
    ):  # mislabelled
        shutil.copyfile(root / original, root / "dup" / name)
        rows.append(f"dup/{name},{label},query")
    csv = root / "known.csv"
    csv.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return root, csv


def test_eval_retrieval_known_answer(duplicates, cache, tmp_path):
    root, csv = duplicates
    out = tmp_path / "eval.json"
    code, stdout, stderr = run_main(
        [
            "eval",
            "retrieval",
            "--images",
            root,
            "--labels",
            csv,
            "--query-split",
            "query",
            "--k",
            "1",
            "--image-size",
            SIZE,
            "--json",
            out,
            "--float",
        ],
        LOOKALIKE_CACHE=cache,
    )
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert result == _json(stdout)
    assert result["map_at_k"] == pytest.approx(2 / 3)
    assert result["precision_at_k"] == pytest.approx(2 / 3)
    assert (result["n_queries"], result["n_archive"], result["k"]) == (3, 24, 1)
    assert result["method"] == "float-efficientnet_lite0-euclidean" and result["bits"] == 32 * 1280


def test_eval_retrieval_on_the_multilevel_backbone(duplicates, cache, tmp_path):
    """``--backbone`` reaches the encoder: its features (1,392 values) feed PCA-ITQ; the default code,
    which reads the plain head, is refused with a hint rather than fed the wrong features."""
    root, csv = duplicates
    common = [
        "eval",
        "retrieval",
        "--images",
        root,
        "--labels",
        csv,
        "--query-split",
        "query",
        "--k",
        "1",
        "--image-size",
        SIZE,
        "--backbone",
        "efficientnet_lite0_multilevel",
    ]
    code, stdout, stderr = run_main([*common, "--hash", "itq", "--bits", "32"], LOOKALIKE_CACHE=cache)
    assert code == 0, stderr
    result = _json(stdout)
    assert result["backbone"] == "efficientnet_lite0_multilevel" and result["bits"] == 32
    assert 0 < result["map_at_k"] <= 1
    code, _, stderr = run_main(common, LOOKALIKE_CACHE=cache)
    assert code != 0 and "efficientnet_lite0 features" in stderr and "--hash itq" in stderr


def test_eval_metrics_known_answer_from_ranking():
    """The scorer the command uses, on a ranking written out by hand."""
    from lookalike.models.metrics import retrieval_scores

    archive = np.array(["crater", "dune", "crater", "plain", "crater", "dune"])
    queries = np.array(["crater", "dune", "plain"])
    ranked = np.array(
        [
            [0, 1, 2],  # hits at 1, 3; R = 3: (1 + 2/3) / 3
            [3, 5, 1],  # hits at 2, 3; R = 2: (1/2 + 2/3) / 2
            [3, 0, 1],
        ]
    )  # hit at 1; R = 1: 1
    scores = retrieval_scores(queries, archive, ranked, 3)
    expected = ((1 + 2 / 3) / 3 + (1 / 2 + 2 / 3) / 2 + 1.0) / 3
    assert scores["map_at_k"] == pytest.approx(expected)
    assert scores["precision_at_k"] == pytest.approx(5 / 9)


# ------------------------------------------------------------------ the default's recipe
def test_train_hash_similarity_cli(folder, cache, tmp_path):
    """`--method similarity` on a labelled and an 'unlabelled' copy of the folder: a model whose
    manifest of data says what it saw, and val mAP@64 reported per folder."""
    root, labels = folder
    other = tmp_path / "unlabelled"
    shutil.copytree(root, other)
    out, report = tmp_path / "sim.npz", tmp_path / "sim.json"
    code, _, err = run_main(
        [
            "train-hash",
            "--method",
            "similarity",
            "--labelled",
            f"{root}={labels}",
            "--unlabelled",
            f"{other}={other / 'labels.csv'}",
            "--steps",
            "40",
            "--bits",
            "32",
            "--image-size",
            SIZE,
            "--val-split",
            "val",
            "--out",
            out,
            "--json",
            report,
        ],
        LOOKALIKE_CACHE=cache,
    )
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["method"] == "similarity" and result["bits"] == 32 and result["views"] == 2
    assert set(result["val"]) == {root.name, "unlabelled"}
    assert result["val"][root.name]["map_at_k"] > 1 / len(CLASSES)  # above chance
    from lookalike.models.hashing import load_hash_model

    model = load_hash_model(out)
    assert model.meta["trained_on"]["labelled"] == [root.name] and model.meta["similarity"]["balanced"]
    # a malformed folder argument and options of another method are one-line errors
    bad = ["train-hash", "--method", "similarity", "--labelled", str(root), "--out", tmp_path / "x.npz"]
    assert_user_error(*run_main(bad, LOOKALIKE_CACHE=cache)[::2], "ROOT=LABELS_CSV")
    wrong = [
        "train-hash",
        "--images",
        root,
        "--labels",
        labels,
        "--mosaic",
        "mars_8k",
        "--out",
        tmp_path / "x.npz",
    ]
    assert_user_error(*run_main(wrong, LOOKALIKE_CACHE=cache)[::2], "--mosaic is for --method similarity")
    assert not (tmp_path / "x.npz").exists()


def test_index_fitted_on_its_archive_records_the_fit_and_appends_with_it(folder, cache, tmp_path):
    """`--hash itq` fits the code on the index's own images; the index records that model and
    an appended split is encoded with it, not with a code fitted again."""
    from lookalike.indexer.encoding import Encoder
    from lookalike.indexer.features import image_features
    from lookalike.indexer.image_folders import read_labels
    from lookalike.indexer.store import open_index
    from lookalike.models.hashing import load_hash_model

    root, labels = folder
    out = tmp_path / "idx"
    base = ["index", "--images", root, "--labels", labels, "--image-size", SIZE, "--out", out]
    code, _, err = run_main(
        base + ["--split", "train", "--hash", "itq", "--bits", "32"], LOOKALIKE_CACHE=cache
    )
    assert code == 0, err
    first = open_index(out)
    assert first.manifest["hash"]["method"] == "pca-itq" and first.manifest["hash"]["meta"]["n_train"] == 24
    stored = first.hash_model_path.read_bytes()
    code, _, err = run_main(base + ["--split", "val", "--append"], LOOKALIKE_CACHE=cache)
    assert code == 0, err
    index = open_index(out)
    assert index.n == 33 and index.hash_model_path.read_bytes() == stored
    model = load_hash_model(index.hash_model_path)
    val = read_labels(root, labels, split="val")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKALIKE_CACHE", str(cache))
        feats = image_features(root, val, Encoder(image_size=int(SIZE), views=index.views), progress=False)
    np.testing.assert_array_equal(np.asarray(index.codes)[24:], model.encode(feats))
