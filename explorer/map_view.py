"""The map of one index in one projection: basemap, zone grid, HiRISE, hits, outlines, regions.

One code path for the whole planet and the polar caps: what differs is asked of the
``MapProjection`` (``projection.py``). The drawing layers are ``drawing.DrawnRegions``, the
glyph layers' data ``layer_data.LayerData``, the basemap images ``basemap_requests``.
"""

from __future__ import annotations

import weakref
from functools import partial
from pathlib import Path

import holoviews as hv
import pandas as pd
import panel as pn
import param

from lookalike.errors import LookalikeError
from lookalike.explorer import basemap, panel_internals
from lookalike.explorer.basemap_requests import BasemapImages
from lookalike.explorer.collection_choice import scene_pairs
from lookalike.explorer.drawing import DrawnRegions
from lookalike.explorer.hirise_layer import hirise_layer
from lookalike.explorer.layer_data import LayerData
from lookalike.explorer.map_style import HIT_OUTLINE_COLOR, OUTLINE_STYLES, REGION_STYLE
from lookalike.explorer.projection import MapProjection
from lookalike.explorer.rebuilt_views import release_views, watch_state
from lookalike.explorer.scene_images import body_basemap, scenes_in_view, view_jpeg
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.state import FACET_INPUTS, ExplorerState
from lookalike.explorer.true_shape import js_constants, x_scale
from lookalike.indexer.tiling import Zone

STATIC = Path(__file__).parent / "static"
MAP_SIZING = "stretch_width"  # the map fills the page's width; its aspect sets its height
# the tools that draw regions: a tap while one of them is active draws, it does not search
DRAW_TOOLS = ["BoxEditTool", "PolyDrawTool", "PolyEditTool", "PointDrawTool", "FreehandDrawTool"]
# state parameters the glyph layers show
LAYER_INPUTS = [
    "hits",
    "query_tile",
    "positives",
    "negatives",
    "focus_tile",
    "page",
    *FACET_INPUTS,
    "landmark_classes",
    "collections_on",
    "scene_dates",
]
# state parameters the scenes drawn over the basemap follow
SCENE_INPUTS = ["collections_on", "scene_dates", "time_start", "time_end"]


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
        return panel_internals.figure_inner_size(self.figure)


class LayerSwitches(param.Parameterized):
    """One map's HoloViews layers switched on, one parameter each, so switching one re-renders
    that layer only (a stream on ``state.layers`` would re-run every layer's callback)."""

    zones = param.Boolean(default=True)
    hirise = param.Boolean(default=True)

    @classmethod
    def values(cls, layers: list[str]) -> dict[str, bool]:
        return {name: name in layers for name in cls.param if name != "name"}


class MapView:
    """The map of one index: basemap, zone grid, HiRISE, hits, outlines, drawn regions.

    The HoloViews overlay holds what changes with the view (the basemap and HiRISE coverage,
    regridded on pan and zoom, the zone labels), the zone grid and the drawing layers; it is
    never re-rendered by a search. What a search changes (hit markers and density, landmark
    boxes, the query, example and focus outlines, the typed bbox) are plain Bokeh glyphs added to
    the figure once, whose data sources are replaced on each change: a click sends a few
    kilobytes to the browser instead of re-rendering every layer. Switching a glyph layer off
    only hides its renderer; a HoloViews layer switched off renders empty.

    With ``inline_basemap`` the basemap images travel inside the page (a notebook, which has no
    basemap route) rather than from the server's route.
    """

    def __init__(self, state: ExplorerState, served: ServedIndexes, body: str, inline_basemap: bool = False):
        self.state, self.served, self.body, self.inline_basemap = state, served, body, inline_basemap
        self.base = served.body(body).base  # the mosaic collection, drawn as the basemap
        self.figure = None  # the Bokeh figure, captured by a plot hook, to pan it from Python
        self.frame_size = FrameSize()
        self.sources: dict = {}  # Bokeh data sources of the glyph layers, by name
        self.renderers: dict = {}  # Bokeh renderers of the switchable glyph layers, by name
        self.switches = LayerSwitches(**LayerSwitches.values(state.layers))
        # lon/lat, or a polar cap's stereographic plane: every layer's coordinates go through it
        self.projection = MapProjection(state.projection)
        self.data: LayerData | None = None
        self.drawn: DrawnRegions | None = None
        self.basemap: BasemapImages | None = None
        self.pane: pn.viewable.Viewable | None = None
        self._layers_stale = False
        self.doc = pn.state.curdoc

    def panel(self) -> pn.viewable.Viewable:
        """The map's pane (an alert instead when the body's basemap cannot be read)."""
        release_views(self.state, "map")  # the map of the previous body stops following
        try:
            image = body_basemap(self.served, self.body)
        except LookalikeError as exc:  # e.g. the source raster moved: still search, no basemap
            return pn.pane.Alert(
                f"No basemap: {exc}. Searching still works through shared links, "
                "but thumbnails cannot be shown.",
                alert_type="danger",
            )
        state, switches = self.state, self.switches
        self.projection = projection = MapProjection.of(state.projection, image.geographic)
        self.data = LayerData(state, projection, self.base)
        render = partial(self._render_inline, image) if self.inline_basemap else None
        self.basemap = BasemapImages(
            self.body,
            projection,
            projection.basemap_bounds(image.bounds),
            self._in_doc,
            render,
            partial(scene_pairs, state, self.base),
        )
        collections = self.served.collections(self.body)
        places = pd.concat(  # a sample of a large collection: enough for the first window
            [e.index.sample()[["lon", "lat"]] for e in collections.values()], ignore_index=True
        ).dropna(subset=["lon", "lat"])
        self._first_window = xlim, ylim = self._true_shape(*projection.first_window(places, image.bounds))
        zone_labels = sorted(
            {z for e in collections.values() for z in e.index.zones() if z != "nan"},
            key=lambda z: Zone.parse(z).sort_key,
        )
        self.drawn = DrawnRegions(state, projection, self._in_doc)
        zones = hv.DynamicMap(
            pn.bind(basemap.zone_grid_layer, zone_labels, state.param.zones, switches.param.zones, projection)
        )
        layers = zones * self._zone_labels(zone_labels, xlim, ylim)
        if self.body == "mars":
            layers = layers * hirise_layer(state, switches.param.hirise, projection, self.frame_size)
        overlay = (layers * self.drawn.boxes * self.drawn.polygons).opts(
            hv.opts.Overlay(
                responsive=True,
                min_height=300,
                active_tools=["wheel_zoom"],
                hooks=[weak_hook(self._capture)],
                toolbar="above",
                show_legend=False,
                **projection.overlay_options(xlim, ylim),
            )
        )
        watch_state(state, "map", self._pan_to_focus, "focus_tile")
        watch_state(state, "map", self._refresh_layers, LAYER_INPUTS)
        watch_state(state, "map", self._switch_layers, "layers")
        watch_state(state, "map", lambda *_: self.basemap.refresh(), SCENE_INPUTS)
        self.pane = pn.pane.HoloViews(
            overlay, sizing_mode=MAP_SIZING, min_height=300, css_classes=["map"], linked_axes=False
        )
        return self.pane

    def _render_inline(self, image, request: dict, pairs: list) -> bytes:
        """A detail picture rendered here (a page without the basemap route)."""
        x0, y0, x1, y1 = request["x"], request["y"], request["x"] + request["w"], request["y"] + request["h"]
        scenes = scenes_in_view(self.served, self.body, pairs, x0, y0, x1, y1, request["px"])
        return view_jpeg(image, self.projection, scenes, x0, y0, x1, y1, request["px"], request["py"])

    def _true_shape(self, xlim, ylim) -> tuple[tuple[float, float], tuple[float, float]]:
        """A first window of the planet's map widened to its true shape (``true_shape``)."""
        if not self.projection.lonlat:
            return xlim, ylim
        y_span, cx = ylim[1] - ylim[0], (xlim[0] + xlim[1]) / 2
        half = (xlim[1] - xlim[0]) / 2 * x_scale(y_span, (ylim[0] + ylim[1]) / 2)
        return (cx - half, cx + half), ylim

    def _zone_labels(self, zone_labels: list[str], xlim, ylim) -> hv.DynamicMap:
        """Zone labels that follow the view (and the zone switch)."""
        frame_size, initial, projection = self.frame_size, (xlim, ylim), self.projection

        def zone_labels_in_view(show: bool, x_range=None, y_range=None) -> hv.Labels:
            return basemap.zone_label_layer(
                zone_labels, show, x_range, y_range, *frame_size(), initial=initial, projection=projection
            )

        return hv.DynamicMap(
            zone_labels_in_view,
            streams=[
                hv.streams.Params(self.switches, ["zones"], rename={"zones": "show"}),
                hv.streams.RangeXY(),
            ],
        )

    # the figure ---------------------------------------------------------------------
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
        # the layers that follow the view (zone labels, coverage density) start from the first
        # window and follow the browser's ranges from its first report on
        panel_internals.clear_range_triggers(plot)
        (x0, x1), (y0, y1) = self._first_window
        self.figure.x_range.update(start=x0, end=x1, reset_start=x0, reset_end=x1)
        self.figure.y_range.update(start=y0, end=y1, reset_start=y0, reset_end=y1)
        self.drawn.find_renderers(plot)
        self._add_layers(self.figure)
        self._add_tap(self.figure)

    def _add_layers(self, fig) -> None:
        """Add the glyph layers to the figure, once, on top of the HoloViews layers."""
        from bokeh.models import ColumnDataSource, HoverTool

        shown = set(self.state.layers)
        self.sources = {name: ColumnDataSource(data=columns) for name, columns in self.data.all().items()}
        self.basemap.add_to(fig, self._first_window, js_constants() if self.projection.lonlat else None)
        self.renderers = dict(self.basemap.renderers)
        self._add_collections(fig)
        self.renderers["density"] = fig.image_rgba(
            image="image", x="x", y="y", dw="dw", dh="dh", source=self.sources["density"], name="density"
        )
        glyph, fields = self.projection.box_glyph  # quads, or quadrilaterals in a polar plane
        self.renderers["landmarks"] = boxes = getattr(fig, glyph)(
            **fields,
            source=self.sources["landmarks"],
            fill_color="color",
            fill_alpha=0.15,
            line_color="color",
            line_width=1.5,
            name="landmarks",
        )
        fig.add_tools(
            HoverTool(
                renderers=[boxes],
                tooltips=[("class", "@label"), ("posterior", "@posterior{0.00}"), ("scene", "@scene")],
            )
        )
        getattr(fig, glyph)(**fields, source=self.sources["bbox"], name="bbox", **REGION_STYLE)
        fig.patches(xs="xs", ys="ys", source=self.sources["regions"], name="regions", **REGION_STYLE)
        self.renderers["hits:outlines"] = fig.multi_line(
            "xs",
            "ys",
            source=self.sources["hit_outlines"],
            line_color=HIT_OUTLINE_COLOR,
            line_width=1.5,
            name="hit_outlines",
        )
        self.renderers["hits"] = fig.scatter(
            "x",
            "y",
            source=self.sources["hits"],
            size=5,
            fill_color="color",
            line_color="black",
            line_width=0.5,
            fill_alpha=0.9,
            name="hits",
        )
        for name, (color, width, dash) in OUTLINE_STYLES.items():
            fig.multi_line(
                "xs",
                "ys",
                source=self.sources[name],
                line_color=color,
                line_width=width,
                line_dash=dash,
                name=name,
            )
        for name, renderer in self.renderers.items():
            renderer.visible = name.partition(":")[0] in shown

    def _add_collections(self, fig) -> None:
        """The scenes of the body's collections: outlines, and a marker that stays visible at the
        planet's zoom, with the collection, scene and date on hover."""
        from bokeh.models import HoverTool

        glyph, fields = self.projection.box_glyph
        outlines = getattr(fig, glyph)(
            **fields,
            source=self.sources["collections"],
            fill_alpha=0.0,
            line_color="color",
            line_width=2,
            name="collections",
        )
        markers = fig.scatter(
            "x",
            "y",
            source=self.sources["collection_markers"],
            size=9,
            marker="square",
            fill_alpha=0.0,
            line_color="color",
            line_width=2,
            name="collection_markers",
        )
        fig.add_tools(
            HoverTool(
                renderers=[outlines, markers],
                tooltips=[("collection", "@collection"), ("scene", "@scene"), ("date", "@date")],
            )
        )

    def _add_tap(self, fig) -> None:
        """Map taps search, unless a drawing tool is active (the gate runs in the browser)."""
        from bokeh.models import ColumnDataSource, CustomJS

        sink = ColumnDataSource(data={"x": [], "y": [], "n": []}, name="map_taps")
        tap = CustomJS(
            args=dict(fig=fig, sink=sink, draw_tools=DRAW_TOOLS),
            code=(STATIC / "map_tap.js").read_text(encoding="utf-8"),
        )
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

    # following the state ------------------------------------------------------------
    def _switch_layers(self, event) -> None:
        """Show or hide layers: a glyph layer's renderer is hidden, a HoloViews layer's switch
        re-renders that layer (empty when off)."""
        shown = set(event.new)
        self.switches.param.update(
            **{
                name: on
                for name, on in LayerSwitches.values(event.new).items()
                if getattr(self.switches, name) != on
            }
        )
        renderers = dict(self.renderers)

        def update() -> None:
            for name, renderer in renderers.items():
                renderer.visible = name.partition(":")[0] in shown

        if renderers:
            self._in_doc(update)

    def _refresh_layers(self, *_) -> None:
        """Send the glyph layers' data for the state as it is when the session's loop gets to
        it: a click changes the query, then the hits, and both changes are sent once."""
        if not self.sources:
            return
        self._layers_stale = True

        def update() -> None:
            if not self._layers_stale:
                return
            self._layers_stale = False
            for name, columns in self.data.all().items():
                self.sources[name].data = columns

        self._in_doc(update)

    def _pan_to_focus(self, event) -> None:
        if not event.new or self.figure is None:
            return
        try:
            tile = self.state.tile(event.new)
        except LookalikeError:
            return
        lons = [float(tile[f"lon{i}"]) for i in range(4)]
        lons = [(lon - tile["lon"] + 180.0) % 360.0 - 180.0 + tile["lon"] for lon in lons]  # unwrapped
        cx, cy, half_x, half_y = self.projection.focus_window(lons, [tile[f"lat{i}"] for i in range(4)])
        fig = self.figure

        def pan() -> None:
            fig.x_range.update(start=cx - half_x, end=cx + half_x)
            fig.y_range.update(start=cy - half_y, end=cy + half_y)

        self._in_doc(pan)

    # where changes run ----------------------------------------------------------------
    def _in_doc(self, fn) -> None:
        """Change Bokeh models: under the document lock of a served session (on its loop), or
        now, sent to the notebooks that show the map."""
        if self.doc is not None and self.doc.session_context is not None:
            self.doc.add_next_tick_callback(fn)
        elif self.pane is not None:
            panel_internals.send_model_changes(self.pane, fn)
        else:
            fn()

    def _run(self, fn) -> None:
        """Run a state action off the event loop (Panel's thread pool) when serving."""
        if not panel_internals.run_on_thread_pool(self.doc, fn):
            fn()
