"""Retrieval metrics and the retrieval benchmark on a labelled image folder.

mAP@k: for each query, AP@k = (1 / min(R, k)) * sum_{i<=k} P(i) * rel(i), where R is the number
of archive items sharing the query's label and P(i) the precision of the first i results; mAP@k
is its mean over queries. Precision@k is the fraction of the first k results that are relevant.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from indexer.errors import LookalikeError


def average_precision_at_k(relevant: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k per query from a (Q, >=k) boolean relevance matrix of ranked results."""
    rel = np.asarray(relevant, dtype=bool)[:, :k]
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    denom = np.minimum(np.asarray(n_relevant), k)
    ap = (precision * rel).sum(axis=1) / np.maximum(denom, 1)
    return np.where(denom > 0, ap, 0.0)


def retrieval_scores(query_labels: np.ndarray, archive_labels: np.ndarray, ranked: np.ndarray,
                     k: int) -> dict:
    """mAP@k and precision@k of ranked archive indices (Q, k) for labelled queries."""
    query_labels, archive_labels = np.asarray(query_labels), np.asarray(archive_labels)
    relevant = archive_labels[ranked] == query_labels[:, None]
    counts = pd.Series(archive_labels).value_counts()
    n_relevant = counts.reindex(query_labels).fillna(0).to_numpy()
    return dict(map_at_k=float(average_precision_at_k(relevant, n_relevant, k).mean()),
                precision_at_k=float(relevant[:, :k].mean()))


def rank_euclidean(archive: np.ndarray, queries: np.ndarray, k: int, batch: int = 256) -> np.ndarray:
    """Indices of the k nearest archive rows by Euclidean distance, ties by archive order."""
    archive = np.asarray(archive, dtype=np.float32)
    sq = (archive ** 2).sum(1)
    out = np.empty((len(queries), min(k, len(archive))), dtype=np.int64)
    for s in range(0, len(queries), batch):
        q = np.asarray(queries[s:s + batch], dtype=np.float32)
        d = sq[None, :] - 2.0 * q @ archive.T
        out[s:s + len(q)] = np.argsort(d, axis=1, kind="stable")[:, :out.shape[1]]
    return out


def rank_hamming(archive_codes: np.ndarray, query_codes: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest archive codes by Hamming distance, ties by archive order."""
    from indexer.search import hamming_distances, top_k

    return np.stack([top_k(hamming_distances(archive_codes, q), k)[0] for q in query_codes])


def feature_cache_dir() -> Path:
    env = os.environ.get("LOOKALIKE_CACHE")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("lookalike")) / "features"


def image_features(root: str | Path, table: pd.DataFrame, encoder, progress: bool = True) -> np.ndarray:
    """Backbone features of the images in ``table`` (cached on disk by files, model and size)."""
    from tqdm.auto import tqdm

    from indexer.sources import load_image

    root = Path(root)
    key = json.dumps(dict(encoder=encoder.describe(), root=str(root.resolve()),
                          files=[(p, (root / p).stat().st_size) for p in table["path"]]))
    cache = feature_cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
    if cache.exists():
        return np.load(cache)
    size = encoder.image_size or 224
    images = (load_image(root / p, size) for p in table["path"])
    feats = np.stack(list(tqdm(encoder.features_stream(images), total=len(table),
                               desc="encoding images", unit="img", disable=not progress)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache.with_suffix(".tmp.npy"), feats)
    cache.with_suffix(".tmp.npy").replace(cache)
    return feats


def evaluate_retrieval(root: str | Path, labels_csv: str | Path, *, archive_split: str = "train",
                       query_split: str = "test", k: int = 64, method: str = "default",
                       hash_path: str | None = None, bits: int | None = None, image_size: int = 224,
                       progress: bool = True) -> dict:
    """mAP@k of archive-vs-query retrieval; ``method`` is ``float`` or ``hash``.

    ``float``: backbone features, Euclidean distance. ``hash``: the code ``hash_path`` names
    (see ``models.hashing.resolve_hash``): the shipped default model when it and ``bits`` are
    None, ``"itq"`` for the PCA-ITQ baseline fitted on the archive's own features, or a file.
    """
    from indexer.encoding import Encoder
    from indexer.sources import read_labels
    from models.hashing import resolve_hash

    if k < 1:
        raise LookalikeError("k must be at least 1")
    archive = read_labels(root, labels_csv, split=archive_split)
    queries = read_labels(root, labels_csv, split=query_split)
    encoder = Encoder(image_size=image_size)
    fa = image_features(root, archive, encoder, progress)
    fq = image_features(root, queries, encoder, progress)
    t0 = time.perf_counter()
    if method == "float":
        ranked = rank_euclidean(fa, fq, k)
        n_bits, name, bytes_per_item = 32 * fa.shape[1], f"float-{encoder.name}-euclidean", 4 * fa.shape[1]
    else:
        model = resolve_hash(hash_path, fa, bits, encoder.name)
        ca, cq = model.encode(fa), model.encode(fq)
        t0 = time.perf_counter()
        ranked = rank_hamming(ca, cq, k)
        n_bits, name, bytes_per_item = model.bits, f"{model.method}-{model.bits}", model.bits // 8
    query_ms = (time.perf_counter() - t0) * 1000.0 / max(len(fq), 1)
    scores = retrieval_scores(queries["label"].to_numpy(), archive["label"].to_numpy(), ranked, k)
    return dict(map_at_k=scores["map_at_k"], precision_at_k=scores["precision_at_k"], k=k,
                n_queries=len(queries), n_archive=len(archive), bits=int(n_bits), method=name,
                bytes_per_item=int(bytes_per_item), query_ms=query_ms, backbone=encoder.name,
                image_size=image_size)


def augmented_features(root: str | Path, table: pd.DataFrame, encoder, view: int,
                       progress: bool = True) -> np.ndarray:
    """Features of one random augmented view (seeded by ``view``) of each image, cached."""
    from tqdm.auto import tqdm

    from indexer.sources import load_image
    from models.augment import augment

    root = Path(root)
    key = json.dumps(dict(encoder=encoder.describe(), root=str(root.resolve()), view=view,
                          files=[(p, (root / p).stat().st_size) for p in table["path"]]))
    cache = feature_cache_dir() / f"aug-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
    if cache.exists():
        return np.load(cache)
    size = encoder.image_size or 224
    rng = np.random.default_rng(1000 + view)
    images = (augment(load_image(root / p, size), rng) for p in table["path"])
    feats = np.stack(list(tqdm(encoder.features_stream(images), total=len(table),
                               desc=f"encoding view {view}", unit="img", disable=not progress)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache.with_suffix(".tmp.npy"), feats)
    cache.with_suffix(".tmp.npy").replace(cache)
    return feats
