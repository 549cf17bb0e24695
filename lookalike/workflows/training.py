"""Training on image folders and indexes: hashing heads and landmark classifiers."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lookalike.config import features_dir
from lookalike.data.registry import DATASETS
from lookalike.errors import LookalikeError
from lookalike.indexer.defaults import CLASSIFIER_VIEWS, DEFAULT_VIEWS, ORIENTATIONS
from lookalike.indexer.encoding import Encoder, classifier_encoder
from lookalike.indexer.features import (
    augmented_features,
    folder_features,
    image_features,
    mosaic_features,
    stem_activations,
)
from lookalike.indexer.search import rank_hamming
from lookalike.indexer.sources import read_labels
from lookalike.indexer.store import open_index
from lookalike.indexer.thumbnails import index_grid, index_source_image
from lookalike.models.augment import augment
from lookalike.models.backbones import Backbone, create_backbone
from lookalike.models.classifier import (
    DEFAULT_GRID,
    ClassifierConfig,
    ProbeClassifier,
    fit_temperature,
    make_folds,
    nll,
    softmax,
    train_classifier,
)
from lookalike.models.defaults import DEFAULT_BACKBONE
from lookalike.models.finetune import (
    FinetuneConfig,
    TailClassifier,
    check_cut,
    default_cut,
    finetune_tail,
    tail_logits,
)
from lookalike.models.metrics import classification_metrics, retrieval_scores
from lookalike.models.training import (
    SUPERVISED,
    SimilarityConfig,
    TrainConfig,
    train_hash,
    train_similarity_hash,
)


def _fold_groups(table, labels_csv, group_column: str | None, group_pattern: str | None):
    """(groups per row or None, a description): ``group_column``, by default ``source_image``
    when the CSV has it, or the part of each file name matching ``group_pattern``."""
    if group_column and group_pattern:
        raise LookalikeError("group folds by a column or by a file-name pattern, not both")
    if group_column is None and group_pattern is None and "source_image" in table.columns:
        group_column = "source_image"
    if group_column is not None and group_column not in table.columns:
        raise LookalikeError(f"labels CSV {labels_csv} has no column {group_column!r} to group folds by")
    if not group_pattern:
        return (table[group_column].to_numpy() if group_column else None), group_column
    import re

    try:
        regex = re.compile(group_pattern)
    except re.error as exc:
        raise LookalikeError(f"group pattern {group_pattern!r} is not a regular expression: {exc}") from None
    names = [Path(p).name for p in table["path"]]
    found = [regex.search(n) for n in names]
    if not all(found):
        bad = [n for n, m in zip(names, found) if not m]
        raise LookalikeError(f"group pattern {group_pattern!r} matches no part of {len(bad)} file "
                             f"name(s), e.g. {bad[0]}")
    return np.array([m.group(0) for m in found]), f"pattern {group_pattern}"


def train_classifier_from_folder(root, labels_csv, out, *, split: str = "train",
                                 val_split: str | None = None, config: ClassifierConfig | None = None,
                                 search: bool = False, folds: int = 5, group_column: str | None = None,
                                 group_pattern: str | None = None, image_size: int = 224,
                                 backbone: str = DEFAULT_BACKBONE, progress: bool = True) -> dict:
    """Train on one split of a labelled image folder and save to ``out``; report ``val_split``.

    Folds are grouped by ``group_column``, by default ``source_image`` when the CSV has it, or
    by the part of each file name that the regular expression ``group_pattern`` matches (e.g.
    ``^\\d{4}``: the sol of an MSL image), so near-duplicates of one scene or day stay together.
    Augmented views are used only when the chosen setting asks for them (cached per view).
    """

    cfg = config or ClassifierConfig()
    if folds < 2:
        raise LookalikeError(f"folds must be at least 2, got {folds}")
    if cfg.hidden < 0 or cfg.epochs < 1 or cfg.views < 0:
        raise LookalikeError("hidden and views must be >= 0 and epochs >= 1")
    table = read_labels(root, labels_csv, split=split)
    groups, group_column = _fold_groups(table, labels_csv, group_column, group_pattern)
    n_classes = table["label"].nunique()
    counts = table["label"].value_counts()
    if len(table) < 2 * folds:
        raise LookalikeError(f"{len(table)} labelled images are too few for {folds}-fold calibration")
    encoder = Encoder(backbone, image_size=image_size, views=CLASSIFIER_VIEWS)
    feats = folder_features(root, table, progress=progress, encoder=encoder)
    grid = DEFAULT_GRID if search else None
    # --views caps the augmented views used (each is one more pass of the backbone, cached)
    n_views = cfg.views
    if grid:
        grid = [g for g in grid if g.get("views", 0) <= n_views]
    views = [augmented_features(root, table, encoder, v, progress) for v in range(n_views)]
    model, report = train_classifier(feats, table["label"].to_numpy(), groups=groups, views=views,
                                     config=cfg, grid=grid, folds=folds, backbone=encoder.name,
                                     image_size=image_size, progress=progress)
    model.meta.update(trained_on=dict(data=Path(root).name, split=split, n=len(table),
                                      classes=int(n_classes), group_column=group_column,
                                      smallest_class=int(counts.min())))
    result = dict(out=str(out), classes=model.classes, n_train=len(table), **report)
    return _report_and_save(model, out, result, root, labels_csv, val_split, progress)


def _report_and_save(model: ProbeClassifier, out, result: dict, root, labels_csv,
                     val_split: str | None, progress: bool) -> dict:
    """Score ``val_split`` through the path users run (``classifier_encoder``), record it in
    the model and the report, and save the model."""
    if val_split:
        val = read_labels(root, labels_csv, split=val_split)
        proba = model.predict_proba(folder_features(root, val, progress=progress,
                                                    encoder=classifier_encoder(model)))
        metrics = classification_metrics(val["label"].to_numpy(), proba, model.classes, threshold=0.9)
        summary = {k: metrics[k] for k in ("accuracy", "accuracy_at_threshold", "abstention_rate",
                                           "threshold", "nll", "ece", "balanced_accuracy")}
        result.update(val_split=val_split, val=summary)
        model.meta.update(val=dict(split=val_split, n=len(val), **summary))
    result["sha256"] = model.save(out)
    result["bytes"] = Path(out).stat().st_size
    return result


def _check_finetune_options(split: str, views: int, calibration_share: float,
                            calibration_split: str | None) -> None:
    """Reject a test-time view count, calibration share or calibration split that cannot work."""
    if views not in ORIENTATIONS:
        raise LookalikeError(f"--tta must be one of {', '.join(map(str, ORIENTATIONS))}, got {views}")
    if not 0.0 < calibration_share < 0.5:
        raise LookalikeError(f"the calibration share must be within (0, 0.5), got {calibration_share}")
    if calibration_split == split:
        raise LookalikeError(f"calibrate on another split than the one trained on ({split!r})")


def _hold_out_calibration(root, labels_csv, table: pd.DataFrame, ids: np.ndarray, groups: np.ndarray | None,
                          calibration_split: str | None, calibration_share: float,
                          seed: int) -> tuple[np.ndarray, pd.DataFrame | None]:
    """The training rows held out for calibration (a grouped ``calibration_share``, or none with
    ``calibration_split``), and the rows of ``calibration_split`` (None without it)."""
    if calibration_split:
        return np.zeros(len(table), bool), read_labels(root, labels_csv, split=calibration_split)
    held = make_folds(len(table), ids, groups, max(2, round(1 / calibration_share)), seed=seed) == 0
    if held.all() or not held.any():
        raise LookalikeError(f"{len(table)} labelled images are too few to hold out a calibration share")
    return held, None


def _finetune_checkpoint(backbone: Backbone, cfg: FinetuneConfig, image_size: int, root, split: str,
                         calibration: str | float, held: np.ndarray) -> Path:
    """One checkpoint per training (it also checks itself against the data and settings)."""
    key = json.dumps([backbone.spec.name, backbone.spec.weights_sha256, asdict(cfg), image_size,
                      str(Path(root).resolve()), split, calibration, np.flatnonzero(held).tolist()])
    return features_dir() / f"finetune-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def _split_calibration_logits(model: TailClassifier, classes: np.ndarray, root, labels_csv,
                              calibration_table: pd.DataFrame, calibration_split: str, backbone: Backbone,
                              cut: int, image_size: int, chosen: list[int], group_column: str | None,
                              group_pattern: str | None,
                              progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """Mean test-time logits, class ids and fold groups of the calibration split's images of
    known classes, and a description of them."""
    known = calibration_table["label"].astype(str).isin(classes).to_numpy()
    calibration_table = calibration_table[known].reset_index(drop=True)
    calib_acts = stem_activations(root, calibration_table, backbone.spec.name, cut, image_size,
                                  views=8, progress=progress)
    calib = tail_logits(model, calib_acts[:, chosen]).mean(1)
    calib_ids = np.searchsorted(classes, calibration_table["label"].astype(str).to_numpy())
    calib_groups = _fold_groups(calibration_table, labels_csv, group_column if group_column in
                                calibration_table.columns else None, group_pattern)[0]
    where = f"the {calibration_split!r} split ({len(calibration_table)} images of known classes)"
    return calib, calib_ids, calib_groups, where


def _finetune_meta(cfg: FinetuneConfig, where: str, calibration: dict, report: dict, stem_seconds: float,
                   root, split: str, n_train: int, n_classes: int, group_column: str | None) -> dict:
    """The fine-tuned classifier's metadata: method, settings, calibration, training, data."""
    return dict(method=f"fine-tuned trunk modules {cfg.cut}+ and a linear head on cached stem activations "
                       f"of 8 rotations/flips, temperature-scaled on {where}", config=asdict(cfg),
                calibration=calibration,
                training=dict(steps=report["steps"], seconds=round(report["seconds"], 1),
                              stem_cache_seconds=round(stem_seconds, 1),
                              loss_per_epoch=[round(x, 4) for x in report["loss_per_epoch"]]),
                trained_on=dict(data=Path(root).name, split=split, n=n_train,
                                classes=n_classes, group_column=group_column))


def _finetuned_classifier(classes: np.ndarray, backbone: Backbone, model: TailClassifier, temperature: float,
                          image_size: int, meta: dict, views: int, report: dict, cut: int) -> ProbeClassifier:
    """A ``ProbeClassifier`` of the fine-tuned tail and its linear head (identity scaling)."""
    return ProbeClassifier(classes.tolist(), np.zeros(backbone.spec.num_features, np.float32),
                           np.ones(backbone.spec.num_features, np.float32),
                           [model.head.weight.detach().numpy()], [model.head.bias.detach().numpy()],
                           temperature, backbone.spec.name, image_size, meta, views=views,
                           tail=report["tail"], cut=cut)


def finetune_classifier_from_folder(root, labels_csv, out, *, split: str = "train",
                                    val_split: str | None = None, config: FinetuneConfig | None = None,
                                    views: int = 1, calibration_share: float = 0.1,
                                    calibration_split: str | None = None,
                                    group_column: str | None = None, group_pattern: str | None = None,
                                    image_size: int = 224, backbone: str = DEFAULT_BACKBONE,
                                    progress: bool = True) -> dict:
    """Fine-tune the backbone's last blocks and a linear head on one split of a labelled image
    folder (``models.finetune``); save a calibrated classifier to ``out``; report ``val_split``.

    The stem's activations of the 8 rotations/flips of every image are cached first (resumable).
    The temperature is fitted on held-out logits: by default a grouped ``calibration_share`` of
    the split (whole ``source_image`` groups, or ``group_pattern`` groups), held out of training;
    with ``calibration_split`` (e.g. ``val``, never a test split) that split's, and the whole
    training split trains. A temperature fitted on the split it is then reported on flatters the
    report, so the report adds ``calibration_cross_fitted``: that split scored in two grouped
    halves, each with the temperature fitted on the other half.
    ``views`` (1, 2, 4 or 8) is the model's test-time augmentation: its logits are the mean over
    that many rotations/flips.
    """
    cfg = config or FinetuneConfig()
    _check_finetune_options(split, views, calibration_share, calibration_split)
    table = read_labels(root, labels_csv, split=split)
    groups, group_column = _fold_groups(table, labels_csv, group_column, group_pattern)
    classes, ids = np.unique(table["label"].astype(str).to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise LookalikeError(f"a classifier needs at least 2 classes, the labels have {len(classes)}")
    held, calibration_table = _hold_out_calibration(root, labels_csv, table, ids, groups, calibration_split,
                                                    calibration_share, cfg.seed)
    backbone = create_backbone(backbone)
    cfg = replace(cfg, cut=default_cut(backbone) if cfg.cut is None else cfg.cut)
    check_cut(backbone, cfg.cut)
    t0 = time.perf_counter()
    acts = stem_activations(root, table, backbone.spec.name, cfg.cut, image_size, views=8, progress=progress)
    stem_seconds = time.perf_counter() - t0  # near 0 when the cache was already complete
    checkpoint = _finetune_checkpoint(backbone, cfg, image_size, root, split,
                                      calibration_split or calibration_share, held)
    model, report = finetune_tail(acts[~held], ids[~held], len(classes), backbone, cfg, progress,
                                  checkpoint=checkpoint)
    # the model's test-time views among the 8 cached ones; the head is linear, so the mean of
    # their logits is the logits of their mean feature (what Encoder(views=...) computes)
    chosen = [ORIENTATIONS[8].index(v) for v in ORIENTATIONS[views]]
    if calibration_split:
        calib, calib_ids, calib_groups, where = _split_calibration_logits(
            model, classes, root, labels_csv, calibration_table, calibration_split, backbone, cfg.cut,
            image_size, chosen, group_column, group_pattern, progress)
    else:
        calib, calib_ids, calib_groups = tail_logits(model, acts[held][:, chosen]).mean(1), ids[held], None
        where = f"a held-out {calibration_share:.0%} of the training split"
    temperature = fit_temperature(calib, calib_ids)
    calibration = dict(split=calibration_split or f"{calibration_share:.0%} of {split}", n=len(calib_ids),
                       accuracy=float((calib.argmax(1) == calib_ids).mean()),
                       nll=nll(calib, calib_ids, temperature))
    meta = _finetune_meta(cfg, where, calibration, report, stem_seconds, root, split, int((~held).sum()),
                          len(classes), group_column)
    result = {}
    if calibration_split:
        meta["calibration_cross_fitted"] = result["calibration_cross_fitted"] = cross_fitted_temperature(
            calib, calib_ids, classes.tolist(), calib_groups, seed=cfg.seed)
    classifier = _finetuned_classifier(classes, backbone, model, temperature, image_size, meta, views, report,
                                       cfg.cut)
    result = dict(out=str(out), classes=classifier.classes, n_train=int((~held).sum()),
                  n_calibration=len(calib_ids), temperature=temperature, views=views,
                  train_seconds=round(report["seconds"], 1), stem_cache_seconds=round(stem_seconds, 1),
                  calibration=calibration, resumed_after_epoch=report["resumed_after_epoch"], **result)
    result = _report_and_save(classifier, out, result, root, labels_csv, val_split, progress)
    checkpoint.unlink(missing_ok=True)
    return result


def cross_fitted_temperature(logits: np.ndarray, ids: np.ndarray, classes: list[str],
                             groups: np.ndarray | None, threshold: float = 0.9, seed: int = 0) -> dict:
    """Honest figures for a temperature fitted on the data it is reported on: the rows in two
    grouped halves, each scored with the temperature fitted on the other half."""
    halves = make_folds(len(ids), ids, groups, 2, seed=seed)
    proba = np.zeros_like(logits, dtype=np.float64)
    temperatures = []
    for h in (0, 1):
        t = fit_temperature(logits[halves != h], ids[halves != h])
        proba[halves == h] = softmax(logits[halves == h] / t)
        temperatures.append(t)
    metrics = classification_metrics(np.asarray(classes)[ids], proba, classes, threshold)
    return dict({k: metrics[k] for k in ("accuracy_at_threshold", "abstention_rate", "threshold", "nll", "ece")},
                temperatures=temperatures)


def _val_scores(model, archive_features, archive, root, labels_csv, val_split: str, encoder, k: int,
                progress: bool) -> dict:
    """mAP@k and P@k of the ``val_split`` images as queries against the archive, with ``model``."""
    val = read_labels(root, labels_csv, split=val_split)
    ranked = rank_hamming(model.encode(archive_features),
                          model.encode(image_features(root, val, encoder, progress)), k)
    scores = retrieval_scores(val["label"].to_numpy(), archive["label"].to_numpy(), ranked, k)
    return dict(scores, n_queries=len(val))


def train_hash_from_folder(root, labels_csv, out, *, split: str | None = "train",
                           config: TrainConfig | None = None, image_size: int = 224,
                           val_split: str | None = None, k: int = 64, progress: bool = True,
                           target_root=None, target_labels_csv=None, target_split: str | None = None) -> dict:
    """Train a head on a labelled image folder, save it to ``out``; report val mAP@k if asked.

    Unsupervised methods never read the labels (only the file list).
    """
    from pathlib import Path

    cfg = config or TrainConfig()
    table = read_labels(root, labels_csv, split=split)
    encoder = Encoder(image_size=image_size)
    feats = image_features(root, table, encoder, progress)
    labels = table["label"].to_numpy() if cfg.method in SUPERVISED else None
    views = None
    if cfg.method == "mirs-ntxent":
        views = tuple(augmented_features(root, table, encoder, v, progress) for v in (0, 1))
    target = None
    if target_root is not None:  # unlabelled target domain: only its file list is read
        target_table = read_labels(target_root, target_labels_csv, split=target_split)
        target = image_features(target_root, target_table, encoder, progress)
    model = train_hash(feats, labels, views, cfg, backbone=encoder.name, progress=progress, target=target)
    model.meta.update(trained_on=dict(data=Path(root).name, split=split, n=len(table),
                                      image_size=image_size))
    report = dict(out=str(out), method=cfg.method, bits=model.bits, n_train=len(table))
    if val_split:
        scores = _val_scores(model, feats, table, root, labels_csv, val_split, encoder, k, progress)
        report.update(val_split=val_split, k=k, val_map_at_k=scores["map_at_k"],
                      val_precision_at_k=scores["precision_at_k"])
        model.meta.update(val=dict(split=val_split, map_at_k=scores["map_at_k"], k=k))
    report["sha256"] = model.save(out)
    return report


def train_hash_from_index(index_dir, out, *, config: TrainConfig | None = None, limit: int | None = None,
                          seed: int = 0, progress: bool = True) -> dict:
    """Train an unsupervised head on an index's own tiles (pixels re-read from its sources).

    ``mirs-ntxent`` pairs each tile with augmented views of it; ``descartes-autoencoder``
    reconstructs the tiles' features. ``limit`` samples that many tiles.
    """

    cfg = config or TrainConfig(method="mirs-ntxent")
    if cfg.method in SUPERVISED:
        raise LookalikeError(f"{cfg.method} needs labels; an index's tiles train only "
                             "mirs-ntxent or descartes-autoencoder")
    index = open_index(index_dir)
    grid = index_grid(index)
    rng = np.random.default_rng(seed)
    rows = np.arange(index.n) if not limit or limit >= index.n else np.sort(rng.choice(index.n, limit, replace=False))
    tiles = index.tiles.iloc[rows]
    pixels = np.stack([index_source_image(index, t.source).tile(t.zone, grid, int(t.row), int(t.col))
                       for t in tqdm(tiles.itertuples(), total=len(tiles), desc="reading tiles",
                                     unit="tile", disable=not progress)])
    encoder = Encoder(index.manifest["backbone"]["name"], views=index.views)
    feats = encoder.features(pixels)
    views = None
    if cfg.method == "mirs-ntxent":
        views = tuple(encoder.features(np.stack([augment(p, rng) for p in pixels])) for _ in range(2))
    model = train_hash(feats, None, views, cfg, backbone=encoder.name, progress=progress)
    model.meta.update(trained_on=dict(index=str(index.path.name), n=len(tiles)))
    return dict(out=str(out), method=cfg.method, bits=model.bits, n_train=len(tiles),
                sha256=model.save(out))


def train_similarity_code(out: str | Path, config: SimilarityConfig | None = None, *,
                          labelled: list[tuple[str, str]] = (), unlabelled: list[tuple[str, str]] = (),
                          mosaics: list[str] = (), split: str = "train", val_split: str | None = None,
                          image_size: int = 224, views: int = DEFAULT_VIEWS, k: int = 64,
                          progress: bool = True) -> dict:
    """Train the similarity-preserving code on a mix of imagery; save it to ``out``.

    ``labelled`` (root, labels CSV) folders give both a domain and class terms; ``unlabelled``
    folders only a domain (their labels are read only to report ``val_split`` mAP@k);
    ``mosaics`` (registry names) give every tile an index of them would hold.
    """
    if not (labelled or unlabelled or mosaics):
        raise LookalikeError("the similarity code needs imagery: --labelled, --unlabelled or --mosaic")
    cfg = config or SimilarityConfig()
    encoder = Encoder(image_size=image_size, views=views)
    domains, sets, tables = {}, {}, {}
    for root, csv in [*labelled, *unlabelled]:
        name = Path(root).name
        if name in domains:
            raise LookalikeError(f"two image folders are both named {name!r}")
        tables[name] = (root, csv, read_labels(root, csv, split=split))
        domains[name] = image_features(root, tables[name][2], encoder, progress)
        if (root, csv) in labelled:
            sets[name] = (domains[name], tables[name][2]["label"].to_numpy())
    tile_encoder = Encoder(views=views)  # tiles at their own 128 px
    for name in mosaics:
        if name not in DATASETS:
            raise LookalikeError(f"unknown mosaic {name!r}; choose from {', '.join(DATASETS)}")
        domains[name] = mosaic_features(name, tile_encoder, progress=progress)
    model = train_similarity_hash(domains, sets, cfg, backbone=encoder.name, progress=progress)
    model.meta.update(trained_on=dict(split=split, image_size=image_size, views=views,
                                      labelled=sorted(sets), domains={n: len(x) for n, x in domains.items()}))
    report = dict(out=str(out), method=model.method, bits=model.bits, views=views,
                  n_train=int(sum(len(x) for x in domains.values())))
    if val_split:
        report["val"] = {}
        for name, (root, csv, table) in tables.items():
            scores = _val_scores(model, domains[name], table, root, csv, val_split, encoder, k, progress)
            report["val"][name] = dict(map_at_k=scores["map_at_k"], k=k, n_queries=scores["n_queries"])
        model.meta.update(val=dict(split=val_split, **report["val"]))
    report["sha256"] = model.save(out)
    return report


def train_hash_head(out: str | Path, config: TrainConfig, *, images: str | Path | None = None,
                    labels: str | Path | None = None, index: str | Path | None = None,
                    limit: int | None = None, split: str | None = "train", val_split: str | None = None,
                    image_size: int = 224, target_images: str | Path | None = None,
                    target_labels: str | Path | None = None, target_split: str | None = None) -> dict:
    """What ``lookalike train-hash`` does: train a head on a labelled image folder
    (``images`` + ``labels``) or, without labels, on an index's own tiles (``index``)."""
    if index:
        if images:
            raise LookalikeError("give --images ROOT --labels CSV or --index DIR, not both")
        return train_hash_from_index(index, out, config=config, limit=limit, seed=config.seed)
    if not (images and labels):
        raise LookalikeError("give --images ROOT --labels CSV, or --index DIR for unlabelled tiles")
    if config.whiten_group and not (target_images and target_labels):
        raise LookalikeError("--whiten-group needs --target-images and --target-labels")
    return train_hash_from_folder(images, labels, out, split=split, config=config, image_size=image_size,
                                  val_split=val_split, target_root=target_images,
                                  target_labels_csv=target_labels, target_split=target_split)
