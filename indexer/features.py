"""Backbone features of labelled image folders, cached on disk by files, model and size."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lookalike.config import features_dir
from lookalike.data.registry import DATASETS, fetch
from lookalike.fileio import save_npy
from lookalike.indexer.encoding import CLASSIFIER_VIEWS, Encoder
from lookalike.indexer.sources import RasterSource, load_image
from lookalike.indexer.tiling import TileGrid
from lookalike.models.augment import augment


def image_features(root: str | Path, table: pd.DataFrame, encoder, progress: bool = True) -> np.ndarray:
    """Backbone features of the images in ``table`` (cached on disk by files, model and size)."""

    root = Path(root)
    key = json.dumps(dict(encoder=encoder.describe(), root=str(root.resolve()),
                          files=[(p, (root / p).stat().st_size) for p in table["path"]]))
    cache = features_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
    if cache.exists():
        return np.load(cache)
    size = encoder.image_size or 224
    images = (load_image(root / p, size) for p in table["path"])
    feats = np.stack(list(tqdm(encoder.features_stream(images), total=len(table),
                               desc="encoding images", unit="img", disable=not progress)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_npy(cache.with_suffix(".tmp.npy"), feats)
    cache.with_suffix(".tmp.npy").replace(cache)
    return feats


def augmented_features(root: str | Path, table: pd.DataFrame, encoder, view: int,
                       progress: bool = True) -> np.ndarray:
    """Features of one random augmented view (seeded by ``view``) of each image, cached."""

    root = Path(root)
    key = json.dumps(dict(encoder=encoder.describe(), root=str(root.resolve()), view=view,
                          files=[(p, (root / p).stat().st_size) for p in table["path"]]))
    cache = features_dir() / f"aug-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
    if cache.exists():
        return np.load(cache)
    size = encoder.image_size or 224
    rng = np.random.default_rng(1000 + view)
    images = (augment(load_image(root / p, size), rng) for p in table["path"])
    feats = np.stack(list(tqdm(encoder.features_stream(images), total=len(table),
                               desc=f"encoding view {view}", unit="img", disable=not progress)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_npy(cache.with_suffix(".tmp.npy"), feats)
    cache.with_suffix(".tmp.npy").replace(cache)
    return feats


# ------------------------------------------------------------------ image folders
def folder_features(root, table, image_size: int = 224, backbone: str = "efficientnet_lite0",
                    progress: bool = True, encoder=None, views: int = CLASSIFIER_VIEWS) -> np.ndarray:
    """Cached backbone features of the images of a labels table (``image_features``); by
    default single-view, as the landmark classifiers were trained on."""

    encoder = encoder or Encoder(backbone, image_size=image_size, views=views)
    return image_features(root, table, encoder, progress)


# ------------------------------------------------------------------ mosaic tiles
def mosaic_features(name: str, encoder, size: int = 128, stride: int = 64,
                    progress: bool = True) -> np.ndarray:
    """Features of every tile an index of the registry mosaic ``name`` would hold (cached)."""

    ds = DATASETS[name]
    path = fetch(name)
    key = json.dumps(dict(encoder=encoder.describe(), mosaic=name, sha256=ds.sha256, size=size, stride=stride))
    cache = features_dir() / f"mosaic-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
    if cache.exists():
        return np.load(cache)
    source = RasterSource(path, name=name, crs=ds.crs, bounds=ds.bounds)
    tiles = (pixels for _, pixels in source.tiles(TileGrid(size, stride, source.native_gsd)))
    feats = np.stack(list(tqdm(encoder.features_stream(tiles), desc=f"encoding {name} tiles",
                               unit="tile", disable=not progress)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_npy(cache.with_suffix(".tmp.npy"), feats)
    cache.with_suffix(".tmp.npy").replace(cache)
    return feats
