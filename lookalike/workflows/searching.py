"""Answering a query on an index, a sharded index or a cluster, and exporting the hits: what
``lookalike search`` does, callable from Python."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from lookalike.errors import LookalikeError
from lookalike.indexer.distributed import ShardedSearch, connect
from lookalike.indexer.export import hits_to_geojson, write_geojson
from lookalike.indexer.search import Filters, Query, search_index
from lookalike.indexer.shards import is_sharded
from lookalike.indexer.store import open_index

# the columns a user sees, in this order, when an index has them
HIT_COLUMNS = ("rank", "distance", "tile_id", "zone", "lon", "lat", "time", "source", "label")


def read_region(path: str | Path) -> dict:
    """A GeoJSON region file as a dict (``Filters.region`` checks its geometry)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise LookalikeError(f"--region {path} is not a GeoJSON file ({exc})") from None


def run_search(
    index: str | Path,
    query: Query,
    *,
    k: int = 1000,
    filters: Filters | None = None,
    method: str = "auto",
    scheduler: str | None = None,
    verify: bool = True,
    geojson: str | Path | None = None,
) -> tuple[pd.DataFrame, float]:
    """The hits of ``query`` and the milliseconds the search itself took.

    A sharded index (or any index with ``scheduler``) is searched on dask workers holding the
    shards ('local' starts a cluster on this machine). ``geojson`` also writes the hits there.
    """
    filters = filters or Filters()
    if scheduler or is_sharded(index):
        shards = index if is_sharded(index) else [index]
        with connect(scheduler or "local") as client:
            engine = ShardedSearch(client, shards, verify=verify)
            t0 = time.perf_counter()
            hits = engine.search(query, k=k, filters=filters, method=method)
            elapsed = (time.perf_counter() - t0) * 1000.0
    else:
        opened = open_index(index, verify=verify)
        t0 = time.perf_counter()
        hits = search_index(opened, query, k=k, filters=filters, method=method)
        elapsed = (time.perf_counter() - t0) * 1000.0
    if geojson:
        write_geojson(
            geojson,
            hits_to_geojson(
                hits, filters=filters.describe(), query={key: v for key, v in vars(query).items() if v}
            ),
        )
    return hits, elapsed


def hit_columns(hits: pd.DataFrame) -> list[str]:
    """The user-facing columns of a hit table."""
    return [c for c in HIT_COLUMNS if c in hits]
