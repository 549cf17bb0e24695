"""Views over one ``ExplorerState``: the map, the thumbnail grid, the sidebar controls.

Views read the state through ``pn.bind`` / parameter references and change it only by setting its
parameters or calling its methods, so the state stays the single source of truth.
"""

from __future__ import annotations

import html
import io
import json
import logging
import weakref
from functools import lru_cache, partial
from urllib.parse import quote

import geoviews as gv
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.core.property.descriptors import UnsetValueError
from holoviews.operation.datashader import rasterize, shade
from panel.custom import JSComponent

from lookalike.data.hirise import in_time_range, load_hirise_footprints
from lookalike.errors import LookalikeError
from lookalike.explorer import basemap
from lookalike.explorer.projection import VIEWS, MapProjection
from lookalike.explorer.served import Catalog, Entry
from lookalike.explorer.state import MAP_LAYERS, ExplorerState, available_layers, footprint_bounds
from lookalike.indexer.thumbnails import basemap_image
from lookalike.indexer.tiling import Zone

log = logging.getLogger(__name__)

HIT_COLORS = ["#ffe066", "#ff6b00", "#ff0040"]
HIRISE_COLORS = ["#9fe0ff", "#2a8cff"]
POLAR_MAP_PX = 600  # a polar view's side
OVERVIEW_PX = 1024  # width of the coarse basemap image of a whole view
DETAIL_PX = {False: (1200, 600), True: (POLAR_MAP_PX, POLAR_MAP_PX)}  # first detail image: (w, h) of the view
HIRISE_FOOTPRINT_COLOR = "#7fd4ff"  # single footprints, drawn once few are in view
MAP_SIZING = "stretch_width"  # the map fills the page's width; its aspect sets its height
HIRISE_CELL_PX = 3  # screen pixels per cell of the HiRISE coverage raster
HIRISE_HOVER_MAX = 3000  # footprints drawn as hoverable shapes when at most this many are in view
# one colour per landmark class, in the classifier's class order
LANDMARK_COLORS = ["#39cccc", "#b10dc9", "#2ecc40", "#f012be", "#ffffff", "#01ff70", "#7fdbff",
                   "#aaaaaa", "#3d9970", "#85144b"]  # none of the hit markers' yellow/orange/red
LANDMARK_MAX_DRAWN = 5000  # the most confident first, when more are visible
DENSITY_COLORS = ("#6a51a3", "#f2e6ff")  # few -> many hits, transparent where there are none
ZONE_COLOR = "#4da3ff"  # selected zones' shading (the grid itself is faint white)
# outlines of tiles and regions: colour, width, dash
OUTLINE_STYLES = {"query": ("#ff2d2d", 3, "solid"), "positives": ("#2ecc40", 2, "solid"),
                  "negatives": ("#ff4136", 2, "dashed"), "focus": ("#00e5ff", 3, "solid")}
REGION_STYLE = dict(fill_alpha=0.1, fill_color="#ffffff", line_color="#ffffff", line_width=2,
                    line_dash="dashed")
# filters the Image Class facet counts within
FACET_INPUTS = ["index", "zones", "time_start", "time_end", "bbox", "boxes", "polygons",
                "min_confidence", "min_landmarks"]


def watch_state(state: ExplorerState, group: str, fn, names) -> None:
    """``state.param.watch`` for a view that is rebuilt (the sidebar and the map are rebuilt on
    every change of index): the watchers of the view's previous build are released first by
    ``release_views``, so old widgets stop following the state."""
    state._view_watchers.setdefault(group, []).append(state.param.watch(fn, names))


def release_views(state: ExplorerState, group: str) -> None:
    for watcher in state._view_watchers.pop(group, []):
        state.param.unwatch(watcher)


# ------------------------------------------------------------------ thumbnails
class ThumbnailGrid(JSComponent):
    """One page of hits as thumbnails; a click focuses a tile, + / − mark it as an example.

    Each card carries ``data-tile-id``, ``data-rank``, ``data-time``, ``data-lon`` and
    ``data-lat`` so tests and scripts can read the results off the page.
    """

    items = param.List(default=[], doc="dicts: tile_id, rank, distance, src, time, lon, lat, mark")
    selected = param.String(default="", doc="tile id shown highlighted")

    _esm = """
    export function render({ model, el }) {
      const grid = document.createElement('div');
      grid.className = 'thumb-grid';
      function button(text, title, action, tile_id) {
        const b = document.createElement('button');
        b.textContent = text; b.title = title; b.className = 'mark-' + action;
        b.addEventListener('click', (e) => { e.stopPropagation(); model.send_msg({action, tile_id}); });
        return b;
      }
      function cardClass(it) {
        return 'thumb' + (it.tile_id === model.selected ? ' selected' : '') + (it.mark ? ' ' + it.mark : '');
      }
      function draw() {
        // same tiles as shown (a mark or the highlight changed): update the classes in place,
        // so images are not reloaded and a click in flight still lands on its card
        const shown = Array.from(grid.children);
        if (shown.length === model.items.length && shown.length > 0 &&
            model.items.every((it, i) => shown[i].dataset.tileId === it.tile_id && shown[i].dataset.rank == it.rank &&
                                      shown[i].dataset.distance == it.distance)) {
          model.items.forEach((it, i) => { shown[i].className = cardClass(it); });
          return;
        }
        grid.replaceChildren();
        for (const it of model.items) {
          const card = document.createElement('div');
          card.className = cardClass(it);
          Object.assign(card.dataset, {tileId: it.tile_id, rank: it.rank, distance: it.distance,
                                       time: it.time, lon: it.lon, lat: it.lat});
          const img = document.createElement('img');
          img.decoding = 'async'; img.src = it.src; img.width = 96; img.height = 96; img.alt = it.tile_id; img.title = it.tile_id;
          img.addEventListener('click', () => model.send_msg({action: 'focus', tile_id: it.tile_id}));
          const cap = document.createElement('div');
          cap.className = 'caption';
          cap.textContent = `#${it.rank} · ${it.distance} bits`;
          cap.title = 'rank, and Hamming distance to the query: the number of code bits that differ';
          const marks = document.createElement('div');
          marks.className = 'marks';
          marks.append(button('+', 'positive example', 'positive', it.tile_id),
                       button('−', 'negative example', 'negative', it.tile_id));
          card.append(img, cap, marks);
          grid.append(card);
        }
      }
      draw();
      model.on('items', draw);
      model.on('selected', draw);
      return grid;
    }
    """

    _stylesheets = ["""
    .thumb-grid { display: flex; flex-wrap: wrap; gap: 6px; }
    .thumb { width: 100px; border: 2px solid transparent; border-radius: 4px; background: #222;
             color: #ddd; font: 11px sans-serif; text-align: center; }
    .thumb img { display: block; margin: 2px; cursor: pointer; background: #111; }
    .thumb.selected { border-color: #00e5ff; }
    .thumb.positive { box-shadow: 0 0 0 2px #2ecc40 inset; }
    .thumb.negative { box-shadow: 0 0 0 2px #ff4136 inset; opacity: 0.6; }
    .marks button { width: 26px; margin: 1px 3px 3px; cursor: pointer; border: none;
                    border-radius: 3px; background: #444; color: white; }
    .marks .mark-positive:hover { background: #2ecc40; }
    .marks .mark-negative:hover { background: #ff4136; }
    """]

    def __init__(self, on_action=None, **params):
        super().__init__(**params)
        self._on_action = on_action

    def _handle_msg(self, msg) -> None:
        if self._on_action is not None and isinstance(msg, dict):
            self._on_action(str(msg.get("action", "")), str(msg.get("tile_id", "")))


def thumbnail_url(index_name: str, tile_id: str) -> str:
    # relative, so the app also works behind a path prefix
    return f"thumb/{quote(index_name, safe='')}/{quote(tile_id, safe='')}.jpg"


def thumbnail_items(state: ExplorerState, hits: pd.DataFrame | None, page: int,
                    positives: list[str], negatives: list[str], inline=None) -> list[dict]:
    """The cards of the current page.

    ``inline``, when given, maps the page's tile rows to {tile id: image data URI} for the
    thumbnails it has at hand; the others are loaded by the browser from the /thumb route.
    """
    if hits is None or len(hits) == 0:
        return []
    rows = hits.iloc[page * state.page_size:(page + 1) * state.page_size]
    embedded = inline(rows) if inline is not None else {}
    times = rows["time"].tolist() if "time" in rows else [None] * len(rows)
    items = []
    # columns, not records: a record of every column of the tile table costs more than the page
    for tile_id, rank, distance, t, lon, lat in zip(
            rows["tile_id"].astype(str).tolist(), rows["rank"].tolist(), rows["distance"].tolist(), times,
            rows["lon"].to_numpy(float).tolist(), rows["lat"].to_numpy(float).tolist()):
        items.append(dict(
            tile_id=tile_id, rank=int(rank), distance=int(distance),
            src=embedded.get(tile_id) or thumbnail_url(state.index_name, tile_id),
            time="" if t is None or pd.isna(t) else pd.Timestamp(t).isoformat(),
            lon=round(lon, 5), lat=round(lat, 5),
            mark="positive" if tile_id in positives else "negative" if tile_id in negatives else ""))
    return items


def page_caption(state: ExplorerState, hits, page) -> str:
    """The pager's caption: which hits the page shows."""
    if hits is None or len(hits) == 0:
        return ""
    first = page * state.page_size + 1
    last = min(len(hits), (page + 1) * state.page_size)
    return f"Hits {first}–{last} of {len(hits)} · page {page + 1} of {state.n_pages}"


def results_panel(state: ExplorerState, inline=None) -> pn.Column:
    """Hit count, pager and the thumbnail grid (``inline``: see ``thumbnail_items``)."""
    def on_action(action: str, tile_id: str) -> None:
        if action == "focus":
            state.focus_tile = tile_id
        elif action in ("positive", "negative"):
            state.mark(tile_id, action)

    grid = ThumbnailGrid(
        on_action=on_action, selected=state.param.focus_tile,
        items=pn.bind(thumbnail_items, state, state.param.hits, state.param.page,
                      state.param.positives, state.param.negatives, inline=inline),
        sizing_mode="stretch_width")
    prev_page = pn.widgets.Button(name="◀ Previous", width=110,
                                  disabled=pn.bind(lambda p: p <= 0, state.param.page))
    next_page = pn.widgets.Button(name="Next ▶", width=110,
                                  disabled=pn.bind(lambda h, p: h is None or p >= state.n_pages - 1,
                                                   state.param.hits, state.param.page))
    prev_page.on_click(lambda _: state.param.update(page=max(0, state.page - 1)))
    next_page.on_click(lambda _: state.param.update(page=min(state.n_pages - 1, state.page + 1)))

    # always shown (disabled without hits): a pager appearing with the first results made the
    # browser lay the whole page out again, a third of a second of the first click
    info = text_block(pn.bind(page_caption, state, state.param.hits, state.param.page),
                      css_classes=["page-info"], margin=(12, 10))
    pager = pn.Row(prev_page, next_page, info)
    return pn.Column(pager, grid, sizing_mode="stretch_width")


WARNING_STYLE = {"background": "#4d3800", "color": "#ffe08a", "border": "1px solid #8a6d00",
                 "border-radius": "4px", "padding": "2px 10px"}


def text_block(html_text, size: int | None = None, **params) -> pn.widgets.StaticText:
    """A block of text given as HTML (escape what does not come from this code: ``inert``,
    ``html.escape``). A Bokeh Div rather than a Panel HTML or Markdown pane: any of those makes
    the page load MathJax (600 kB of script) and re-sends its stylesheets with every change,
    which makes Bokeh walk every model of the page, on the server and in the browser."""
    if size:
        params["styles"] = {**params.get("styles", {}), "font-size": f"{size}px"}
    return pn.widgets.StaticText(value=html_text, **params)


# ------------------------------------------------------------------ status
# characters that Markdown or HTML would read as markup
_MARKUP = frozenset("\\`*_{}[]()<>#+-.!|&\"'~=")


def inert(text: str) -> str:
    """``text`` as Markdown that shows it literally: every character that HTML or Markdown would
    read as markup becomes a numeric character reference (user input, such as a shared link's
    values, must never become markup in someone else's page)."""
    return "".join(f"&#{ord(c)};" if c in _MARKUP else c for c in str(text))


def status_html(state: ExplorerState, hits, error, query_tile, use_examples, positives,
                negatives, *_filters) -> str:
    """The hit count, the query and the filters in force, always visible (values from the
    user, such as a shared link's, pass through ``inert``)."""
    if hits is None:
        head = "<b>Click the map</b> to search for the lookalikes of the tile under the cursor."
    else:
        head = f"<b>{len(hits)} hits</b> (k = {state.k}, {state.elapsed_ms:.0f} ms)"
    if use_examples and positives:
        query = f"{len(positives)} positive / {len(negatives)} negative examples"
    else:
        query = inert(query_tile) if query_tile else "none"
    filters = [inert(f) for f in state.describe_filters()]
    lines = [head, f"Query: {query}", "Filters: " + ("; ".join(filters) if filters else "none")]
    if positives or negatives:
        lines.append(f"Marked: {len(positives)} positive, {len(negatives)} negative")
    return "<br>".join(lines)


def status_pane(state: ExplorerState) -> pn.Column:
    status = text_block(pn.bind(status_html, state, state.param.hits, state.param.error,
                                state.param.query_tile, state.param.use_examples,
                                state.param.positives, state.param.negatives, state.param.zones,
                                state.param.time_start, state.param.time_end, state.param.bbox,
                                state.param.boxes, state.param.polygons),
                        css_classes=["status"], sizing_mode="stretch_width", margin=(0, 10),
                        styles={"line-height": "1.5"})
    alert = text_block(pn.bind(inert, state.param.error), css_classes=["error"], styles=WARNING_STYLE,
                       visible=pn.bind(bool, state.param.error), sizing_mode="stretch_width")
    return pn.Column(alert, status, sizing_mode="stretch_width")


# ------------------------------------------------------------------ legend
def legend_entries(available: list[str], shown: list[str], classes: list[str]) -> list[dict]:
    """Rows of the map legend for the layers this map has, in drawing order (top first).

    Each row: ``layer`` (its switch, '' for the always-drawn outlines), ``kind`` of swatch
    (dot, line, dashed, box or ramp), ``colors``, ``text`` (plain text, may come from data) and
    ``off`` (its layer is switched off).
    """
    rows = []

    def add(layer: str, kind: str, colors, text: str) -> None:
        rows.append(dict(layer=layer, kind=kind, colors=list(colors), text=text,
                         off=bool(layer) and layer not in shown))

    if "hits" in available:
        add("hits", "dot", [HIT_COLORS[2]], "hit on the page of thumbnails shown")
        add("hits", "dot", [HIT_COLORS[1]], "hit among the nearest fifth (Hamming distance)")
        add("hits", "dot", [HIT_COLORS[0]], "farther hit")
    for name, text in (("query", "query tile"), ("positives", "positive example"),
                       ("negatives", "negative example"), ("focus", "thumbnail clicked")):
        color, _, dash = OUTLINE_STYLES[name]
        add("", "dashed" if dash == "dashed" else "line", [color], text)
    add("", "dashed", [REGION_STYLE["line_color"]], "drawn or typed region (filter)")
    if "density" in available:
        add("density", "ramp", DENSITY_COLORS, "hit density: few to many hits")
    if "landmarks" in available:
        for i, name in enumerate(classes):
            add("landmarks", "box", [LANDMARK_COLORS[i % len(LANDMARK_COLORS)]], f"landmark: {name}")
    if "hirise" in available:
        add("hirise", "ramp", HIRISE_COLORS, "HiRISE coverage: few to many images")
        add("hirise", "box", [HIRISE_FOOTPRINT_COLOR], "HiRISE image footprint (zoomed in)")
    if "zones" in available:
        add("zones", "box", [ZONE_COLOR], "selected UTM zone (grid: 6° zones)")
    return rows


def _swatch(kind: str, colors: list[str]) -> str:
    c = [html.escape(x, quote=True) for x in colors]
    if kind == "dot":
        style = f"background:{c[0]};border-radius:50%;border:1px solid #000;width:9px;height:9px;margin:0 5px"
    elif kind in ("line", "dashed"):
        style = f"border-top:3px {'dashed' if kind == 'dashed' else 'solid'} {c[0]};height:0;width:18px"
    elif kind == "box":
        style = f"border:2px solid {c[0]};background:{c[0]}33;width:14px;height:9px;margin:0 1px"
    else:
        style = f"background:linear-gradient(to right,{c[0]}40,{c[-1]});width:18px;height:10px"
    return (f'<span class="swatch {kind}" data-color="{",".join(c)}" '
            f'style="display:inline-block;flex:none;{style}"></span>')


def legend_html(rows: list[dict]) -> str:
    """The legend as HTML; every text is escaped (class names come from model files)."""
    out = ['<div class="legend" style="font-size:12px;line-height:1.5">']
    for row in rows:
        opacity = "0.4" if row["off"] else "1"
        out.append(f'<div class="legend-row{" off" if row["off"] else ""}" '
                   f'data-layer="{html.escape(row["layer"], quote=True)}" '
                   f'style="display:flex;align-items:center;gap:6px;opacity:{opacity}">'
                   f'{_swatch(row["kind"], row["colors"])}<span>{html.escape(row["text"])}'
                   f'{" (off)" if row["off"] else ""}</span></div>')
    out.append("</div>")
    return "".join(out)


def layer_controls(state: ExplorerState, entry: Entry | None) -> pn.Column:
    """The "Layers" switches of the map and its legend, both following ``state.layers``."""
    available = available_layers(entry is not None and entry.is_mars, state.landmarks is not None)
    switches = pn.widgets.CheckBoxGroup(
        name="Layers", options={MAP_LAYERS[n]: n for n in available},
        value=[n for n in state.layers if n in available], inline=False, css_classes=["map-layers"])

    def switched(event) -> None:
        # layers this map lacks (HiRISE on Earth) keep their setting for the next map
        state.layers = [n for n in MAP_LAYERS if n in event.new or (n in state.layers and n not in available)]

    switches.param.watch(switched, "value")
    watch_state(state, "sidebar", lambda e: setattr(switches, "value", [n for n in e.new if n in available]),
                "layers")
    classes = state.landmark_class_names() if "landmarks" in available else []
    legend = text_block(pn.bind(lambda shown: legend_html(legend_entries(available, shown, classes)),
                                state.param.layers),
                        css_classes=["map-legend"], sizing_mode="stretch_width", margin=(0, 10))
    return pn.Column(text_block("<b>Map layers</b>"), switches, legend, sizing_mode="stretch_width")


# ------------------------------------------------------------------ controls
def parse_bbox(text: str) -> tuple[float, float, float, float] | None:
    """'west,south,east,north' -> tuple; '' -> None; raises LookalikeError otherwise."""
    text = text.strip()
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise LookalikeError(f"bbox {text!r} needs four numbers: west,south,east,north")
    west, south, east, north = values
    if not (-90 <= south < north <= 90 and -180 <= west <= 180 and -180 <= east <= 180):
        raise LookalikeError(f"bbox {text!r} is not a box in degrees (south < north, lon in ±180)")
    return values


def controls(state: ExplorerState, catalog: Catalog) -> pn.Column:
    """Sidebar widgets, each bound to a state parameter."""
    body = pn.widgets.Select(name="Body", options=catalog.labels(), value=state.index_name)
    body.param.watch(lambda e: state.set_index(catalog[e.new].index, e.new), "value")
    release_views(state, "sidebar")
    watch_state(state, "sidebar", lambda e: setattr(body, "value", e.new), "index_name")

    k = pn.widgets.IntInput(name="Number of hits (k)", value=state.k, step=100)

    def k_typed(event) -> None:
        low, high = state.param.k.bounds
        if event.new is None or not low <= event.new <= high:
            # say so and put the box back: a bad value left in it would look as if it applied
            state.error = f"k must be a whole number from {low} to {high}; still showing {state.k} hits"
            k.value = state.k
        else:
            state.k = event.new

    k.param.watch(k_typed, "value")
    watch_state(state, "sidebar", lambda e: setattr(k, "value", e.new), "k")
    zone_options = sorted([z for z in state.index.tiles["zone"].unique().tolist() if z],
                          key=lambda z: Zone.parse(z).sort_key) if state.index is not None else []
    view = pn.widgets.Select.from_param(state.param.view, name="Map view",
                                        options={label: key for key, label in VIEWS.items()})
    zones = pn.widgets.MultiChoice.from_param(state.param.zones, name="UTM/UPS zones",
                                              options=zone_options, placeholder="all zones")
    start = pn.widgets.TextInput.from_param(state.param.time_start, name="From date",
                                            placeholder="YYYY-MM-DD", width=135)
    end = pn.widgets.TextInput.from_param(state.param.time_end, name="To date",
                                          placeholder="YYYY-MM-DD", width=135)
    times = state.index.tiles["time"] if state.index is not None else pd.Series(dtype=object)
    span = (f"Tiles dated {times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
            if times.notna().any() else "Tiles carry no dates")

    bbox = pn.widgets.TextInput(name="Bounding box (west,south,east,north)",
                                placeholder="e.g. 0,10,20,40",
                                value=",".join(f"{v:g}" for v in state.bbox) if state.bbox else "")

    def bbox_typed(event) -> None:
        try:
            state.bbox = parse_bbox(event.new)
        except LookalikeError as exc:
            state.error = str(exc)

    bbox.param.watch(bbox_typed, "value")
    # the box also changes from elsewhere (Clear, undo, a shared link): mirror it in the text
    watch_state(state, "sidebar",
                lambda e: setattr(bbox, "value", ",".join(f"{v:g}" for v in e.new) if e.new else ""),
                "bbox")
    clear = pn.widgets.Button(name="Clear regions", button_type="light")
    clear.on_click(lambda _: state.clear_regions())

    refine = pn.widgets.Button(name="Search with examples", button_type="primary",
                               disabled=pn.bind(lambda p: not p, state.param.positives))
    refine.on_click(lambda _: state.search_examples())
    undo = pn.widgets.Button(name="Undo", button_type="light")
    undo.on_click(lambda _: state.undo())

    export = pn.widgets.FileDownload(
        callback=lambda: io.StringIO(json.dumps(state.geojson(), default=str)),
        filename="lookalike-hits.geojson", label="Export hits (GeoJSON)", button_type="success",
        disabled=pn.bind(lambda h: h is None or len(h) == 0, state.param.hits))
    hints = text_block(
        "Draw boxes with the box tool (shift-drag), polygons with the polygon tool (press and "
        "hold to place the first corner, click for each next one, press and hold or Esc to "
        "finish); they restrict the search. While a drawing tool is active, taps on the map "
        "draw; pick the pan tool to search by tapping again.", size=12)
    return pn.Column(
        body, view, k, zones, pn.Row(start, end), text_block(span, size=11),
        bbox, hints, clear, landmark_controls(state), pn.layout.Divider(), refine, undo,
        pn.layout.Divider(), export, pn.layout.Divider(),
        layer_controls(state, catalog.entries.get(state.index_name)),
        sizing_mode="stretch_width")


def facet_options(counts: dict[str, int]) -> dict[str, str]:
    """CheckBoxGroup options: 'crater (12)' -> 'crater'."""
    return {f"{name} ({n})": name for name, n in counts.items()}


def landmark_controls(state: ExplorerState) -> pn.viewable.Viewable:
    """Image Class facet with counts, confidence and 'at least N' sliders, and a class text box."""
    if state.landmarks is None:
        return text_block("This index has no landmark catalogue.", size=11)
    facet = pn.widgets.CheckBoxGroup(name="Image class", options=facet_options(state.facet_counts()),
                                     value=list(state.landmark_classes), inline=False,
                                     css_classes=["class-facet"])
    facet.param.watch(lambda e: setattr(state, "landmark_classes", list(e.new)), "value")
    watch_state(state, "sidebar", lambda e: setattr(facet, "value", list(e.new)), "landmark_classes")

    def recount(*_) -> None:
        facet.options = facet_options(state.facet_counts())

    watch_state(state, "sidebar", recount, FACET_INPUTS)
    confidence = pn.widgets.FloatSlider.from_param(state.param.min_confidence, name="Landmark confidence ≥",
                                                   step=0.05)
    at_least = pn.widgets.IntSlider.from_param(state.param.min_landmarks, start=1, end=20,
                                               name="At least N landmarks of a chosen class")
    text = pn.widgets.TextInput(name="Class (type, e.g. crater)", placeholder="crater, dunes, streak")
    text.param.watch(lambda e: state.apply_class_text(e.new), "value")
    return pn.Column(pn.layout.Divider(), text_block("<b>Image class</b> (scenes with landmarks)"),
                     facet, text, confidence, at_least, sizing_mode="stretch_width")


# ------------------------------------------------------------------ map
# After a pan or zoom, fetch the basemap of the visible part (padded by a quarter on each side, at
# screen resolution) unless the image shown already covers it at a similar scale. Debounced: a
# drag or a wheel spin makes one request at its end.
BASEMAP_JS = """
const key = source.id;
window._basemapTimers = window._basemapTimers || {};
clearTimeout(window._basemapTimers[key]);
window._basemapTimers[key] = setTimeout(() => {
  const xr = fig.x_range, yr = fig.y_range;
  const vw = xr.end - xr.start, vh = yr.end - yr.start;
  const fw = fig.inner_width || 1000, fh = fig.inner_height || 500;
  if (!(vw > 0 && vh > 0)) return;
  const d = source.data;
  if (d.x.length) {
    const covers = d.x[0] <= Math.max(xr.start, bounds[0]) && d.x[0] + d.w[0] >= Math.min(xr.end, bounds[2]) &&
                   d.y[0] <= Math.max(yr.start, bounds[1]) && d.y[0] + d.h[0] >= Math.min(yr.end, bounds[3]);
    const px = Number(new URL(d.url[0], window.location.href).searchParams.get('w'));
    const scale = (px / d.w[0]) / (fw / vw);  // image pixels per screen pixel
    if (covers && scale > 0.75 && scale < 1.5) return;
  }
  const x0 = Math.max(bounds[0], xr.start - vw / 4), x1 = Math.min(bounds[2], xr.end + vw / 4);
  const y0 = Math.max(bounds[1], yr.start - vh / 4), y1 = Math.min(bounds[3], yr.end + vh / 4);
  if (!(x1 > x0 && y1 > y0)) return;
  const w = Math.max(16, Math.min(MAX_PX, Math.round(fw * (x1 - x0) / vw)));
  const h = Math.max(16, Math.min(MAX_PX, Math.round(fh * (y1 - y0) / vh)));
  const query = `x0=${x0}&y0=${y0}&x1=${x1}&y1=${y1}&w=${w}&h=${h}`;
  source.data = {url: [`${base}?${query}`], x: [x0], y: [y0], w: [x1 - x0], h: [y1 - y0]};
}, 150);
""".replace("MAX_PX", "2400")


def basemap_query(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> str:
    return f"x0={x0!r}&y0={y0!r}&x1={x1!r}&y1={y1!r}&w={int(width)}&h={int(height)}"


def basemap_request(bounds, x_range, y_range, width: int, height: int, pad: float = 0.25) -> dict | None:
    """A basemap image of a view: the view padded by ``pad`` of its size on each side, inside
    ``bounds``, at ``width`` x ``height`` pixels for the view itself (as ``BASEMAP_JS`` asks)."""
    (vx0, vx1), (vy0, vy1) = x_range, y_range
    vw, vh = vx1 - vx0, vy1 - vy0
    x0, x1 = max(bounds[0], vx0 - vw * pad), min(bounds[2], vx1 + vw * pad)
    y0, y1 = max(bounds[1], vy0 - vh * pad), min(bounds[3], vy1 + vh * pad)
    if not (x1 > x0 and y1 > y0 and vw > 0 and vh > 0):
        return None
    w = max(16, min(2400, round(width * (x1 - x0) / vw)))
    h = max(16, min(2400, round(height * (y1 - y0) / vh)))
    return {"query": basemap_query(x0, y0, x1, y1, w, h), "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0}


# the tools that draw regions: a tap while one of them is active draws, it does not search
DRAW_TOOLS = ["BoxEditTool", "PolyDrawTool", "PolyEditTool", "PointDrawTool", "FreehandDrawTool"]

# sent to the server only when no drawing tool is active, so drawing never starts a search
TAP_JS = """
const drawing = fig.toolbar.tools.some(t => t.active && draw_tools.includes(t.type ?? t.constructor.__name__));
if (!drawing) {
  sink.data = {x: [cb_obj.x], y: [cb_obj.y], n: [(sink.data.n?.[0] ?? 0) + 1]};
}
"""


@lru_cache(maxsize=16)
def hirise_footprints(start: str, end: str, show: bool,
                      projection: MapProjection | None = None) -> hv.Rectangles:
    """HiRISE footprints observed between two dates, in lon/lat or in a polar ``projection``,
    shared by every session of the process."""

    table = load_hirise_footprints()
    if not show:
        return basemap.hirise_rectangles(table.iloc[:0], projection)
    try:
        return basemap.hirise_rectangles(in_time_range(table, start or None, end or None), projection)
    except (ValueError, TypeError):
        return basemap.hirise_rectangles(table, projection)


def weak_hook(method):
    """A HoloViews plot hook that calls ``method`` without keeping its object alive.

    HoloViews keeps the options of every element it has drawn in a process-wide option tree; a
    bound method there would keep each session's map and state in memory after its page closed.
    """
    ref = weakref.WeakMethod(method)

    def hook(plot, element) -> None:
        bound = ref()
        if bound is not None:
            bound(plot, element)

    return hook


class FrameSize:
    """The map's drawn size in screen pixels (its figure's inner width and height, as the browser
    last reported them), for the layers that space or bin by pixels (zone labels, HiRISE
    coverage). Those layers read it when the view changes instead of following a ``PlotSize``
    stream: each report of such a stream re-renders the whole map, and the browser sends two as
    a page is laid out (the second one squeezed the map to its minimum height)."""

    def __init__(self) -> None:
        self.figure = None

    def __call__(self) -> tuple[int | None, int | None]:
        try:
            return self.figure.inner_width or None, self.figure.inner_height or None
        except (AttributeError, UnsetValueError):  # no figure yet, or not laid out by a browser yet
            return None, None


class LayerSwitches(param.Parameterized):
    """One map's HoloViews layers switched on, one parameter each, so switching one re-renders
    that layer only (a stream on ``state.layers`` would re-run every layer's callback)."""

    zones = param.Boolean(default=True)
    hirise = param.Boolean(default=True)


class MapView:
    """The map of one index: basemap, zone grid, HiRISE, hits, outlines, drawn regions.

    The HoloViews overlay holds what changes with the view (the basemap and HiRISE coverage,
    regridded on pan and zoom, the zone labels), the zone grid and the drawing layers; it is
    never re-rendered by a search. What a search changes (hit markers and density, landmark
    boxes, the query, example and focus outlines, the typed bbox) are plain Bokeh glyphs added to
    the figure once, whose data sources are replaced on each change: a click sends a few
    kilobytes to the browser instead of re-rendering every layer. Switching a glyph layer off
    only hides its renderer; a HoloViews layer switched off renders empty.
    """

    def __init__(self, state: ExplorerState, entry: Entry, height: int = 520):
        self.state, self.entry, self.height = state, entry, height
        self.figure = None  # the Bokeh figure, captured by a plot hook, to pan it from Python
        self.frame_size = FrameSize()
        self.sources: dict = {}  # Bokeh data sources of the dynamic layers, by name
        self.renderers: dict = {}  # Bokeh renderers of the glyph layers, by name
        self.drawn_renderers: dict = {}  # 'boxes' / 'polygons' -> the drawing layer's renderer
        self.switches = LayerSwitches(**self._switch_values(state.layers))
        # lon/lat, or a polar cap's stereographic plane: every layer's coordinates go through it
        self.projection = MapProjection(state.view)
        self._density_grid = None
        self._layers_stale = False
        self.doc = pn.state.curdoc

    @staticmethod
    def _switch_values(layers: list[str]) -> dict[str, bool]:
        return {name: name in layers for name in LayerSwitches.param if name != "name"}

    def panel(self) -> pn.viewable.Viewable:

        release_views(self.state, "map")  # the map of the previous index stops following
        try:
            image = basemap_image(self.entry.index)
        except LookalikeError as exc:  # e.g. the source raster moved: still search, no basemap
            return pn.pane.Alert(f"No basemap: {exc}. Searching still works through shared links, "
                                 "but thumbnails cannot be shown.", alert_type="danger")
        state, switches = self.state, self.switches
        self.projection = projection = MapProjection.of(state.view, image.geographic)
        self._density_grid = self._density_cells()
        self._basemap_bounds = projection.extent if projection.polar else image.bounds
        zone_labels = sorted((z for z in state.index.tiles["zone"].unique().tolist() if z),
                             key=lambda z: Zone.parse(z).sort_key)
        boxes, polys = self._drawing()
        if projection.polar:
            x0, y0, x1, y1 = projection.extent
            xlim, ylim = (x0, x1), (y0, y1)
            zones = hv.DynamicMap(pn.bind(basemap.polar_zone_grid, zone_labels, state.param.zones,
                                          switches.param.zones, projection))
            layers = zones * self._zone_labels(zone_labels, xlim, ylim, projection)
            layers = layers * self._hirise() if self.entry.is_mars else layers
            overlay = (layers * boxes * polys).opts(
                # a square the height of the global map, not the page's width
                hv.opts.Overlay(responsive=True, aspect=1, min_height=300, max_height=POLAR_MAP_PX,
                                max_width=POLAR_MAP_PX, xlim=xlim, ylim=ylim,
                                projection=projection.crs, global_extent=False, xaxis=None, yaxis=None,
                                active_tools=["wheel_zoom"], hooks=[weak_hook(self._capture)],
                                toolbar="above", show_legend=False))
        else:
            xlim, ylim = basemap.view_extent(state.index.tiles, image.bounds)
            zones = hv.DynamicMap(pn.bind(basemap.zone_grid, zone_labels, state.param.zones,
                                          switches.param.zones))
            layers = zones * self._zone_labels(zone_labels, xlim, ylim, projection)
            if self.entry.is_mars:
                layers = layers * self._hirise()
            # the first view is set on the figure (``_capture``), not as xlim/ylim: HoloViews
            # renders a plot with limits and range streams a second time as the page is made
            overlay = (layers * boxes * polys).opts(
                hv.opts.Overlay(responsive=True, aspect=2, min_height=300,
                                xlabel="longitude (°E)", ylabel="latitude (°N)",
                                active_tools=["wheel_zoom"], hooks=[weak_hook(self._capture)],
                                toolbar="above", show_legend=False))
        self._initial_ranges = (xlim, ylim)
        watch_state(state, "map", self._pan_to_focus, "focus_tile")
        watch_state(state, "map", self._refresh_layers, ["hits", "query_tile", "positives", "negatives",
                                                 "focus_tile", "page", *FACET_INPUTS,
                                                 "landmark_classes"])
        watch_state(state, "map", self._switch_layers, "layers")
        return pn.pane.HoloViews(overlay, sizing_mode=MAP_SIZING, min_height=300,
                                 css_classes=["map"], linked_axes=False)

    # layers ------------------------------------------------------------------
    def _outline_data(self, tile_ids: list[str]) -> dict:
        index = self.state.index
        rows = []
        for tile_id in tile_ids:
            if tile_id:
                try:
                    rows.append(index.row_of(tile_id))
                except LookalikeError:
                    pass
        if not rows or "lon0" not in index.tiles:  # nothing to outline, or no footprints to draw
            return {"xs": [], "ys": []}
        rows = np.asarray(rows, np.int64)
        lons = np.column_stack([index.column(f"lon{i}") for i in range(4)])[rows]
        lats = np.column_stack([index.column(f"lat{i}") for i in range(4)])[rows]
        seen = self.projection.visible(index.column("lat")[rows])
        lons, lats, centres = lons[seen], lats[seen], index.column("lon")[rows][seen]
        if self.projection.polar:  # corners straight into the plane: a tile around the pole stays whole
            rings = [np.column_stack(self.projection.forward(np.r_[lo, lo[:1]], np.r_[la, la[:1]]))
                     for lo, la in zip(lons, lats)]
        else:
            rings = basemap.footprint_rings(lons, lats, centres)
        return {"xs": [r[:, 0] for r in rings], "ys": [r[:, 1] for r in rings]}

    def layer_data(self) -> dict[str, dict]:
        """Column data of each dynamic layer for the current state (hits, query, focus...)."""
        state = self.state
        hits = state.hits
        if hits is None or len(hits) == 0:
            points = {"x": np.zeros(0), "y": np.zeros(0), "color": []}
        else:
            rank = hits["rank"].to_numpy()
            on_page = (rank > state.page * state.page_size) & (rank <= (state.page + 1) * state.page_size)
            color = np.where(on_page, HIT_COLORS[2], np.where(rank <= max(10, len(hits) // 5),
                                                              HIT_COLORS[1], HIT_COLORS[0]))
            order = np.argsort(on_page, kind="stable")  # the current page drawn last, on top
            order = order[self.projection.visible(hits["lat"].to_numpy(float)[order])]
            x, y = self.projection.forward(hits["lon"].to_numpy(float)[order], hits["lat"].to_numpy(float)[order])
            points = {"x": x, "y": y, "color": color[order].tolist()}
        return {"hits": points, "density": self.density_data(), "landmarks": self.landmark_data(),
                "bbox": self.bbox_data(), "regions": self.region_data(),
                "query": self._outline_data([state.query_tile]),
                "positives": self._outline_data(state.positives),
                "negatives": self._outline_data(state.negatives),
                "focus": self._outline_data([state.focus_tile])}

    def _density_cells(self):
        """Bounds, columns and rows of the hit density grid: about a tile a cell over the
        index's tiles, or over a polar view's square."""
        if self.state.index is None:
            return None
        if self.projection.polar:
            return self.projection.extent, 160, 160
        return basemap.density_grid(self.state.index.tiles)

    def density_data(self) -> dict:
        """The hit density image over the index's tiles (transparent without hits)."""
        bounds, nx, ny = self._density_grid or ((0.0, 0.0, 1.0, 1.0), 1, 1)
        hits = self.state.hits
        lon = np.zeros(0) if hits is None else hits["lon"].to_numpy(float)
        lat = np.zeros(0) if hits is None else hits["lat"].to_numpy(float)
        seen = self.projection.visible(lat)
        x, y = self.projection.forward(lon[seen], lat[seen])
        return basemap.density_image(x, y, bounds, nx, ny, DENSITY_COLORS)

    def bbox_data(self) -> dict:
        """The bbox typed in the sidebar, drawn like a drawn box (across 180° it runs past the edge;
        in a polar view, a ring of its edges)."""
        if self.projection.polar:
            return self._rings_data([self.state.bbox] if self.state.bbox else [])
        if not self.state.bbox:
            return {"left": [], "right": [], "bottom": [], "top": []}
        west, south, east, north = (float(v) for v in self.state.bbox)
        return {"left": [west], "right": [east + 360.0 if east < west else east],
                "bottom": [south], "top": [north]}

    def region_data(self) -> dict:
        """In a polar view, the drawn regions (held in lon/lat by the state) as rings in the view;
        the global view shows them in its drawing layers instead."""
        if not self.projection.polar:
            return {"xs": [], "ys": []}
        return self._rings_data(list(self.state.boxes), list(self.state.polygons))

    def _rings_data(self, boxes: list, polygons: list | None = None) -> dict:
        rings = []
        for west, south, east, north in boxes:
            east = east + 360.0 if east < west else east
            t = np.linspace(0.0, 1.0, 33)
            lons = np.r_[west + (east - west) * t, np.full(33, east), east - (east - west) * t, np.full(33, west)]
            lats = np.r_[np.full(33, south), south + (north - south) * t, np.full(33, north), north - (north - south) * t]
            rings.append((lons, lats))
        rings += [(np.array([p[0] for p in poly], float), np.array([p[1] for p in poly], float))
                  for poly in polygons or [] if len(poly) >= 3]
        projected = [self.projection.forward(lons, lats) for lons, lats in rings
                     if self.projection.visible(lats).all()]
        return {"xs": [x for x, _ in projected], "ys": [y for _, y in projected]}

    def landmark_data(self) -> dict:
        """Boxes of the visible landmarks, coloured by class, for the hoverable box layer."""
        lm = self.state.visible_landmarks()
        lm = lm[self.projection.visible(lm["lat"].to_numpy(float))]
        if len(lm) > LANDMARK_MAX_DRAWN:
            lm = lm.nlargest(LANDMARK_MAX_DRAWN, "posterior")
        classes = self.state.landmark_class_names()
        colors = {c: LANDMARK_COLORS[i % len(LANDMARK_COLORS)] for i, c in enumerate(classes)}
        scene = lm["scene"].astype(str).tolist() if "scene" in lm else [""] * len(lm)
        left, right = lm["lon_min"].to_numpy(float), lm["lon_max"].to_numpy(float)
        right = np.where(right < left, right + 360.0, right)  # across 180°: run past the edge
        bottom, top = lm["lat_min"].to_numpy(float), lm["lat_max"].to_numpy(float)
        if self.projection.polar:  # boxes become quadrilaterals in the plane
            x, y = self.projection.forward(np.column_stack([left, right, right, left]),
                                           np.column_stack([bottom, bottom, top, top]))
            shape = {"xs": list(x), "ys": list(y)}
        else:
            shape = {"left": left, "right": right, "bottom": bottom, "top": top}
        return {**shape, "label": lm["label"].astype(str).tolist(), "posterior": lm["posterior"].to_numpy(float),
                "scene": scene, "color": [colors.get(c, "#ffffff") for c in lm["label"].astype(str)]}

    def _add_layers(self, fig) -> None:
        """Add the glyph layers to the figure, once, on top of the HoloViews layers."""
        from bokeh.models import ColumnDataSource, HoverTool

        data = self.layer_data()
        shown = set(self.state.layers)
        self.sources = {name: ColumnDataSource(data=columns) for name, columns in data.items()}
        self.renderers = {}
        self._add_basemap(fig)
        self.renderers["density"] = fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh",
                                                   source=self.sources["density"], name="density")
        landmark_style = dict(source=self.sources["landmarks"], fill_color="color", fill_alpha=0.15,
                              line_color="color", line_width=1.5, name="landmarks")
        self.renderers["landmarks"] = boxes = (
            fig.patches(xs="xs", ys="ys", **landmark_style) if self.projection.polar
            else fig.quad(left="left", right="right", bottom="bottom", top="top", **landmark_style))
        fig.add_tools(HoverTool(renderers=[boxes], tooltips=[("class", "@label"),
                                                             ("posterior", "@posterior{0.00}"),
                                                             ("scene", "@scene")]))
        if self.projection.polar:
            fig.patches(xs="xs", ys="ys", source=self.sources["bbox"], name="bbox", **REGION_STYLE)
        else:
            fig.quad(left="left", right="right", bottom="bottom", top="top", source=self.sources["bbox"],
                     name="bbox", **REGION_STYLE)
        fig.patches(xs="xs", ys="ys", source=self.sources["regions"], name="regions", **REGION_STYLE)
        self.renderers["hits"] = fig.scatter("x", "y", source=self.sources["hits"], size=5,
                                             fill_color="color", line_color="black", line_width=0.5,
                                             fill_alpha=0.9, name="hits")
        for name, (color, width, dash) in OUTLINE_STYLES.items():
            fig.multi_line("xs", "ys", source=self.sources[name], line_color=color,
                           line_width=width, line_dash=dash, name=name)
        for name, renderer in self.renderers.items():
            renderer.visible = name.partition(":")[0] in shown

    def basemap_url(self) -> str:
        """Where the browser fetches this view's basemap (relative: works behind a path prefix)."""
        return f"basemap/{quote(self.entry.name, safe='')}/{self.projection.view}.jpg"

    def _add_basemap(self, fig) -> None:
        """The basemap as two JPEG images the browser fetches from the server: the whole view,
        coarse, fetched once, and the visible part at screen resolution, fetched again after a
        pan or zoom that leaves it or changes its scale (a few hundred kB, never the raster)."""
        from bokeh.models import ColumnDataSource, CustomJS

        bounds = self._basemap_bounds
        x0, y0, x1, y1 = bounds
        height = OVERVIEW_PX if self.projection.polar else OVERVIEW_PX // 2
        overview = basemap_request(bounds, (x0, x1), (y0, y1), OVERVIEW_PX, height, pad=0.0)
        detail = basemap_request(bounds, *self._initial_ranges, *DETAIL_PX[self.projection.polar])
        for key, request in (("basemap", overview), ("basemap:detail", detail)):
            columns = {"url": [], "x": [], "y": [], "w": [], "h": []}
            if request:  # None: the view lies outside the image
                columns = {"url": [f"{self.basemap_url()}?{request['query']}"], **{k: [request[k]] for k in "xywh"}}
            name = key.replace(":", "_")
            source = ColumnDataSource(columns, name=f"{name}_source")
            self.renderers[key] = fig.image_url(url="url", x="x", y="y", w="w", h="h", anchor="bottom_left",
                                                source=source, level="image", name=name)
        follow = CustomJS(args=dict(fig=fig, source=self.renderers["basemap:detail"].data_source,
                                    base=self.basemap_url(), bounds=list(bounds)), code=BASEMAP_JS)
        for axis in (fig.x_range, fig.y_range):
            axis.js_on_change("start", follow)
            axis.js_on_change("end", follow)

    def _switch_layers(self, event) -> None:
        """Show or hide layers: a glyph layer's renderer is hidden, a HoloViews layer's switch
        re-renders that layer (empty when off)."""
        shown = set(event.new)
        self.switches.param.update(**{name: on for name, on in self._switch_values(event.new).items()
                                      if getattr(self.switches, name) != on})
        renderers = dict(self.renderers)

        def update() -> None:
            for name, renderer in renderers.items():
                renderer.visible = name.partition(":")[0] in shown

        if renderers:
            self._in_doc(update)

    def _refresh_layers(self, *_) -> None:
        """Send the dynamic layers' data for the state as it is when the session's loop gets to
        it: a click changes the query, then the hits, and both changes are sent once."""
        if not self.sources:
            return
        self._layers_stale = True

        def update() -> None:
            if not self._layers_stale:
                return
            self._layers_stale = False
            for name, columns in self.layer_data().items():
                self.sources[name].data = columns

        self._in_doc(update)

    def _add_tap(self, fig) -> None:
        """Map taps search, unless a drawing tool is active (the gate runs in the browser)."""
        from bokeh.models import ColumnDataSource, CustomJS

        sink = ColumnDataSource(data={"x": [], "y": [], "n": []}, name="map_taps")
        tap = CustomJS(args=dict(fig=fig, sink=sink, draw_tools=DRAW_TOOLS), code=TAP_JS)
        # Bokeh reports a second tap within 300 ms as a double tap only: both are searches
        fig.js_on_event("tap", tap)
        fig.js_on_event("doubletap", tap)

        def tapped(attr, old, new) -> None:
            if not new.get("x"):
                return
            lon, lat = self.projection.inverse(float(new["x"][0]), float(new["y"][0]))
            self._run(partial(self.state.click, float(lon), float(lat)))

        sink.on_change("data", tapped)
        self.tap_sink = sink

    def _run(self, fn) -> None:
        """Run a state action off the event loop (Panel's thread pool) when serving."""
        if self.doc is not None and pn.state._thread_pool is not None:
            from panel.io.state import set_curdoc

            with set_curdoc(self.doc):
                pn.state.execute(fn, schedule="thread")
        else:
            fn()

    def _drawing(self) -> tuple[hv.Rectangles, hv.Polygons]:
        if self.projection.polar:
            return self._polar_drawing()
        state = self.state
        style = REGION_STYLE
        boxes = hv.Rectangles([tuple(b) for b in state.boxes], kdims=["lon", "lat", "lon2", "lat2"],
                              group="Drawn").opts(**style)
        polys = hv.Polygons([{"lon": [p[0] for p in poly], "lat": [p[1] for p in poly]}
                             for poly in state.polygons], kdims=["lon", "lat"], group="Drawn").opts(**style)
        box_stream = hv.streams.BoxEdit(source=boxes, styles={"fill_color": ["#ffffff"]})
        poly_stream = hv.streams.PolyDraw(source=polys, drag=False, show_vertices=True)
        # what the browser shows, as last reported by the drawing tools
        self._drawn = {"boxes": [tuple(b) for b in state.boxes],
                       "polygons": [list(map(tuple, p)) for p in state.polygons]}

        def boxes_drawn(data) -> None:
            new = [tuple(float(v) for v in b) for b in zip(data.get("x0", []), data.get("y0", []),
                                                          data.get("x1", []), data.get("y1", []))]
            new = [(min(w, e), min(s, n), max(w, e), max(s, n)) for w, s, e, n in new]
            self._drawn["boxes"] = new
            if new != [tuple(b) for b in state.boxes]:
                state.boxes = new

        def polys_drawn(data) -> None:
            new = [[(float(x), float(y)) for x, y in zip(xs, ys)]
                   for xs, ys in zip(data.get("xs", []), data.get("ys", []))]
            new = [p for p in new if len(p) >= 3]  # a polygon being drawn is not a region yet
            self._drawn["polygons"] = new
            if new != [list(map(tuple, p)) for p in state.polygons]:
                state.polygons = new

        box_stream.add_subscriber(boxes_drawn)
        poly_stream.add_subscriber(polys_drawn)

        def changed(event) -> None:
            # regions changed in Python (Clear button, undo, a link): show the same in the browser
            current = ([tuple(b) for b in event.new] if event.name == "boxes"
                       else [list(map(tuple, p)) for p in event.new])
            if current != self._drawn[event.name] and self.figure is not None:
                self._drawn[event.name] = current
                self._in_doc(lambda: self._sync_drawn(event.name))

        watch_state(state, "map", changed, ["boxes", "polygons"])
        return boxes, polys

    def _polar_drawing(self) -> tuple[hv.Rectangles, hv.Polygons]:
        """Drawing layers of a polar view. A shape drawn there is turned into lon/lat polygons
        (closed along the antimeridian around the pole, cut in two across 180°), added to the
        state's regions, and taken off the drawing layer: the ``regions`` glyph layer shows
        the state's regions in the view."""
        state, projection = self.state, self.projection
        crs = projection.crs
        boxes = gv.Rectangles([], kdims=["x", "y", "x2", "y2"], crs=crs, group="Drawn").opts(**REGION_STYLE)
        polys = gv.Polygons([], kdims=["x", "y"], crs=crs, group="Drawn").opts(**REGION_STYLE)
        box_stream = hv.streams.BoxEdit(source=boxes, styles={"fill_color": ["#ffffff"]})
        poly_stream = hv.streams.PolyDraw(source=polys, drag=False, show_vertices=True)
        self._drawn = {"boxes": [], "polygons": []}

        def add(rings: list[tuple[list[float], list[float]]], which: str) -> None:
            parts = [part for xs, ys in rings for part in projection.ring_to_lonlat(xs, ys)]
            if parts:
                state.polygons = list(state.polygons) + [[tuple(pt) for pt in part] for part in parts]
                self._in_doc(lambda: self._clear_drawn(which))

        def boxes_drawn(data) -> None:
            add([([x0, x1, x1, x0], [y0, y0, y1, y1])
                 for x0, y0, x1, y1 in zip(data.get("x0", []), data.get("y0", []),
                                           data.get("x1", []), data.get("y1", []))
                 if x0 != x1 and y0 != y1], "boxes")

        def polys_drawn(data) -> None:
            add([(list(xs), list(ys)) for xs, ys in zip(data.get("xs", []), data.get("ys", []))
                 if len(xs) >= 3], "polygons")

        box_stream.add_subscriber(boxes_drawn)
        poly_stream.add_subscriber(polys_drawn)
        return boxes, polys

    def _clear_drawn(self, which: str) -> None:
        renderer = self.drawn_renderers.get(which)
        if renderer is not None:
            renderer.data_source.data = {key: [] for key in renderer.data_source.data}

    def _sync_drawn(self, which: str) -> None:
        """Replace the shapes of a drawing layer in the browser by the state's boxes or polygons."""
        renderer = self.drawn_renderers.get(which)
        if renderer is None:
            return
        glyph, old = renderer.glyph, renderer.data_source.data

        def field(spec):
            return spec.get("field") if isinstance(spec, dict) else getattr(spec, "field", spec)

        if which == "boxes":
            shapes = [tuple(b) for b in self.state.boxes]
            columns = {field(glyph.left): [b[0] for b in shapes], field(glyph.bottom): [b[1] for b in shapes],
                       field(glyph.right): [b[2] for b in shapes], field(glyph.top): [b[3] for b in shapes]}
        else:
            shapes = self.state.polygons
            columns = {field(glyph.xs): [np.array([p[0] for p in poly]) for poly in shapes],
                       field(glyph.ys): [np.array([p[1] for p in poly]) for poly in shapes]}
        for key, values in old.items():  # other columns (styles) keep their first value
            if key not in columns:
                fill = list(values[:1]) * len(shapes) if len(values) else ["#ffffff"] * len(shapes)
                columns[key] = fill
        renderer.data_source.data = columns

    def _find_drawn_renderers(self, plot) -> dict:
        out = {}
        for sub in getattr(plot, "subplots", {}).values():
            frame = getattr(sub, "current_frame", None)
            if frame is not None and getattr(frame, "group", None) == "Drawn":
                renderer = sub.handles.get("glyph_renderer")
                if renderer is not None:
                    which = "boxes" if isinstance(frame, hv.Rectangles) else "polygons"
                    renderer.name = f"drawn_{which}"  # for scripts and tests in the browser
                    out[which] = renderer
        return out

    def _zone_labels(self, zone_labels: list[str], xlim, ylim, projection: MapProjection) -> hv.DynamicMap:
        """Zone labels that follow the view (and the zone switch)."""
        frame_size, initial = self.frame_size, (xlim, ylim)

        def zone_labels_in_view(show: bool, x_range=None, y_range=None) -> hv.Labels:
            return basemap.zone_label_layer(zone_labels, show, x_range, y_range, *frame_size(),
                                            initial=initial, projection=projection)

        return hv.DynamicMap(zone_labels_in_view,
                             streams=[hv.streams.Params(self.switches, ["zones"], rename={"zones": "show"}),
                                      hv.streams.RangeXY()])

    def _hirise(self) -> hv.Overlay:
        try:
            hirise_footprints("", "", True)
        except LookalikeError as exc:
            self.state.error = str(exc)
            return hv.Overlay([hv.Rectangles([])])

        source = hv.DynamicMap(pn.bind(hirise_footprints, self.state.param.time_start,
                                       self.state.param.time_end, self.switches.param.hirise,
                                       self.projection if self.projection.polar else None))

        frame_size = self.frame_size

        def density(footprints: hv.Rectangles, x_range=None, y_range=None) -> hv.RGB:
            # rasterized at a third of the screen's resolution: a pan or zoom sends a small image,
            # and nothing at all (one pixel) while the layer is off
            if len(footprints.data) == 0 or x_range is None or y_range is None:
                return hv.RGB(np.zeros((1, 1, 4), np.uint8), bounds=(0, 0, 1, 1), vdims=list("RGBA"))
            width, height = frame_size()
            cells = dict(width=max(int((width or 900) / HIRISE_CELL_PX), 16),
                         height=max(int((height or 450) / HIRISE_CELL_PX), 8))
            counts = rasterize(footprints, aggregator="count", x_range=x_range, y_range=y_range,
                               dynamic=False, **cells)
            return shade(counts, cmap=HIRISE_COLORS, min_alpha=60, alpha=170, dynamic=False)

        coverage = source.apply(density, streams=[hv.streams.RangeXY()])

        def hoverable(footprints: hv.Rectangles, x_range=None, y_range=None) -> hv.Rectangles:
            # real shapes, with hover, once few enough are in view; the density shows the rest
            data = footprints.data
            if x_range is None or y_range is None or len(data) == 0:
                return footprints.iloc[:0]
            x0, y0, x1, y1 = (data[d.name] for d in footprints.kdims)  # lon/lat, or a polar plane
            inside = (x1 >= x_range[0]) & (x0 <= x_range[1]) & (y1 >= y_range[0]) & (y0 <= y_range[1])
            if inside.sum() > HIRISE_HOVER_MAX:
                return footprints.iloc[:0]
            return footprints.clone(data[inside])

        detail = source.apply(hoverable, streams=[hv.streams.RangeXY()]).opts(
            fill_alpha=0.15, fill_color=HIRISE_FOOTPRINT_COLOR, line_color=HIRISE_FOOTPRINT_COLOR,
            line_width=1,
            tools=["hover"], hover_tooltips=[("HiRISE", "@observation_id"), ("date", "@date")])
        return coverage * detail

    # panning -----------------------------------------------------------------
    def _capture(self, plot, element) -> None:
        # HoloViews sets a responsive plot with an aspect to 'scale_both' on every update, which
        # the browser lays out at the map's minimum height (a 893 x 216 px frame): the map keeps
        # the pane's sizing instead
        plot.state.sizing_mode = MAP_SIZING
        # hooks run on every update of the plot: add the layers and the tap gate only once
        if self.figure is plot.state:
            return
        self.figure = self.frame_size.figure = plot.state
        # a canvas, not HoloViews' default WebGL: the map draws one picture and a few hundred
        # shapes, and on a machine without a GPU the browser's software WebGL spends about 0.15 s
        # copying every frame to the page (a fifth of a new page's drawing)
        self.figure.output_backend = "canvas"
        # HoloViews marks every range stream of a new plot to be triggered once the page is made
        # (its test, ``xlim or ylim``, holds for the default (None, None) too), and the trigger
        # renders the whole map a second time: a quarter of the server's cost of a new page. The
        # layers that follow the view (zone labels, coverage density) start from the first view
        # and follow the browser's ranges from its first report on.
        plot.traverse(lambda p: p._trigger.clear() if isinstance(getattr(p, "_trigger", None), list)
                      else None)
        if not self.projection.polar:
            (x0, x1), (y0, y1) = self._initial_ranges
            self.figure.x_range.update(start=x0, end=x1, reset_start=x0, reset_end=x1)
            self.figure.y_range.update(start=y0, end=y1, reset_start=y0, reset_end=y1)
        self.drawn_renderers = self._find_drawn_renderers(plot)
        self._add_layers(self.figure)
        self._add_tap(self.figure)

    def _in_doc(self, fn) -> None:
        # Bokeh models may only change under the document lock: schedule on the session's loop
        if self.doc is not None:
            self.doc.add_next_tick_callback(fn)
        else:
            fn()

    def _pan_to_focus(self, event) -> None:
        if not event.new or self.figure is None:
            return
        try:
            tile = self.state.tile(event.new)
            w, s, e, n = footprint_bounds(tile)
        except LookalikeError:
            return
        if self.projection.polar:  # a few tiles around it, in a square view
            xs, ys = self.projection.forward([tile[f"lon{i}"] for i in range(4)], [tile[f"lat{i}"] for i in range(4)])
            cx, cy = float(np.mean(xs)), float(np.mean(ys))
            half = max(float(np.ptp(xs)), float(np.ptp(ys)), 1.0) * 2.5
            ratio = 1.0
        else:
            cx, cy = (w + e) / 2, (s + n) / 2
            half = max(e - w, (n - s) * 2, 1.0) * 2.5  # a few tiles around it, at the map's 2:1
            ratio = 0.5
        fig = self.figure

        def pan() -> None:
            fig.x_range.update(start=cx - half, end=cx + half)
            fig.y_range.update(start=cy - half * ratio, end=cy + half * ratio)

        self._in_doc(pan)
