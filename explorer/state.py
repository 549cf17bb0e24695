"""One browser session's state: which index, the query, the filters, the hits, and undo history.

``ExplorerState`` is plain ``param`` and knows nothing about widgets or Bokeh, so it can be driven
and tested without a browser. Whenever the query or a filter changes it runs ``indexer.search``
again; every search (and every example marked) is recorded so ``undo`` can step back. Share
links are written and read by ``explorer.share_links``.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import param
import shapely
from shapely.geometry import box as shapely_box

from lookalike.errors import LookalikeError
from lookalike.explorer.collection_choice import nearest_placed_chip, pick_collection
from lookalike.explorer.projection import PROJECTIONS
from lookalike.explorer.public_messages import clip, printable, without_paths
from lookalike.explorer.share_links import link_params, link_updates, malformed, too_long
from lookalike.indexer import catalogue
from lookalike.indexer.export import hits_to_geojson
from lookalike.indexer.search import MAX_K, Filters, Query, filter_mask, search_index, tile_at
from lookalike.indexer.store import Index

log = logging.getLogger(__name__)

# parameters that define a search; a snapshot of them is one step of the undo history
SEARCH_PARAMS = (
    "query_tile",
    "positives",
    "negatives",
    "use_examples",
    "k",
    "zones",
    "time_start",
    "time_end",
    "bbox",
    "boxes",
    "polygons",
    "landmark_classes",
    "min_confidence",
    "min_landmarks",
)

# layers of the map that can be switched on and off, in drawing order, with their toggle labels
MAP_LAYERS = {
    "basemap": "Basemap",
    "zones": "Zone grid and labels",
    "hirise": "HiRISE coverage",
    "landmarks": "Landmark boxes",
    "density": "Hit density",
    "hits": "Hit markers",
}
# the parameters the Image Class facet counts are filtered by
FACET_INPUTS = [
    "index",
    "zones",
    "time_start",
    "time_end",
    "bbox",
    "boxes",
    "polygons",
    "min_confidence",
    "min_landmarks",
]
# a new page starts uncluttered: the grid and the HiRISE coverage are one click away
DEFAULT_LAYERS = ["basemap", "landmarks", "density", "hits"]


def available_layers(is_mars: bool, has_landmarks: bool) -> list[str]:
    """The switchable layers a map of this index has (in every projection): HiRISE is a Mars layer,
    landmark boxes need a landmark catalogue."""
    return [
        name
        for name in MAP_LAYERS
        if (name != "hirise" or is_mars) and (name != "landmarks" or has_landmarks)
    ]


class ExplorerState(param.Parameterized):
    """Session state of the explorer; set parameters (or call the methods) and hits follow."""

    index = param.ClassSelector(class_=Index, allow_None=True, doc="the index searched (shared, read-only)")
    index_name = param.String(default="", doc="catalog name of the index, for URLs")

    query_tile = param.String(default="", doc="tile id of the clicked tile ('' = no query)")
    positives = param.List(default=[], item_type=str, doc="tile ids to search like")
    negatives = param.List(default=[], item_type=str, doc="tile ids to search unlike")
    use_examples = param.Boolean(default=False, doc="search with the combined examples, not the tile")

    k = param.Integer(default=1000, bounds=(1, MAX_K), doc="number of hits")
    zones = param.List(default=[], item_type=str, doc="restrict to these zones, e.g. ['31N']")
    time_start = param.String(default="", doc="earliest acquisition date (ISO), '' = open")
    time_end = param.String(default="", doc="latest acquisition date (ISO), '' = open")
    bbox = param.Tuple(default=None, length=4, allow_None=True, doc="(west, south, east, north)")
    boxes = param.List(default=[], doc="boxes drawn on the map, each (west, south, east, north)")
    polygons = param.List(default=[], doc="polygons drawn on the map, each a list of (lon, lat)")
    landmark_classes = param.List(
        default=[], item_type=str, doc="Image Class facet: only scenes with landmarks of these classes"
    )
    min_confidence = param.Number(
        default=0.5, bounds=(0.0, 1.0), doc="landmarks count, and are drawn, from this posterior up"
    )
    min_landmarks = param.Integer(
        default=1, bounds=(1, None), doc="a scene needs at least this many landmarks of a chosen class"
    )

    hits = param.DataFrame(default=None, allow_None=True, doc="result of the last search")
    error = param.String(default="", doc="why the last action failed, for the user")
    elapsed_ms = param.Number(default=0.0)
    focus_tile = param.String(default="", doc="tile to pan to and highlight (a clicked thumbnail)")
    page = param.Integer(default=0, bounds=(0, None))
    page_size = param.Integer(default=50, bounds=(1, 1000))
    layers = param.ListSelector(
        default=list(DEFAULT_LAYERS),
        objects=list(MAP_LAYERS),
        doc="map layers switched on (a view setting: not part of a search)",
    )
    projection = param.Selector(
        default="global",
        objects=list(PROJECTIONS),
        doc="the map's projection: the whole planet or a polar cap",
    )
    # the body's map and its collections (explorer.collection_choice picks one per click)
    body = param.String(default="", doc="key of the body whose map is shown")
    collections = param.Dict(default={}, doc="the body's collections: name -> Index (shared)")
    collection_labels = param.Dict(default={}, doc="name -> label of the body's collections")
    collections_on = param.List(default=[], item_type=str, doc="collections drawn and searched by a click")
    search_in = param.String(default="auto", doc="'auto' (the finest under a click) or a collection")
    scene_dates = param.Dict(default={}, doc="collection -> date drawn (YYYY-MM-DD; '' the latest)")
    searched_note = param.String(default="", doc="which collection the last click searched, and why")

    def __init__(self, **params):
        super().__init__(**params)
        self._lock = threading.RLock()  # one search at a time per session
        self._history: list[dict] = []
        self._undoing = False
        self._view_watchers: dict[str, list] = {}  # watchers of rebuilt views (explorer.rebuilt_views)

    # ------------------------------------------------------------------ derived values
    def snapshot(self) -> dict:
        """The parameters that define the current search (copied), and the collection searched."""
        return {name: _copy(getattr(self, name)) for name in (*SEARCH_PARAMS, "index_name")}

    def query(self) -> Query | None:
        """The query in force, or None when there is nothing to search for yet."""
        if self.use_examples and self.positives:
            return Query(positives=list(self.positives), negatives=list(self.negatives))
        if self.query_tile:
            return Query(tile_id=self.query_tile)
        return None

    def region(self):
        """Union of the drawn boxes and polygons as a shapely geometry, or None."""
        shapes = [shapely_box(*b) for b in self.boxes]
        shapes += [shapely.Polygon(p) for p in self.polygons if len(p) >= 3]
        shapes = [s.buffer(0) if not s.is_valid else s for s in shapes]
        return shapely.union_all(shapes) if shapes else None

    def filters(self) -> Filters:
        """The ``indexer.search.Filters`` the widgets stand for; raises on a malformed date."""
        start, end = _date(self.time_start, "start"), _date(self.time_end, "end")
        if start is not None and end is not None and start > end:
            raise LookalikeError(f"the date range is empty: {self.time_start} is after {self.time_end}")
        return Filters(
            zones=list(self.zones),
            time_range=(start, end) if (start is not None or end is not None) else None,
            bbox=tuple(self.bbox) if self.bbox else None,
            region=self.region(),
            landmark_classes=list(self.landmark_classes),
            min_confidence=float(self.min_confidence),
            min_landmarks=int(self.min_landmarks),
        )

    # ------------------------------------------------------------------ landmarks
    @property
    def landmarks(self) -> pd.DataFrame | None:
        return None if self.index is None else self.index.landmarks

    def landmark_class_names(self) -> list[str]:
        return catalogue.classes_of(self.landmarks)

    def _mask(self, with_classes: bool) -> np.ndarray | None:
        """Tiles passing the current filters (without the class facet unless ``with_classes``);
        None for all tiles, also when a filter is malformed (its error shows elsewhere)."""
        try:
            filters = self.filters()
            return filter_mask(
                self.index.table,
                filters if with_classes else filters.without_landmarks(),
                self.landmarks,
                self.index.filter_columns(),
                self.index.cells(),
            )
        except LookalikeError:
            return None

    def facet_counts(self) -> dict[str, int]:
        """Image Class facet: scenes per class under the other filters, the confidence and N."""
        if self.landmarks is None:
            return {}
        return catalogue.facet_counts(
            self.index.tiles,
            self.landmarks,
            self.min_confidence,
            self.min_landmarks,
            self._mask(with_classes=False),
        )

    def visible_landmarks(self) -> pd.DataFrame:
        """Landmarks to draw: chosen classes (all when none), confident enough, in passing scenes."""
        if self.landmarks is None:
            return catalogue.visible_landmarks(None)
        return catalogue.visible_landmarks(
            self.landmarks, self.landmark_classes, self.min_confidence, self._mask(with_classes=True)
        )

    def apply_class_text(self, text: str) -> None:
        """Free text ("crater", "dunes, streak") applied as the class facet; '' clears it."""
        if self.landmarks is None:
            self.error = "This index has no landmark catalogue to filter by class."
            return
        try:
            self.landmark_classes = catalogue.parse_classes(text, self.landmark_class_names())
        except LookalikeError as exc:
            self.error = self.public_message(exc)

    def describe_filters(self) -> list[str]:
        """Human-readable filters in force, one string each."""
        out = []
        if self.zones:
            out.append("zones " + ", ".join(self.zones))
        if self.time_start or self.time_end:
            out.append(f"dates {self.time_start or '…'} to {self.time_end or '…'}")
        if self.bbox:
            out.append("bbox " + ", ".join(f"{v:g}" for v in self.bbox))
        if self.boxes or self.polygons:
            out.append(f"{len(self.boxes) + len(self.polygons)} drawn region(s)")
        if self.landmark_classes:
            out.append(
                f"scenes with ≥ {self.min_landmarks} {' or '.join(self.landmark_classes)} "
                f"landmark(s) at posterior ≥ {self.min_confidence:g}"
            )
        return out

    def describe_query(self) -> dict:
        if self.use_examples and self.positives:
            return dict(positives=list(self.positives), negatives=list(self.negatives))
        return dict(tile_id=self.query_tile) if self.query_tile else {}

    @property
    def n_pages(self) -> int:
        n = 0 if self.hits is None else len(self.hits)
        return max(1, -(-n // self.page_size))

    def page_hits(self) -> pd.DataFrame:
        """The hits on the current page."""
        if self.hits is None:
            return pd.DataFrame()
        start = self.page * self.page_size
        return self.hits.iloc[start : start + self.page_size]

    def tile(self, tile_id: str) -> pd.Series:
        return self.index.tile(self.index.row_of(tile_id))

    # ------------------------------------------------------------------ actions
    def click(self, lon: float, lat: float) -> None:
        """Search for the tile under a map click (a fresh query: examples are dropped)."""
        if self.index is None:
            return
        if self.collections:  # a body's map: the finest collection under the click, or the chosen one
            name, row, note = pick_collection(self, float(lon), float(lat))
            if name is None:
                self.error = note
                return
            self._search_tile(name, row, note)
            return
        try:
            row = tile_at(self.index, float(lon), float(lat))
        except LookalikeError as exc:
            row = self._nearest_placed_chip(float(lon), float(lat))
            if row is None:
                self.error = f"{self.public_message(exc)}. Click on the indexed area of the map."
                return
        self.param.update(
            query_tile=self.index.tile_id_at(row),
            use_examples=False,
            positives=[],
            negatives=[],
            focus_tile="",
        )

    def _nearest_placed_chip(self, lon: float, lat: float) -> int | None:
        return nearest_placed_chip(self.index, lon, lat)

    def _search_tile(self, name: str, row: int, note: str) -> None:
        """Search for tile ``row`` of collection ``name`` (switched to, keeping the filters that
        apply to it)."""
        index = self.collections[name]
        updates = dict(
            query_tile=index.tile_id_at(row),
            use_examples=False,
            positives=[],
            negatives=[],
            focus_tile="",
            searched_note=note,
        )
        if name != self.index_name:
            known = set(catalogue.classes_of(index.landmarks))
            updates.update(
                index=index,
                index_name=name,
                landmark_classes=[c for c in self.landmark_classes if c in known],
            )
        self.param.update(**updates)

    def set_body(self, body: str, collections: dict, labels: dict, default: str) -> None:
        """Show another body's map: its collections all on, searching ``default`` afresh. One
        batch of changes: the views that follow the body and the index are built once, not once
        for the body and again for its index (a choice made between the two would be lost)."""
        with param.parameterized.batch_call_watchers(self):
            self.param.update(
                body=body,
                collections=dict(collections),
                collection_labels=dict(labels),
                collections_on=list(collections),
                search_in="auto",
                scene_dates={},
                searched_note="",
            )
            self.set_index(collections[default], default)

    def mark(self, tile_id: str, kind: str) -> None:
        """Mark a hit as a 'positive' or 'negative' example; marking it again unmarks it."""
        if kind not in ("positive", "negative"):
            raise ValueError(f"kind must be 'positive' or 'negative', not {kind!r}")
        pos, neg = list(self.positives), list(self.negatives)
        if not pos and self.query_tile and tile_id != self.query_tile:
            pos = [self.query_tile]  # the clicked tile is the first positive example
        own, other = (pos, neg) if kind == "positive" else (neg, pos)
        if tile_id in own:
            own.remove(tile_id)
        else:
            own.append(tile_id)
            if tile_id in other:
                other.remove(tile_id)
        self.param.update(positives=pos, negatives=neg)

    def search_examples(self) -> None:
        """Search again with the marked examples combined into one query."""
        if not self.positives:
            self.error = "Mark at least one result as a positive example first (the + button)."
            return
        if self.use_examples:
            self.run_search(force=True)
        else:
            self.use_examples = True

    def clear_regions(self) -> None:
        self.param.update(boxes=[], polygons=[], bbox=None)

    def undo(self) -> bool:
        """Go back one step (a search or a marked example); False when there is nothing to undo."""
        if len(self._history) < 2:
            return False
        self._history.pop()
        previous = dict(self._history[-1])
        name = previous.pop("index_name")
        if name != self.index_name and name in self.collections:  # the search was in another collection
            previous.update(index=self.collections[name], index_name=name)
        self._undoing = True
        try:
            self.param.update(**_copy(previous))
        finally:
            self._undoing = False
        self.run_search(force=True, record=False)
        return True

    @property
    def can_undo(self) -> bool:
        return len(self._history) >= 2

    def set_index(self, index: Index, name: str = "") -> None:
        """Switch to another index: the query, filters and history start afresh."""
        self._history.clear()
        self.param.update(
            index=index,
            index_name=name,
            query_tile="",
            positives=[],
            negatives=[],
            use_examples=False,
            zones=[],
            bbox=None,
            boxes=[],
            polygons=[],
            landmark_classes=[],
            hits=None,
            error="",
            focus_tile="",
            page=0,
        )

    # ------------------------------------------------------------------ searching
    @param.depends(*SEARCH_PARAMS, watch=True)
    def _on_change(self) -> None:
        if not self._undoing:
            self.run_search()

    def run_search(self, force: bool = False, record: bool = True) -> None:
        """Search with the current query and filters; errors end up in ``error``, never raised."""
        with self._lock:
            snap = self.snapshot()
            last = self._history[-1] if self._history else None
            if record and snap != last:
                self._history.append(snap)
            effective = _effective(snap)
            if not force and last is not None and _effective(last) == effective and self.hits is not None:
                return  # e.g. an example was marked: nothing the search depends on changed
            query = self.query()
            # a new search: the thumbnail focused in the last one is no longer on show
            if self.index is None or query is None:
                self.param.update(hits=None, error="", page=0, focus_tile="")
                return
            t0 = time.perf_counter()
            try:
                hits = search_index(self.index, query, k=self.k, filters=self.filters())
            except (LookalikeError, ValueError) as exc:
                self.param.update(
                    hits=_empty_like(self.index), error=self.public_message(exc), page=0, focus_tile=""
                )
                return
            except Exception as exc:  # a bug: log it, but keep the page alive
                log.exception("search failed")
                self.param.update(
                    hits=_empty_like(self.index),
                    error=self.public_message(f"Search failed: {type(exc).__name__}: {exc}"),
                    page=0,
                    focus_tile="",
                )
                return
            error = "" if len(hits) else self._no_hits_message()
            self.param.update(
                hits=hits, error=error, page=0, focus_tile="", elapsed_ms=(time.perf_counter() - t0) * 1000.0
            )

    def _no_hits_message(self) -> str:
        """Why a search found nothing, naming the filter that is most likely to blame."""
        if self.landmark_classes and not (
            self.zones or self.time_start or self.time_end or self.bbox or self.boxes or self.polygons
        ):
            return (
                f"No scene has at least {self.min_landmarks} {' or '.join(self.landmark_classes)} "
                f"landmark(s) at posterior ≥ {self.min_confidence:g}. Lower the landmark count "
                "or the confidence, or choose other classes."
            )
        if self.landmark_classes:
            return (
                "No tiles match these filters. Lower the landmark count or the confidence, or "
                "widen the region, zones or dates."
            )
        return "No tiles match these filters. Widen the region, zones or dates."

    # ------------------------------------------------------------------ export and URLs
    def geojson(self) -> dict:
        """The hits as GeoJSON, with the query and filters that produced them."""
        hits = self.hits if self.hits is not None else _empty_like(self.index)
        try:
            filters = self.filters().describe()
        except LookalikeError:
            filters = None
        return hits_to_geojson(hits, filters=filters, query=self.describe_query())

    def url_params(self) -> dict[str, str]:
        """Query-string parameters that reproduce this search (empty values left out)."""
        return link_params(self)

    def url_query(self) -> str:
        return "?" + urlencode(self.url_params()) if self.url_params() else ""

    def apply_url_params(self, params: dict[str, str]) -> None:
        """Restore a search from ``url_params`` output; bad values become an ``error``.

        A link is untrusted input: every value is checked before anything is applied, and a
        link that cannot be applied leaves the session as it was, with a message.
        """
        overlong = too_long(params)
        if overlong:
            self.error = (
                f"The link's {', '.join(overlong)} parameter(s) are too long; ignoring the link's search."
            )
            return
        try:
            updates, notice = link_updates(params, self.param.k.bounds, self.landmark_class_names)
        except (ValueError, TypeError, AttributeError, RecursionError, LookalikeError) as exc:
            self.error = malformed(exc)
            return
        try:
            self.param.update(**updates)
        except (ValueError, TypeError) as exc:  # param refused a value the checks above let through
            self.error = malformed(exc)
            return
        if notice:  # after the search, which clears errors
            self.error = notice

    def public_message(self, error: Exception | str) -> str:
        """An error as it may be shown on a shared page: the server's folders are not named
        (the index's path becomes its name, other absolute paths their file name), it is one
        line (unprintable characters escaped) and quoted input is cut short."""
        text = str(error)
        if self.index is not None:
            text = text.replace(str(self.index.path), self.index_name or "this index")
        return clip(printable(without_paths(text)))


# ------------------------------------------------------------------ helpers
def _copy(value):
    return list(value) if isinstance(value, list) else value


def _effective(snap: dict) -> dict:
    """What the search result depends on: examples only count when they are the query."""
    out = dict(snap)
    if not out["use_examples"]:
        out["positives"] = out["negatives"] = None
    if not out["landmark_classes"]:  # the sliders only matter once a class is chosen
        out["min_confidence"] = out["min_landmarks"] = None
    return out


def _date(text: str, what: str) -> pd.Timestamp | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise LookalikeError(f"the {what} date {text!r} is not a date; use YYYY-MM-DD") from None
    if pd.isna(ts):
        raise LookalikeError(f"the {what} date {text!r} is not a date; use YYYY-MM-DD")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if what == "end" and len(text) <= 10:
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)  # a whole end day counts
    return ts


def _empty_like(index: Index | None) -> pd.DataFrame:
    if index is None:
        return pd.DataFrame(columns=["rank", "distance", "tile_id"])
    hits = index.tile_rows(np.zeros(0, np.int64))
    hits.insert(0, "distance", np.zeros(0, np.int32))
    hits.insert(0, "rank", np.zeros(0, np.int64))
    return hits


def footprint_bounds(tile: pd.Series) -> tuple[float, float, float, float]:
    """(west, south, east, north) of a tile's footprint corners, unwrapped around its centre."""
    lons = np.array([tile[f"lon{i}"] for i in range(4)], float)
    lons = (lons - tile["lon"] + 180.0) % 360.0 - 180.0 + tile["lon"]
    lats = np.array([tile[f"lat{i}"] for i in range(4)], float)
    return float(lons.min()), float(lats.min()), float(lons.max()), float(lats.max())


__all__ = [
    "DEFAULT_LAYERS",
    "FACET_INPUTS",
    "MAP_LAYERS",
    "ExplorerState",
    "available_layers",
    "footprint_bounds",
]
