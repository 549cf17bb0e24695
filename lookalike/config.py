"""The one place that reads the environment: where data, caches and demo indexes live.

- ``LOOKALIKE_DATA``: the data cache (fetched datasets); point it at a folder that already
  holds the files and nothing is downloaded.
- ``LOOKALIKE_CACHE``: derived files (exported ONNX models, cached backbone features, decoded
  basemaps).
- ``LOOKALIKE_INDEXES``: where the demo indexes are built.

Each falls back to the per-user cache directory ``lookalike``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "LOOKALIKE_DATA"
CACHE_ENV = "LOOKALIKE_CACHE"
INDEXES_ENV = "LOOKALIKE_INDEXES"


def _user_cache() -> Path:
    import pooch  # only where no variable is set

    return Path(pooch.os_cache("lookalike"))


def _from_env(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Where fetched datasets live: ``$LOOKALIKE_DATA`` or the user cache."""
    return _from_env(DATA_ENV) or _user_cache()


def onnx_dir() -> Path:
    """Where exported ONNX models live: ``$LOOKALIKE_CACHE/onnx`` or the user cache."""
    return (_from_env(CACHE_ENV) or _user_cache()) / "onnx"


def pixel_cache_dir() -> Path:
    """Where decoded rasters and basemap pyramids live: ``$LOOKALIKE_CACHE/pixels`` or the user cache."""
    return (_from_env(CACHE_ENV) or _user_cache()) / "pixels"


def scale_dir() -> Path:
    """Where ``lookalike bench scale`` keeps its synthetic indexes: ``$LOOKALIKE_CACHE/scale`` or
    the user cache."""
    return (_from_env(CACHE_ENV) or _user_cache()) / "scale"


def features_dir() -> Path:
    """Where cached backbone features live: ``$LOOKALIKE_CACHE`` itself or the user cache."""
    return _from_env(CACHE_ENV) or _user_cache() / "features"


def indexes_dir(root: str | Path | None = None) -> Path:
    """Where demo indexes live: ``root``, ``$LOOKALIKE_INDEXES``, or the user cache."""
    if root:
        return Path(root)
    return _from_env(INDEXES_ENV) or _user_cache() / "indexes"
