"""Training landmark classifiers on labelled image folders: a calibrated probe on frozen
backbone features, or a fine-tuned tail of the backbone with a linear head."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.config import features_dir
from lookalike.errors import LookalikeError
from lookalike.indexer.defaults import CLASSIFIER_VIEWS, ORIENTATIONS
from lookalike.indexer.encoding import Encoder, classifier_encoder
from lookalike.indexer.features import augmented_features, folder_features, stem_activations
from lookalike.indexer.image_folders import read_labels
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
from lookalike.models.metrics import classification_metrics


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
        raise LookalikeError(
            f"group pattern {group_pattern!r} matches no part of {len(bad)} file name(s), e.g. {bad[0]}"
        )
    return np.array([m.group(0) for m in found]), f"pattern {group_pattern}"


def train_classifier_from_folder(
    root,
    labels_csv,
    out,
    *,
    split: str = "train",
    val_split: str | None = None,
    config: ClassifierConfig | None = None,
    search: bool = False,
    folds: int = 5,
    group_column: str | None = None,
    group_pattern: str | None = None,
    image_size: int = 224,
    backbone: str = DEFAULT_BACKBONE,
    progress: bool = True,
) -> dict:
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
    model, report = train_classifier(
        feats,
        table["label"].to_numpy(),
        groups=groups,
        views=views,
        config=cfg,
        grid=grid,
        folds=folds,
        backbone=encoder.name,
        image_size=image_size,
        progress=progress,
    )
    model.meta.update(
        trained_on=dict(
            data=Path(root).name,
            split=split,
            n=len(table),
            classes=int(n_classes),
            group_column=group_column,
            smallest_class=int(counts.min()),
        )
    )
    result = dict(out=str(out), classes=model.classes, n_train=len(table), **report)
    return _report_and_save(model, out, result, root, labels_csv, val_split, progress)


def _report_and_save(
    model: ProbeClassifier, out, result: dict, root, labels_csv, val_split: str | None, progress: bool
) -> dict:
    """Score ``val_split`` through the path users run (``classifier_encoder``), record it in
    the model and the report, and save the model."""
    if val_split:
        val = read_labels(root, labels_csv, split=val_split)
        proba = model.predict_proba(
            folder_features(root, val, progress=progress, encoder=classifier_encoder(model))
        )
        metrics = classification_metrics(val["label"].to_numpy(), proba, model.classes, threshold=0.9)
        summary = {
            k: metrics[k]
            for k in (
                "accuracy",
                "accuracy_at_threshold",
                "abstention_rate",
                "threshold",
                "nll",
                "ece",
                "balanced_accuracy",
            )
        }
        result.update(val_split=val_split, val=summary)
        model.meta.update(val=dict(split=val_split, n=len(val), **summary))
    result["sha256"] = model.save(out)
    result["bytes"] = Path(out).stat().st_size
    return result


def _check_finetune_options(
    split: str, views: int, calibration_share: float, calibration_split: str | None
) -> None:
    """Reject a test-time view count, calibration share or calibration split that cannot work."""
    if views not in ORIENTATIONS:
        raise LookalikeError(f"--tta must be one of {', '.join(map(str, ORIENTATIONS))}, got {views}")
    if not 0.0 < calibration_share < 0.5:
        raise LookalikeError(f"the calibration share must be within (0, 0.5), got {calibration_share}")
    if calibration_split == split:
        raise LookalikeError(f"calibrate on another split than the one trained on ({split!r})")


def _hold_out_calibration(
    root,
    labels_csv,
    table: pd.DataFrame,
    ids: np.ndarray,
    groups: np.ndarray | None,
    calibration_split: str | None,
    calibration_share: float,
    seed: int,
) -> tuple[np.ndarray, pd.DataFrame | None]:
    """The training rows held out for calibration (a grouped ``calibration_share``, or none with
    ``calibration_split``), and the rows of ``calibration_split`` (None without it)."""
    if calibration_split:
        return np.zeros(len(table), bool), read_labels(root, labels_csv, split=calibration_split)
    held = make_folds(len(table), ids, groups, max(2, round(1 / calibration_share)), seed=seed) == 0
    if held.all() or not held.any():
        raise LookalikeError(f"{len(table)} labelled images are too few to hold out a calibration share")
    return held, None


def _finetune_checkpoint(
    backbone: Backbone,
    cfg: FinetuneConfig,
    image_size: int,
    root,
    split: str,
    calibration: str | float,
    held: np.ndarray,
) -> Path:
    """One checkpoint per training (it also checks itself against the data and settings)."""
    key = json.dumps(
        [
            backbone.spec.name,
            backbone.spec.weights_sha256,
            asdict(cfg),
            image_size,
            str(Path(root).resolve()),
            split,
            calibration,
            np.flatnonzero(held).tolist(),
        ]
    )
    return features_dir() / f"finetune-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


@dataclass(frozen=True)
class _Folder:
    """A labelled image folder as fine-tuning reads it: images at ``image_size``, folds grouped by
    ``group_column`` (resolved: ``source_image`` by default when present) or ``group_pattern``."""

    root: str | Path
    labels_csv: str | Path
    image_size: int
    group_column: str | None
    group_pattern: str | None
    progress: bool


@dataclass(frozen=True)
class _Tuned:
    """A fine-tuned tail: its backbone and settings (``cut`` resolved), the cached stem
    activations of the training split, the training report and the checkpoint."""

    backbone: Backbone
    cfg: FinetuneConfig
    acts: np.ndarray
    model: TailClassifier
    report: dict
    stem_seconds: float
    checkpoint: Path


@dataclass(frozen=True)
class _Calibrated:
    """The temperature fitted on held-out logits, their summary and a description of them, and
    (with a calibration split) the figures cross-fitted on it, keyed ``calibration_cross_fitted``."""

    temperature: float
    n: int
    summary: dict
    where: str
    cross_fitted: dict


def _tune(
    folder: _Folder,
    table: pd.DataFrame,
    ids: np.ndarray,
    n_classes: int,
    held: np.ndarray,
    backbone: str,
    cfg: FinetuneConfig,
    split: str,
    calibration: str | float,
) -> _Tuned:
    """Cache the stem activations of the 8 rotations/flips of ``table``'s images, then fine-tune
    the tail on the rows not ``held`` out (resuming from its checkpoint)."""
    backbone = create_backbone(backbone)
    cfg = replace(cfg, cut=default_cut(backbone) if cfg.cut is None else cfg.cut)
    check_cut(backbone, cfg.cut)
    t0 = time.perf_counter()
    acts = stem_activations(
        folder.root, table, backbone.spec.name, cfg.cut, folder.image_size, views=8, progress=folder.progress
    )
    stem_seconds = time.perf_counter() - t0  # near 0 when the cache was already complete
    checkpoint = _finetune_checkpoint(backbone, cfg, folder.image_size, folder.root, split, calibration, held)
    model, report = finetune_tail(
        acts[~held], ids[~held], n_classes, backbone, cfg, folder.progress, checkpoint=checkpoint
    )
    return _Tuned(backbone, cfg, acts, model, report, stem_seconds, checkpoint)


def _split_calibration_logits(
    folder: _Folder,
    tuned: _Tuned,
    classes: np.ndarray,
    calibration_table: pd.DataFrame,
    calibration_split: str,
    chosen: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """Mean test-time logits, class ids and fold groups of the calibration split's images of
    known classes, and a description of them."""
    known = calibration_table["label"].astype(str).isin(classes).to_numpy()
    calibration_table = calibration_table[known].reset_index(drop=True)
    calib_acts = stem_activations(
        folder.root,
        calibration_table,
        tuned.backbone.spec.name,
        tuned.cfg.cut,
        folder.image_size,
        views=8,
        progress=folder.progress,
    )
    calib = tail_logits(tuned.model, calib_acts[:, chosen]).mean(1)
    calib_ids = np.searchsorted(classes, calibration_table["label"].astype(str).to_numpy())
    calib_groups = _fold_groups(
        calibration_table,
        folder.labels_csv,
        folder.group_column if folder.group_column in calibration_table.columns else None,
        folder.group_pattern,
    )[0]
    where = f"the {calibration_split!r} split ({len(calibration_table)} images of known classes)"
    return calib, calib_ids, calib_groups, where


def _calibrate(
    folder: _Folder,
    tuned: _Tuned,
    classes: np.ndarray,
    ids: np.ndarray,
    held: np.ndarray,
    views: int,
    split: str,
    calibration_share: float,
    calibration_split: str | None,
    calibration_table: pd.DataFrame | None,
) -> _Calibrated:
    """Fit the temperature on the mean test-time logits of the ``held`` rows or, with
    ``calibration_split``, of that split's images (and cross-fit figures on them)."""
    # the model's test-time views among the 8 cached ones; the head is linear, so the mean of
    # their logits is the logits of their mean feature (what Encoder(views=...) computes)
    chosen = [ORIENTATIONS[8].index(v) for v in ORIENTATIONS[views]]
    if calibration_split:
        calib, calib_ids, calib_groups, where = _split_calibration_logits(
            folder, tuned, classes, calibration_table, calibration_split, chosen
        )
    else:
        calib, calib_ids = tail_logits(tuned.model, tuned.acts[held][:, chosen]).mean(1), ids[held]
        calib_groups, where = None, f"a held-out {calibration_share:.0%} of the training split"
    temperature = fit_temperature(calib, calib_ids)
    summary = dict(
        split=calibration_split or f"{calibration_share:.0%} of {split}",
        n=len(calib_ids),
        accuracy=float((calib.argmax(1) == calib_ids).mean()),
        nll=nll(calib, calib_ids, temperature),
    )
    cross_fitted = {}
    if calibration_split:
        cross_fitted["calibration_cross_fitted"] = cross_fitted_temperature(
            calib, calib_ids, classes.tolist(), calib_groups, seed=tuned.cfg.seed
        )
    return _Calibrated(temperature, len(calib_ids), summary, where, cross_fitted)


def _finetune_meta(
    folder: _Folder, tuned: _Tuned, calibrated: _Calibrated, split: str, n_train: int, n_classes: int
) -> dict:
    """The fine-tuned classifier's metadata: method, settings, calibration, training, data."""
    return dict(
        method=f"fine-tuned trunk modules {tuned.cfg.cut}+ and a linear head on cached stem activations "
        f"of 8 rotations/flips, temperature-scaled on {calibrated.where}",
        config=asdict(tuned.cfg),
        calibration=calibrated.summary,
        training=dict(
            steps=tuned.report["steps"],
            seconds=round(tuned.report["seconds"], 1),
            stem_cache_seconds=round(tuned.stem_seconds, 1),
            loss_per_epoch=[round(x, 4) for x in tuned.report["loss_per_epoch"]],
        ),
        trained_on=dict(
            data=Path(folder.root).name,
            split=split,
            n=n_train,
            classes=n_classes,
            group_column=folder.group_column,
        ),
        **calibrated.cross_fitted,
    )


def _finetuned_classifier(
    classes: np.ndarray, tuned: _Tuned, temperature: float, image_size: int, meta: dict, views: int
) -> ProbeClassifier:
    """A ``ProbeClassifier`` of the fine-tuned tail and its linear head (identity scaling)."""
    backbone, head = tuned.backbone, tuned.model.head
    return ProbeClassifier(
        classes.tolist(),
        np.zeros(backbone.spec.num_features, np.float32),
        np.ones(backbone.spec.num_features, np.float32),
        [head.weight.detach().numpy()],
        [head.bias.detach().numpy()],
        temperature,
        backbone.spec.name,
        image_size,
        meta,
        views=views,
        tail=tuned.report["tail"],
        cut=tuned.cfg.cut,
    )


def finetune_classifier_from_folder(
    root,
    labels_csv,
    out,
    *,
    split: str = "train",
    val_split: str | None = None,
    config: FinetuneConfig | None = None,
    views: int = 1,
    calibration_share: float = 0.1,
    calibration_split: str | None = None,
    group_column: str | None = None,
    group_pattern: str | None = None,
    image_size: int = 224,
    backbone: str = DEFAULT_BACKBONE,
    progress: bool = True,
) -> dict:
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
    held, calibration_table = _hold_out_calibration(
        root, labels_csv, table, ids, groups, calibration_split, calibration_share, cfg.seed
    )
    folder = _Folder(root, labels_csv, image_size, group_column, group_pattern, progress)
    calibration = calibration_split or calibration_share
    tuned = _tune(folder, table, ids, len(classes), held, backbone, cfg, split, calibration)
    calibrated = _calibrate(
        folder,
        tuned,
        classes,
        ids,
        held,
        views,
        split,
        calibration_share,
        calibration_split,
        calibration_table,
    )
    n_train = int((~held).sum())
    meta = _finetune_meta(folder, tuned, calibrated, split, n_train, len(classes))
    classifier = _finetuned_classifier(classes, tuned, calibrated.temperature, image_size, meta, views)
    result = dict(
        out=str(out),
        classes=classifier.classes,
        n_train=n_train,
        n_calibration=calibrated.n,
        temperature=calibrated.temperature,
        views=views,
        train_seconds=round(tuned.report["seconds"], 1),
        stem_cache_seconds=round(tuned.stem_seconds, 1),
        calibration=calibrated.summary,
        resumed_after_epoch=tuned.report["resumed_after_epoch"],
        **calibrated.cross_fitted,
    )
    result = _report_and_save(classifier, out, result, root, labels_csv, val_split, progress)
    tuned.checkpoint.unlink(missing_ok=True)
    return result


def cross_fitted_temperature(
    logits: np.ndarray,
    ids: np.ndarray,
    classes: list[str],
    groups: np.ndarray | None,
    threshold: float = 0.9,
    seed: int = 0,
) -> dict:
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
    return dict(
        {k: metrics[k] for k in ("accuracy_at_threshold", "abstention_rate", "threshold", "nll", "ece")},
        temperatures=temperatures,
    )
