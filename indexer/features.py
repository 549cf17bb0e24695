"""Backbone features of labelled image folders, cached on disk by files, model and size."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lookalike.config import features_dir
from lookalike.data.registry import DATASETS, fetch
from lookalike.errors import OptionError
from lookalike.fileio import save_npy
from lookalike.indexer.defaults import CLASSIFIER_VIEWS, ORIENTATIONS
from lookalike.indexer.encoding import Encoder, dihedral_copy, images_to_tensor
from lookalike.indexer.image_folders import load_image
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.tiling import TileGrid
from lookalike.models.augment import augment
from lookalike.models.backbones import create_backbone
from lookalike.models.defaults import DEFAULT_BACKBONE
from lookalike.models.finetune import stem


def _cached(prefix: str, key: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, stored once under ``features_dir()`` by a hash of ``key`` (written atomically)."""
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]
    cache = features_dir() / f"{prefix}{digest}.npy"
    if cache.exists():
        return np.load(cache)
    feats = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_npy(cache.with_suffix(".tmp.npy"), feats)
    cache.with_suffix(".tmp.npy").replace(cache)
    return feats


def _encode(
    encoder, images: Iterable[np.ndarray], total: int | None, desc: str, unit: str, progress: bool
) -> np.ndarray:
    return np.stack(
        list(tqdm(encoder.features_stream(images), total=total, desc=desc, unit=unit, disable=not progress))
    )


def _files(root: Path, table: pd.DataFrame) -> list[tuple[str, int]]:
    return [(p, (root / p).stat().st_size) for p in table["path"]]


def image_features(root: str | Path, table: pd.DataFrame, encoder, progress: bool = True) -> np.ndarray:
    """Backbone features of the images in ``table`` (cached on disk by files, model and size)."""

    root = Path(root)
    size = encoder.image_size or 224
    return _cached(
        "",
        dict(encoder=encoder.describe(), root=str(root.resolve()), files=_files(root, table)),
        lambda: _encode(
            encoder,
            (load_image(root / p, size) for p in table["path"]),
            len(table),
            "encoding images",
            "img",
            progress,
        ),
    )


def augmented_features(
    root: str | Path, table: pd.DataFrame, encoder, view: int, progress: bool = True
) -> np.ndarray:
    """Features of one random augmented view (seeded by ``view``) of each image, cached."""

    root = Path(root)
    size = encoder.image_size or 224

    def compute() -> np.ndarray:
        rng = np.random.default_rng(1000 + view)
        images = (augment(load_image(root / p, size), rng) for p in table["path"])
        return _encode(encoder, images, len(table), f"encoding view {view}", "img", progress)

    return _cached(
        "aug-",
        dict(encoder=encoder.describe(), root=str(root.resolve()), view=view, files=_files(root, table)),
        compute,
    )


# ------------------------------------------------------------------ image folders
def folder_features(
    root,
    table,
    image_size: int = 224,
    backbone: str = DEFAULT_BACKBONE,
    progress: bool = True,
    encoder=None,
    views: int = CLASSIFIER_VIEWS,
) -> np.ndarray:
    """Cached backbone features of the images of a labels table (``image_features``); by
    default single-view, as the landmark classifiers were trained on."""

    encoder = encoder or Encoder(backbone, image_size=image_size, views=views)
    return image_features(root, table, encoder, progress)


# ------------------------------------------------------------------ fine-tuning
def stem_activations(
    root: str | Path,
    table: pd.DataFrame,
    backbone: str = DEFAULT_BACKBONE,
    cut: int = 14,
    image_size: int = 224,
    views: int = 8,
    chunk: int = 128,
    progress: bool = True,
) -> np.ndarray:
    """(N, views, C, H, W) float16: the frozen stem's activations (trunk modules before ``cut``)
    for every rotation/flip in ``ORIENTATIONS[views]`` of each image, for ``models.finetune``.

    Cached on disk by files, backbone, cut, size and views, ``chunk`` images per file written
    atomically, so an interrupted run resumes at the first missing chunk.
    """
    import torch

    root = Path(root)
    if views not in ORIENTATIONS:
        raise OptionError(f"views must be one of {', '.join(map(str, ORIENTATIONS))}, got {views}")
    net = create_backbone(backbone)
    key = dict(
        backbone=net.spec.name,
        weights_sha256=net.spec.weights_sha256,
        cut=cut,
        image_size=image_size,
        views=views,
        root=str(root.resolve()),
        files=_files(root, table),
    )
    folder = features_dir() / f"stem-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]}"
    folder.mkdir(parents=True, exist_ok=True)
    run = stem(net, cut)
    paths = list(table["path"])
    starts = range(0, len(paths), chunk)
    parts = []
    bar = tqdm(total=len(paths), desc="caching stem activations", unit="img", disable=not progress)
    for i, s in enumerate(starts):
        path = folder / f"chunk-{i:05d}.npy"
        rows = len(paths[s : s + chunk])
        # a chunk of another length (written with another chunk size) or unreadable is made again
        if not path.exists() or _rows(path) != rows:
            images = np.stack([load_image(root / p, image_size) for p in paths[s : s + chunk]])
            with torch.inference_mode():
                x = images_to_tensor(images, image_size)
                acts = [
                    run(dihedral_copy(x, turns, mirror)).to(torch.float16).numpy()
                    for turns, mirror in ORIENTATIONS[views]
                ]
            save_npy(path.with_suffix(".tmp.npy"), np.stack(acts, axis=1))
            path.with_suffix(".tmp.npy").replace(path)
        parts.append(np.load(path))
        bar.update(len(parts[-1]))
    bar.close()
    return np.concatenate(parts) if parts else np.zeros((0, views, 0, 0, 0), np.float16)


def _rows(path: Path) -> int:
    try:
        return len(np.load(path, mmap_mode="r"))
    except (OSError, ValueError):
        return -1


# ------------------------------------------------------------------ mosaic tiles
def mosaic_features(
    name: str, encoder, size: int = 128, stride: int = 64, progress: bool = True
) -> np.ndarray:
    """Features of every tile an index of the registry mosaic ``name`` would hold (cached)."""

    ds = DATASETS[name]

    def compute() -> np.ndarray:
        source = RasterSource(fetch(name), name=name, crs=ds.crs, bounds=ds.bounds)
        tiles = (pixels for _, pixels in source.tiles(TileGrid(size, stride, source.native_gsd)))
        return _encode(encoder, tiles, None, f"encoding {name} tiles", "tile", progress)

    return _cached(
        "mosaic-",
        dict(encoder=encoder.describe(), mosaic=name, sha256=ds.sha256, size=size, stride=stride),
        compute,
    )
