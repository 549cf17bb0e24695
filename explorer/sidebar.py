"""The sidebar: body and projection, search settings, filters, landmark facet, map layer switches.

Every widget is bound to a parameter of the session's ``ExplorerState``: widgets made with
``from_param`` follow it both ways; the few that check or convert what is typed (k, the bbox)
set the state themselves and follow it through ``rebuilt_views.watch_state``, released when the
sidebar is rebuilt for another index.
"""

from __future__ import annotations

import io
import json

import panel as pn

from lookalike.errors import LookalikeError
from lookalike.explorer.collection_controls import collection_controls, enter_body
from lookalike.explorer.legend import legend_entries, legend_html
from lookalike.explorer.page_text import text_block
from lookalike.explorer.projection import PROJECTIONS
from lookalike.explorer.rebuilt_views import release_views, watch_state
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.state import FACET_INPUTS, MAP_LAYERS, ExplorerState, available_layers
from lookalike.indexer.bbox import check_bbox, format_bbox
from lookalike.indexer.bbox import parse_bbox as bbox_from_text
from lookalike.indexer.tiling import Zone

DRAWING_HINTS = (
    "Draw boxes with the box tool (shift-drag), polygons with the polygon tool (press and "
    "hold to place the first corner, click for each next one, press and hold or Esc to "
    "finish); they restrict the search. While a drawing tool is active, taps on the map "
    "draw; pick the pan tool to search by tapping again."
)


def controls(state: ExplorerState, served: ServedIndexes) -> pn.Column:
    """Sidebar widgets, each bound to a state parameter."""
    release_views(state, "sidebar")
    body = pn.widgets.Select(name="Body", options=served.labels(), value=state.body)
    body.param.watch(lambda e: enter_body(state, served, e.new) if e.new != state.body else None, "value")
    watch_state(state, "sidebar", lambda e: setattr(body, "value", e.new), "body")
    projection = pn.widgets.Select.from_param(
        state.param.projection, name="Map view", options={label: key for key, label in PROJECTIONS.items()}
    )
    zones = pn.widgets.MultiChoice.from_param(
        state.param.zones, name="UTM/UPS zones", options=zone_options(state), placeholder="all zones"
    )
    clear = pn.widgets.Button(name="Clear regions", button_type="light")
    clear.on_click(lambda _: state.clear_regions())
    return pn.Column(
        body,
        projection,
        *collection_controls(state),
        k_input(state),
        zones,
        *date_inputs(state),
        bbox_input(state),
        text_block(DRAWING_HINTS, size=12),
        clear,
        landmark_controls(state),
        pn.layout.Divider(),
        *search_actions(state),
        pn.layout.Divider(),
        layer_controls(
            state,
            (state.body or (served[state.index_name].body if state.index_name in served else "")) == "mars",
        ),
        sizing_mode="stretch_width",
    )


def zone_options(state: ExplorerState) -> list[str]:
    """The zones of the index, in zone order."""
    if state.index is None:
        return []
    return sorted(state.index.zones(), key=lambda z: Zone.parse(z).sort_key)


def k_input(state: ExplorerState) -> pn.widgets.IntInput:
    """The number of hits; a value out of bounds is refused with a message."""
    k = pn.widgets.IntInput(name="Number of hits (k)", value=state.k, step=100)

    def typed(event) -> None:
        low, high = state.param.k.bounds
        if event.new is None or not low <= event.new <= high:
            # say so and put the box back: a bad value left in it would look as if it applied
            state.error = f"k must be a whole number from {low} to {high}; still showing {state.k} hits"
            k.value = state.k
        else:
            state.k = event.new

    k.param.watch(typed, "value")
    watch_state(state, "sidebar", lambda e: setattr(k, "value", e.new), "k")
    return k


def date_inputs(state: ExplorerState) -> list[pn.viewable.Viewable]:
    """From / to dates, and the span of the index's dates below them."""
    start = pn.widgets.TextInput.from_param(
        state.param.time_start, name="From date", placeholder="YYYY-MM-DD", width=135
    )
    end = pn.widgets.TextInput.from_param(
        state.param.time_end, name="To date", placeholder="YYYY-MM-DD", width=135
    )
    dated = state.index.time_span() if state.index is not None else None
    span = f"Tiles dated {dated[0]:%Y-%m-%d} to {dated[1]:%Y-%m-%d}" if dated else "Tiles carry no dates"
    return [pn.Row(start, end), text_block(span, size=11)]


def parse_bbox(text: str) -> tuple[float, float, float, float] | None:
    """A typed box in degrees, or None for blank text (``indexer.bbox``'s rules)."""
    box = bbox_from_text(text)
    return None if box is None else check_bbox(box)


def bbox_input(state: ExplorerState) -> pn.widgets.TextInput:
    """The typed bounding box; a malformed one is a message."""
    bbox = pn.widgets.TextInput(
        name="Bounding box (west,south,east,north)",
        placeholder="e.g. 0,10,20,40",
        value=format_bbox(state.bbox),
    )

    def typed(event) -> None:
        try:
            state.bbox = parse_bbox(event.new)
        except LookalikeError as exc:
            state.error = str(exc)

    bbox.param.watch(typed, "value")
    # the box also changes from elsewhere (Clear, undo, a shared link): mirror it in the text
    watch_state(state, "sidebar", lambda e: setattr(bbox, "value", format_bbox(e.new)), "bbox")
    return bbox


def search_actions(state: ExplorerState) -> list[pn.viewable.Viewable]:
    """Search with the marked examples, undo, and the GeoJSON export of the hits."""
    refine = pn.widgets.Button(
        name="Search with examples",
        button_type="primary",
        disabled=pn.bind(lambda p: not p, state.param.positives),
    )
    refine.on_click(lambda _: state.search_examples())
    undo = pn.widgets.Button(name="Undo", button_type="light")
    undo.on_click(lambda _: state.undo())
    export = pn.widgets.FileDownload(
        callback=lambda: io.StringIO(json.dumps(state.geojson(), default=str)),
        filename="lookalike-hits.geojson",
        label="Export hits (GeoJSON)",
        button_type="success",
        disabled=pn.bind(lambda h: h is None or len(h) == 0, state.param.hits),
    )
    return [refine, undo, pn.layout.Divider(), export]


def facet_options(counts: dict[str, int]) -> dict[str, str]:
    """CheckBoxGroup options: 'crater (12)' -> 'crater'."""
    return {f"{name} ({n})": name for name, n in counts.items()}


def landmark_controls(state: ExplorerState) -> pn.viewable.Viewable:
    """Image Class facet with counts, confidence and 'at least N' sliders, and a class text box."""
    if state.landmarks is None:
        return text_block("This index has no landmark catalogue.", size=11)
    facet = pn.widgets.CheckBoxGroup(
        name="Image class",
        options=facet_options(state.facet_counts()),
        value=list(state.landmark_classes),
        inline=False,
        css_classes=["class-facet"],
    )
    facet.param.watch(lambda e: setattr(state, "landmark_classes", list(e.new)), "value")
    watch_state(state, "sidebar", lambda e: setattr(facet, "value", list(e.new)), "landmark_classes")

    def recount(*_) -> None:
        facet.options = facet_options(state.facet_counts())

    watch_state(state, "sidebar", recount, FACET_INPUTS)
    confidence = pn.widgets.FloatSlider.from_param(
        state.param.min_confidence, name="Landmark confidence ≥", step=0.05
    )
    at_least = pn.widgets.IntSlider.from_param(
        state.param.min_landmarks, start=1, end=20, name="At least N landmarks of a chosen class"
    )
    text = pn.widgets.TextInput(name="Class (type, e.g. crater)", placeholder="crater, dunes, streak")
    text.param.watch(lambda e: state.apply_class_text(e.new), "value")
    return pn.Column(
        pn.layout.Divider(),
        text_block("<b>Image class</b> (scenes with landmarks)"),
        facet,
        text,
        confidence,
        at_least,
        sizing_mode="stretch_width",
    )


def layer_controls(state: ExplorerState, is_mars: bool) -> pn.Column:
    """The "Layers" switches of the map and its legend, both following ``state.layers``."""
    available = available_layers(is_mars, state.landmarks is not None)
    switches = pn.widgets.CheckBoxGroup(
        name="Layers",
        options={MAP_LAYERS[n]: n for n in available},
        value=[n for n in state.layers if n in available],
        inline=False,
        css_classes=["map-layers"],
    )

    def switched(event) -> None:
        # layers this map lacks (HiRISE on Earth) keep their setting for the next map
        state.layers = [n for n in MAP_LAYERS if n in event.new or (n in state.layers and n not in available)]

    switches.param.watch(switched, "value")
    watch_state(
        state, "sidebar", lambda e: setattr(switches, "value", [n for n in e.new if n in available]), "layers"
    )
    classes = state.landmark_class_names() if "landmarks" in available else []
    legend = text_block(
        pn.bind(lambda shown: legend_html(legend_entries(available, shown, classes)), state.param.layers),
        css_classes=["map-legend"],
        sizing_mode="stretch_width",
        margin=(0, 10),
    )
    return pn.Column(text_block("<b>Map layers</b>"), switches, legend, sizing_mode="stretch_width")
