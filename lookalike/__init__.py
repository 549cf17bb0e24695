"""Lookalike: content-based visual search over Mars and Earth orbital imagery.

The Python API, in the order data flows::

    from lookalike import RasterSource, index_rasters, open_index, search, Query, Filters

Names are imported on first use, so ``import lookalike`` (and ``lookalike --help``) does not load
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (``module:name`` where the name there differs)
_API = {
    "LookalikeError": "lookalike.errors",
    "RasterSource": "lookalike.indexer.sources",
    "index_images": "lookalike.indexer.build",
    "index_rasters": "lookalike.indexer.build",
    "open_index": "lookalike.indexer.store",
    "Filters": "lookalike.indexer.search",
    "Query": "lookalike.indexer.search",
    "search": "lookalike.indexer.search:search_index",
    "search_batch": "lookalike.indexer.search:search_index_batch",
    "hits_to_geojson": "lookalike.indexer.export",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
    module, _, attribute = _API[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
