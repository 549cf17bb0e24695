"""Lookalike: content-based visual search over Mars and Earth orbital imagery.

The Python API, in the order data flows::

    from lookalike import RasterSource, index_rasters, open_index, search, Query, Filters
"""

from indexer.build import index_images, index_rasters
from indexer.errors import LookalikeError
from indexer.export import hits_to_geojson
from indexer.search import Filters, Query, search
from indexer.sources import RasterSource
from indexer.store import open_index

__all__ = ["Filters", "LookalikeError", "Query", "RasterSource", "hits_to_geojson",
           "index_images", "index_rasters", "open_index", "search"]
__version__ = "0.1.0"
