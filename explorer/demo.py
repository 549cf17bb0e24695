"""The demo data: whole-planet indexes of the registered global mosaics, built on first use."""

from __future__ import annotations

import os
from pathlib import Path

from data.registry import DATASETS, fetch
from indexer.store import MANIFEST

BODIES = {"mars": "mars_8k", "earth": "earth_8k"}


def index_root(root: str | Path | None = None) -> Path:
    """Where demo indexes live: ``root``, ``$LOOKALIKE_INDEXES``, or the user cache."""
    if root:
        return Path(root)
    env = os.environ.get("LOOKALIKE_INDEXES")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("lookalike")) / "indexes"


def ensure_demo_index(body: str = "mars", root: str | Path | None = None, progress: bool = True,
                      **options) -> Path:
    """Path of the demo index of ``body`` ('mars' or 'earth'), building it if it is missing."""
    from indexer.build import index_rasters
    from indexer.errors import LookalikeError
    from indexer.sources import RasterSource

    if body not in BODIES:
        raise LookalikeError(f"unknown body {body!r}; choose from {', '.join(BODIES)}")
    name = BODIES[body]
    out = index_root(root) / name
    if (out / MANIFEST).exists():
        return out
    ds = DATASETS[name]
    source = RasterSource(fetch(name), name=name, crs=ds.crs, bounds=ds.bounds)
    print(f"building the {body} demo index in {out} (once; interrupted builds resume)")
    return index_rasters([source], out, progress=progress, **options)
