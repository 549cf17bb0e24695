"""Exact Hamming search with filters applied before ranking, and the ways to make a query.

Pure functions over numpy arrays first (``hamming_distances``, ``top_k``, ``combine_examples``,
``filter_mask``); ``search_index`` ties them to an ``Index``.

Ranking is by Hamming distance, ties broken by row order in the index, so results are
deterministic and match a stable sort of all distances; a query that is a tile of the index (a
tile id, a point on the map) has that tile first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
import shapely.errors
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from lookalike.data.times import utc_timestamp
from lookalike.errors import CodeLengthError, IndexCorruptError, LookalikeError
from lookalike.indexer.ann import ANN_METHODS, BinaryANN, build_ann
from lookalike.indexer.catalogue import landmark_mask
from lookalike.indexer.cells import Cells
from lookalike.indexer.filter_columns import FilterColumns
from lookalike.indexer.hamming_kernel import scan_top_k, scan_top_k_batch
from lookalike.indexer.image_folders import load_image
from lookalike.indexer.locate import FootprintLocator
from lookalike.indexer.locate_scan import ScanLocator
from lookalike.indexer.store import Index
from lookalike.indexer.tile_table import FrameTable, TileTable
from lookalike.indexer.tiling import Zone
from lookalike.models.hashing import load_hash_model

MAX_K = 10_000
SCAN_ROWS = 1 << 20  # rows per block: bounds the temporary XOR buffer to bytes_per_code MiB
TREE_ROWS = 1_000_000  # footprint trees cost about a kilobyte a tile: larger tables are scanned


# ------------------------------------------------------------------ pure functions
def hamming_distances(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distance from one packed ``query`` (B/8,) to every row of ``codes`` (N, B/8)."""
    codes, query = np.asarray(codes), np.asarray(query, dtype=np.uint8).ravel()
    if codes.ndim != 2 or codes.shape[1] != query.shape[0]:
        raise CodeLengthError(
            f"query has {query.shape[0] * 8} bits, codes have "
            f"{codes.shape[1] * 8 if codes.ndim == 2 else '?'}"
        )
    out = np.empty(len(codes), dtype=np.uint16)
    words = 8 if codes.shape[1] % 8 == 0 else 1
    q = query.view(np.uint64) if words == 8 else query
    for start in range(0, len(codes), SCAN_ROWS):
        block = np.ascontiguousarray(codes[start : start + SCAN_ROWS])
        block = block.view(np.uint64) if words == 8 else block
        out[start : start + len(block)] = np.bitwise_count(block ^ q).sum(axis=1, dtype=np.uint16)
    return out


def top_k(distances: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows and distances of the ``k`` smallest distances, ordered by (distance, row).

    ``rows`` names the index row of each distance when only a filtered subset was scored.
    """
    distances = np.asarray(distances)
    rows = np.arange(len(distances)) if rows is None else np.asarray(rows)
    k = min(int(k), len(distances))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, distances.dtype)
    if k < len(distances):
        # everything strictly below the k-th distance, then ties at it in row order
        kth = np.partition(distances, k - 1)[k - 1]
        below = np.flatnonzero(distances < kth)
        ties = np.flatnonzero(distances == kth)[: k - len(below)]
        pick = np.concatenate([below, ties])
    else:
        pick = np.arange(len(distances))
    order = np.lexsort((rows[pick], distances[pick]))
    pick = pick[order]
    return rows[pick].astype(np.int64), distances[pick]


def combine_examples(
    positives: np.ndarray, negatives: np.ndarray | None = None, negative_weight: float = 0.5
) -> np.ndarray:
    """One query code from several positive and negative example codes (packed uint8).

    Each bit votes: every positive adds +1 where it has the bit set and -1 where not; every
    negative does the opposite with weight ``negative_weight`` (a negative counts half as much as
    a positive by default, so one negative cannot overturn one positive). A bit is 1 where the
    vote is > 0; a tied vote keeps the first positive's bit.
    """
    pos = np.unpackbits(np.atleast_2d(np.asarray(positives, np.uint8)), axis=1).astype(np.float64)
    if len(pos) == 0:
        raise LookalikeError("a combined query needs at least one positive example")
    votes = (2 * pos - 1).sum(axis=0)
    if negatives is not None and len(negatives):
        neg = np.unpackbits(np.atleast_2d(np.asarray(negatives, np.uint8)), axis=1).astype(np.float64)
        if neg.shape[1] != pos.shape[1]:
            raise CodeLengthError("positive and negative examples have different code lengths")
        votes -= negative_weight * (2 * neg - 1).sum(axis=0)
    bits = np.where(votes == 0, pos[0] > 0, votes > 0)
    return np.packbits(bits)


@dataclass
class Filters:
    """Restrictions applied before ranking. Empty fields restrict nothing.

    ``region`` is a shapely geometry, GeoJSON mapping or WKT in lon/lat; a tile matches when its
    centre lies inside. ``bbox`` is (west, south, east, north) with west > east crossing 180.
    ``time_range`` is (start, end), either may be None; tiles without a time never match a
    time range. ``landmark_classes`` keeps tiles whose scene holds at least ``min_landmarks``
    landmarks of one of those classes with posterior >= ``min_confidence`` (``indexer.catalogue``).
    """

    zones: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    time_range: tuple[str | pd.Timestamp | None, str | pd.Timestamp | None] | None = None
    bbox: tuple[float, float, float, float] | None = None
    region: BaseGeometry | dict | str | None = None
    labels: list[str] = field(default_factory=list)
    landmark_classes: list[str] = field(default_factory=list)
    min_confidence: float = 0.0
    min_landmarks: int = 1

    def is_empty(self) -> bool:
        return not (
            self.zones
            or self.sources
            or self.time_range
            or self.bbox
            or self.region is not None
            or self.labels
            or self.landmark_classes
        )

    def without_landmarks(self) -> Filters:
        """The same filters less the landmark condition (what a class facet counts within)."""
        return replace(self, landmark_classes=[])

    def describe(self) -> dict:
        region = self.region
        if region is not None and not isinstance(region, dict):
            region = shapely.geometry.mapping(_as_geometry(region))
        time_range = None if not self.time_range else [None if t is None else str(t) for t in self.time_range]
        return dict(
            zones=self.zones,
            sources=self.sources,
            time_range=time_range,
            bbox=list(self.bbox) if self.bbox else None,
            region=region,
            labels=self.labels,
            landmark_classes=self.landmark_classes,
            min_confidence=self.min_confidence,
            min_landmarks=self.min_landmarks,
        )


def _as_geometry(region) -> BaseGeometry:
    if isinstance(region, BaseGeometry):
        return region
    try:
        if isinstance(region, dict):
            if region.get("type") == "FeatureCollection":
                return shapely.union_all([shape(f["geometry"]) for f in region["features"]])
            return shape(region.get("geometry", region))
        if isinstance(region, str):
            return shapely.from_wkt(region)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, shapely.errors.ShapelyError) as exc:
        raise LookalikeError(f"the search region is not a valid GeoJSON geometry or WKT ({exc!r})") from None
    raise LookalikeError(f"cannot use {type(region).__name__} as a search region")


def filter_mask(
    tiles: pd.DataFrame | TileTable,
    filters: Filters | None,
    landmarks: pd.DataFrame | None = None,
    columns: FilterColumns | None = None,
    cells: Cells | None = None,
) -> np.ndarray | None:
    """Boolean mask of tiles passing ``filters``; None when nothing is filtered.

    ``tiles`` is the tile table (an index's mapped ``TileTable`` is read whole only for the
    landmark and label filters); ``landmarks`` the index's landmark catalogue, needed only for
    ``landmark_classes``; ``columns`` the table's ``FilterColumns`` when kept
    (``Index.filter_columns``), else made here; ``cells`` the index's cell keys, with which a
    box tests the centres of its cells instead of every centre.
    """
    if filters is None or filters.is_empty():
        return None
    table = tiles if isinstance(tiles, TileTable) else FrameTable(tiles)
    cols = columns if columns is not None else table.filter_columns()
    mask = np.ones(len(table), dtype=bool)
    if filters.landmark_classes:
        classes = list(filters.landmark_classes)
        mask &= landmark_mask(
            table.frame(), landmarks, classes, filters.min_confidence, filters.min_landmarks
        )
    if filters.zones:
        mask &= cols.zones_in({Zone.parse(z).label for z in filters.zones})
    if filters.sources:
        mask &= cols.sources_in({str(s) for s in filters.sources})
    if filters.labels:
        if "label" not in table:
            raise LookalikeError("this index has no labels to filter by")
        mask &= table.frame()["label"].isin(filters.labels).to_numpy()
    if filters.time_range:
        mask &= cols.times_within(*(utc_timestamp(t) for t in filters.time_range))
    lon, lat = cols.lon, cols.lat
    if filters.bbox:
        mask &= box_mask(cols, filters.bbox, cells)
    if filters.region is not None:
        geometry = _as_geometry(filters.region)
        if geometry.is_empty:
            raise LookalikeError("the search region is empty")
        if not np.isfinite(shapely.get_coordinates(geometry)).all():
            raise LookalikeError("the search region has coordinates that are not finite numbers")
        try:
            mask &= shapely.contains_xy(geometry, lon, lat) | shapely.intersects_xy(
                geometry.boundary, lon, lat
            )
        except shapely.errors.ShapelyError as exc:  # e.g. coordinates too large for GEOS's arithmetic
            raise LookalikeError(f"the search region cannot be used ({exc})") from None
    return mask


def box_mask(columns: FilterColumns, box: tuple, cells: Cells | None = None) -> np.ndarray:
    """Rows whose centre lies in the lon/lat ``box`` (``FilterColumns.in_box``); with ``cells``
    only the centres in the box's cells are tested (a box of 1 % of the tiles reads about 1 %
    of the centres), unless the box spans too many rows of cells for that to pay."""
    west, south, east, north = (float(v) for v in box)
    clamped = (min(max(west, -180.0), 180.0), south, min(max(east, -180.0), 180.0), north)
    if cells is None or cells.rows_spanned(south, north) > BOX_CELL_ROWS:
        return columns.in_box(west, south, east, north)
    rows = cells.rows_in(*clamped)
    mask = np.zeros(columns.n, bool)
    mask[rows[columns.in_box(west, south, east, north, rows)]] = True
    return mask


BOX_CELL_ROWS = 1 << 14  # rows of cells a box may span and still be read through the cell keys


def ranked_rows(
    codes: np.ndarray, code: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (rows, distances) of ``codes`` for one packed ``code``, only rows in ``mask``.

    Codes of a multiple of 64 bits go through the parallel one-pass scan
    (``indexer.hamming_kernel``); other lengths through the numpy reference functions above.
    """
    if codes.shape[1] % 8 == 0 and len(codes):
        return scan_top_k(codes, code, k, mask)
    if mask is None:
        return top_k(hamming_distances(codes, code), k)
    candidates = np.flatnonzero(mask)
    return top_k(hamming_distances(codes[candidates], code), k, rows=candidates)


def ranked_rows_batch(
    codes: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``ranked_rows`` for each of ``queries`` (Q, B/8); multiples of 64 bits read the codes once
    for all of them (``scan_top_k_batch``)."""
    queries = np.atleast_2d(np.asarray(queries, np.uint8))
    if queries.shape[1] != codes.shape[1]:
        raise CodeLengthError(f"queries have {queries.shape[1] * 8} bits, codes have {codes.shape[1] * 8}")
    if codes.shape[1] % 8 == 0 and len(codes):
        return scan_top_k_batch(codes, queries, k, mask)
    return [ranked_rows(codes, q, k, mask) for q in queries]


METHODS = ("exact", *ANN_METHODS, "auto")
AUTO_MIN_KEPT = 0.5  # a filter that keeps fewer rows makes the scan cheap and graph walks long


def choose_method(index: Index, k: int, mask: np.ndarray | None, method: str = "auto") -> str:
    """The search path for ``method``. 'auto' takes the approximate index stored with the index
    (``lookalike index --ann``) only where its calibration, measured when it was written, met
    the recall bar (``indexer.ann.RECALL_BAR``) faster than the scan, for k up to the calibrated
    k and filters that keep at least AUTO_MIN_KEPT of the rows; the exact scan everywhere else."""
    if method not in METHODS:
        raise LookalikeError(f"unknown search method {method!r}; choose from {', '.join(METHODS)}")
    if method != "auto":
        return method
    calibration = (index.ann_info or {}).get("calibration")
    if (
        not calibration
        or not calibration["meets_bar"]
        or calibration["speedup"] <= 1.0
        or k > calibration["k"]
        or (mask is not None and mask.mean() < AUTO_MIN_KEPT)
    ):
        return "exact"
    return index.ann_info["method"]


def approximate_index(index: Index, method: str) -> tuple[BinaryANN, dict]:
    """The ``method`` index of ``index`` and its search options: the one stored with the index
    (at its calibrated setting) or one built in memory on first use and kept on ``index``."""
    info = index.ann_info
    if info is not None and info["method"] == method:
        calibration = info.get("calibration") or {}
        options = {calibration["option"]: calibration["value"]} if calibration.get("option") else {}
        return index.ann(), options
    cache = index.__dict__.setdefault("_approximate", {})
    if method not in cache:
        if index.bits % 64:
            raise LookalikeError(
                f"approximate search needs codes of a multiple of 64 bits, this index has {index.bits}"
            )
        cache[method] = build_ann(np.asarray(index.codes), method, progress=True)
    return cache[method], {}


def ranked_rows_index(
    index: Index, code: np.ndarray, k: int, mask: np.ndarray | None = None, method: str = "exact"
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (rows, distances) of an index by ``method`` (see ``choose_method``)."""
    chosen = choose_method(index, k, mask, method)
    if chosen == "exact":
        return ranked_rows(index.codes, code, k, mask)
    ann, options = approximate_index(index, chosen)
    return ann.search(code, k, mask, **options)


# ------------------------------------------------------------------ queries on an index
@dataclass
class Query:
    """What to search for: exactly one of these kinds.

    ``tile_id``; ``lonlat`` (the tile whose centre is nearest the point among tiles containing
    it); ``image`` (a picture file, encoded like the index); ``code`` (packed bits);
    ``positives`` / ``negatives`` (tile ids combined with ``combine_examples``).
    """

    tile_id: str | None = None
    lonlat: tuple[float, float] | None = None
    image: str | Path | None = None
    code: np.ndarray | None = None
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Refuse a query that is not exactly one kind."""
        kinds = [
            self.tile_id is not None,
            self.lonlat is not None,
            self.image is not None,
            self.code is not None,
            bool(self.positives),
        ]
        if sum(kinds) != 1:
            raise LookalikeError("give exactly one of: tile id, lon/lat, image, code, or positive examples")


def check_k(k: int) -> None:
    """Refuse a number of hits outside 1..MAX_K."""
    if not 1 <= k <= MAX_K:
        raise LookalikeError(f"k must be between 1 and {MAX_K}, got {k}")


def check_code_length(code: np.ndarray, bits: int) -> np.ndarray:
    """``code`` as a flat packed uint8 array, refused unless it has the index's ``bits``."""
    code = np.asarray(code, dtype=np.uint8).ravel()
    if code.size * 8 != bits:
        raise CodeLengthError(f"query code has {code.size * 8} bits, the index {bits}")
    return code


def scans_for_tiles(index: Index) -> bool:
    """Whether the tile under a point is found by a scan of the centres (more than ``TREE_ROWS``)."""
    return index.n > TREE_ROWS


def tile_locator(index: Index) -> FootprintLocator | ScanLocator:
    """The index's tile-under-a-point finder, made once: footprint trees for up to
    ``TREE_ROWS`` tiles; above, the tiles near the point from the index's cell keys (or, for
    indexes written without them, a scan of the mapped centres), tested nearest first
    (``indexer.locate_scan``)."""
    if scans_for_tiles(index):
        return index.cached(
            "scan_locator", lambda: ScanLocator(index.table, index.filter_columns(), index.cells())
        )
    return index.cached("footprint_locator", lambda: FootprintLocator(index.tiles))


def tile_at(index: Index, lon: float, lat: float) -> int:
    """Row of the tile under (lon, lat): nearest centre among tiles whose footprint holds it."""

    if "lon0" not in index.table:
        raise LookalikeError("this index has no footprints; query it by tile id or image")
    row = int(tile_locator(index).rows_under([lon], [lat])[0])
    if row < 0:
        raise LookalikeError(f"no indexed tile covers lon {lon}, lat {lat}")
    return row


def query_row(index: Index, query: Query) -> int | None:
    """The row of the tile a query is (a tile id or a point on the map), else None."""
    if query.tile_id is not None and query.lonlat is None:
        return index.row_of(query.tile_id)
    if query.lonlat is not None and query.tile_id is None:
        return tile_at(index, *query.lonlat)
    return None


def query_tile_first(
    rows: np.ndarray, dist: np.ndarray, row: int | None, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rank the query's own tile first. It is at distance 0 from itself, but so may be other
    tiles (repeated terrain, blank sea), and ties go by row order: the clicked tile could come
    anywhere among them, or past k. A tile the filter removes is not brought back."""
    if row is None or (mask is not None and not mask[row]):
        return rows, dist
    others = rows != row
    return (
        np.concatenate([np.array([row], rows.dtype), rows[others]])[:k],
        np.concatenate([np.zeros(1, dist.dtype), dist[others]])[:k],
    )


def query_code(index: Index, query: Query, encoder=None) -> np.ndarray:
    """The packed code a query stands for."""
    query.check()
    if query.tile_id is not None:
        return np.asarray(index.codes[index.row_of(query.tile_id)])
    if query.lonlat is not None:
        return np.asarray(index.codes[tile_at(index, *query.lonlat)])
    if query.code is not None:
        return check_code_length(query.code, index.bits)
    if query.image is not None:
        return encode_image_like_index(index, query.image, encoder)
    pos = np.stack([index.codes[index.row_of(t)] for t in query.positives])
    neg = np.stack([index.codes[index.row_of(t)] for t in query.negatives]) if query.negatives else None
    return combine_examples(pos, neg)


def encode_image_like_index(index: Index, image: str | Path, encoder=None) -> np.ndarray:
    """Encode a picture with the index's own backbone and hash model."""

    backbone = index.manifest.get("backbone")
    if (
        not isinstance(backbone, dict)
        or not {"name", "weights_sha256"} <= set(backbone)
        or index.hash_model_path is None
    ):
        raise LookalikeError(
            f"the index {index.path} records no backbone or hash model, so it "
            "cannot encode an image query; query it by tile id"
        )
    try:
        size = int(backbone.get("image_size") or index.manifest.get("tiling", {}).get("size", 128))
    except (AttributeError, TypeError, ValueError):
        raise IndexCorruptError(f"{index.path}: the manifest's image size or tiling is malformed") from None
    pixels = load_image(image, size)[None]  # a bad file is refused before the network is built
    if encoder is None:
        # PyTorch loads here, not with this module: a server that only looks codes up starts faster
        from lookalike.indexer.encoding import Encoder

        encoder = Encoder(backbone["name"], image_size=size, views=index.views)
    if encoder.describe()["weights_sha256"] != backbone["weights_sha256"]:
        raise LookalikeError("the encoder's weights differ from those the index was built with")
    features = encoder.features(pixels)
    return load_hash_model(index.hash_model_path).encode(features)[0]


def search_index(
    index: Index,
    query: Query | np.ndarray,
    k: int = 1000,
    filters: Filters | None = None,
    encoder=None,
    method: str = "auto",
) -> pd.DataFrame:
    """Top-``k`` tiles by Hamming distance, after filters: the tile rows plus rank and distance.

    ``method``: 'exact' (the scan), one of ``indexer.ann.ANN_METHODS`` (approximate: 'hnsw',
    'usearch', 'ivf', 'lsh'; the one stored with the index is used as calibrated, others are
    built in memory on first use and kept on ``index``) or 'auto' (see ``choose_method``).
    """
    check_k(k)
    index.check_unchanged()
    code = check_code_length(
        query_code(index, query, encoder) if isinstance(query, Query) else query, index.bits
    )
    mask = filter_mask(index.table, filters, index.landmarks, index.filter_columns(), index.cells())
    chosen = choose_method(index, k, mask, method)
    rows, dist = ranked_rows_index(index, code, k, mask, chosen)
    if isinstance(query, Query):
        rows, dist = query_tile_first(rows, dist, query_row(index, query), k, mask)
    hits = _hits(index, rows, dist)
    hits.attrs["method"] = chosen
    return hits


def search_index_batch(
    index: Index,
    queries: list[Query | np.ndarray] | np.ndarray,
    k: int = 1000,
    filters: Filters | None = None,
    encoder=None,
    method: str = "auto",
) -> list[pd.DataFrame]:
    """``search_index`` for several queries with the same filters; the exact path reads the codes
    once for all of them."""
    check_k(k)
    index.check_unchanged()
    codes = [
        check_code_length(query_code(index, q, encoder) if isinstance(q, Query) else q, index.bits)
        for q in queries
    ]
    if not codes:
        return []
    mask = filter_mask(index.table, filters, index.landmarks, index.filter_columns(), index.cells())
    if choose_method(index, k, mask, method) == "exact":
        ranked = ranked_rows_batch(index.codes, np.stack(codes), k, mask)
    else:
        ranked = [ranked_rows_index(index, code, k, mask, method) for code in codes]
    own = [query_row(index, q) if isinstance(q, Query) else None for q in queries]
    return [
        _hits(index, *query_tile_first(rows, dist, row, k, mask)) for (rows, dist), row in zip(ranked, own)
    ]


def _hits(index: Index, rows: np.ndarray, dist: np.ndarray) -> pd.DataFrame:
    hits = index.tile_rows(rows)
    hits.insert(0, "distance", dist.astype(np.int32))
    hits.insert(0, "rank", np.arange(1, len(rows) + 1))
    hits.attrs["index_row"] = rows
    return hits


def rank_hamming(archive_codes: np.ndarray, query_codes: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest archive codes by Hamming distance, ties by archive order."""

    return np.stack([top_k(hamming_distances(archive_codes, q), k)[0] for q in query_codes])
