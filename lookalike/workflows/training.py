"""Training hashing heads on image folders, mosaics and indexes (landmark classifiers are trained
in ``classifier_training``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lookalike.data.registry import DATASETS
from lookalike.errors import LookalikeError
from lookalike.indexer.defaults import DEFAULT_VIEWS
from lookalike.indexer.encoding import Encoder
from lookalike.indexer.features import augmented_features, image_features, mosaic_features
from lookalike.indexer.image_folders import read_labels
from lookalike.indexer.search import rank_hamming
from lookalike.indexer.store import open_index
from lookalike.indexer.thumbnails import index_grid, index_source_image
from lookalike.models.augment import augment
from lookalike.models.metrics import retrieval_scores
from lookalike.models.training import (
    SUPERVISED,
    SimilarityConfig,
    TrainConfig,
    train_hash,
    train_similarity_hash,
)


def _val_scores(
    model, archive_features, archive, root, labels_csv, val_split: str, encoder, k: int, progress: bool
) -> dict:
    """mAP@k and P@k of the ``val_split`` images as queries against the archive, with ``model``."""
    val = read_labels(root, labels_csv, split=val_split)
    ranked = rank_hamming(
        model.encode(archive_features), model.encode(image_features(root, val, encoder, progress)), k
    )
    scores = retrieval_scores(val["label"].to_numpy(), archive["label"].to_numpy(), ranked, k)
    return dict(scores, n_queries=len(val))


def train_hash_from_folder(
    root,
    labels_csv,
    out,
    *,
    split: str | None = "train",
    config: TrainConfig | None = None,
    image_size: int = 224,
    val_split: str | None = None,
    k: int = 64,
    progress: bool = True,
    target_root=None,
    target_labels_csv=None,
    target_split: str | None = None,
) -> dict:
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
    model.meta.update(trained_on=dict(data=Path(root).name, split=split, n=len(table), image_size=image_size))
    report = dict(out=str(out), method=cfg.method, bits=model.bits, n_train=len(table))
    if val_split:
        scores = _val_scores(model, feats, table, root, labels_csv, val_split, encoder, k, progress)
        report.update(
            val_split=val_split,
            k=k,
            val_map_at_k=scores["map_at_k"],
            val_precision_at_k=scores["precision_at_k"],
        )
        model.meta.update(val=dict(split=val_split, map_at_k=scores["map_at_k"], k=k))
    report["sha256"] = model.save(out)
    return report


def train_hash_from_index(
    index_dir,
    out,
    *,
    config: TrainConfig | None = None,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train an unsupervised head on an index's own tiles (pixels re-read from its sources).

    ``mirs-ntxent`` pairs each tile with augmented views of it; ``descartes-autoencoder``
    reconstructs the tiles' features. ``limit`` samples that many tiles.
    """

    cfg = config or TrainConfig(method="mirs-ntxent")
    if cfg.method in SUPERVISED:
        raise LookalikeError(
            f"{cfg.method} needs labels; an index's tiles train only mirs-ntxent or descartes-autoencoder"
        )
    index = open_index(index_dir)
    grid = index_grid(index)
    rng = np.random.default_rng(seed)
    rows = (
        np.arange(index.n)
        if not limit or limit >= index.n
        else np.sort(rng.choice(index.n, limit, replace=False))
    )
    tiles = index.tiles.iloc[rows]
    pixels = np.stack(
        [
            index_source_image(index, t.source).tile(t.zone, grid, int(t.row), int(t.col))
            for t in tqdm(
                tiles.itertuples(), total=len(tiles), desc="reading tiles", unit="tile", disable=not progress
            )
        ]
    )
    encoder = Encoder(index.manifest["backbone"]["name"], views=index.views)
    feats = encoder.features(pixels)
    views = None
    if cfg.method == "mirs-ntxent":
        views = tuple(encoder.features(np.stack([augment(p, rng) for p in pixels])) for _ in range(2))
    model = train_hash(feats, None, views, cfg, backbone=encoder.name, progress=progress)
    model.meta.update(trained_on=dict(index=str(index.path.name), n=len(tiles)))
    return dict(out=str(out), method=cfg.method, bits=model.bits, n_train=len(tiles), sha256=model.save(out))


def train_similarity_code(
    out: str | Path,
    config: SimilarityConfig | None = None,
    *,
    labelled: list[tuple[str, str]] = (),
    unlabelled: list[tuple[str, str]] = (),
    mosaics: list[str] = (),
    split: str = "train",
    val_split: str | None = None,
    image_size: int = 224,
    views: int = DEFAULT_VIEWS,
    k: int = 64,
    progress: bool = True,
) -> dict:
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
    model.meta.update(
        trained_on=dict(
            split=split,
            image_size=image_size,
            views=views,
            labelled=sorted(sets),
            domains={n: len(x) for n, x in domains.items()},
        )
    )
    report = dict(
        out=str(out),
        method=model.method,
        bits=model.bits,
        views=views,
        n_train=int(sum(len(x) for x in domains.values())),
    )
    if val_split:
        report["val"] = {}
        for name, (root, csv, table) in tables.items():
            scores = _val_scores(model, domains[name], table, root, csv, val_split, encoder, k, progress)
            report["val"][name] = dict(map_at_k=scores["map_at_k"], k=k, n_queries=scores["n_queries"])
        model.meta.update(val=dict(split=val_split, **report["val"]))
    report["sha256"] = model.save(out)
    return report


def train_hash_head(
    out: str | Path,
    config: TrainConfig,
    *,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    index: str | Path | None = None,
    limit: int | None = None,
    split: str | None = "train",
    val_split: str | None = None,
    image_size: int = 224,
    target_images: str | Path | None = None,
    target_labels: str | Path | None = None,
    target_split: str | None = None,
) -> dict:
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
    return train_hash_from_folder(
        images,
        labels,
        out,
        split=split,
        config=config,
        image_size=image_size,
        val_split=val_split,
        target_root=target_images,
        target_labels_csv=target_labels,
        target_split=target_split,
    )
