"""The map's drawing layers: boxes and polygons drawn with Bokeh's edit tools, which restrict the
search, and their link with the state's regions (``state.boxes``, ``state.polygons``, in lon/lat).

One code path for every projection; ``MapProjection.lonlat`` tells the two ways apart:

- on the whole planet's map (lon/lat coordinates) the drawing layers hold the state's regions
  themselves: a shape drawn, moved or deleted changes the state, and a change made in Python
  (Clear, Undo, a link) is drawn back into the layers;
- on a polar map a drawn shape is turned into lon/lat polygons (closed along the antimeridian
  around the pole, cut in two across 180°), added to the state's regions and taken off the
  drawing layer: the map's ``regions`` glyph layer shows the state's regions there.
"""

from __future__ import annotations

from collections.abc import Callable

import geoviews as gv
import holoviews as hv
import numpy as np

from lookalike.explorer import panel_internals
from lookalike.explorer.map_style import REGION_STYLE
from lookalike.explorer.projection import MapProjection
from lookalike.explorer.rebuilt_views import watch_state
from lookalike.explorer.state import ExplorerState

GROUP = "Drawn"  # the HoloViews group of the drawing layers, to find their renderers


def _boxes_of(state: ExplorerState) -> list[tuple]:
    return [tuple(b) for b in state.boxes]


def _polygons_of(state: ExplorerState) -> list[list[tuple]]:
    return [list(map(tuple, p)) for p in state.polygons]


class DrawnRegions:
    """The box and polygon drawing layers of one map (``boxes``, ``polygons``: HoloViews
    elements for the map's overlay). ``in_doc`` runs a change of Bokeh models where the
    document allows it (``MapView._in_doc``)."""

    def __init__(self, state: ExplorerState, projection: MapProjection, in_doc: Callable) -> None:
        self.state, self.projection, self.in_doc = state, projection, in_doc
        self.renderers: dict = {}  # 'boxes' / 'polygons' -> the drawing layer's Bokeh renderer
        self.rendered = False  # whether the map's plot exists (``find_renderers``)
        mirrored = projection.lonlat
        # what the browser shows, as last reported by the drawing tools
        self._drawn = {
            "boxes": _boxes_of(state) if mirrored else [],
            "polygons": _polygons_of(state) if mirrored else [],
        }
        if mirrored:
            self.boxes = hv.Rectangles(
                self._drawn["boxes"], kdims=["lon", "lat", "lon2", "lat2"], group=GROUP
            )
            self.polygons = hv.Polygons(
                [
                    {"lon": [p[0] for p in poly], "lat": [p[1] for p in poly]}
                    for poly in self._drawn["polygons"]
                ],
                kdims=["lon", "lat"],
                group=GROUP,
            )
        else:  # GeoViews elements in the map's projection, so the tools draw in its plane
            self.boxes = gv.Rectangles([], kdims=["x", "y", "x2", "y2"], crs=projection.crs, group=GROUP)
            self.polygons = gv.Polygons([], kdims=["x", "y"], crs=projection.crs, group=GROUP)
        self.boxes, self.polygons = self.boxes.opts(**REGION_STYLE), self.polygons.opts(**REGION_STYLE)
        hv.streams.BoxEdit(source=self.boxes, styles={"fill_color": ["#ffffff"]}).add_subscriber(
            self._boxes_drawn
        )
        hv.streams.PolyDraw(source=self.polygons, drag=False, show_vertices=True).add_subscriber(
            self._polygons_drawn
        )
        if mirrored:
            watch_state(state, "map", self._regions_changed, ["boxes", "polygons"])

    # from the browser ---------------------------------------------------------------
    def _boxes_drawn(self, data: dict) -> None:
        boxes = [
            tuple(float(v) for v in b)
            for b in zip(data.get("x0", []), data.get("y0", []), data.get("x1", []), data.get("y1", []))
        ]
        if self.projection.lonlat:
            self._mirror("boxes", [(min(w, e), min(s, n), max(w, e), max(s, n)) for w, s, e, n in boxes])
        else:
            self._hand_over(
                [([x0, x1, x1, x0], [y0, y0, y1, y1]) for x0, y0, x1, y1 in boxes if x0 != x1 and y0 != y1],
                "boxes",
            )

    def _polygons_drawn(self, data: dict) -> None:
        shapes = [
            (list(xs), list(ys)) for xs, ys in zip(data.get("xs", []), data.get("ys", [])) if len(xs) >= 3
        ]  # a polygon being drawn is not a region yet
        if self.projection.lonlat:
            self._mirror("polygons", [[(float(x), float(y)) for x, y in zip(xs, ys)] for xs, ys in shapes])
        else:
            self._hand_over(shapes, "polygons")

    def _mirror(self, which: str, shapes: list) -> None:
        """The layer shows ``shapes`` now (lon/lat): the state's regions of that kind become them."""
        self._drawn[which] = shapes
        current = _boxes_of(self.state) if which == "boxes" else _polygons_of(self.state)
        if shapes != current:
            setattr(self.state, which, shapes)

    def _hand_over(self, rings: list[tuple[list[float], list[float]]], which: str) -> None:
        """Shapes drawn on a polar map become lon/lat polygons of the state, and leave the layer."""
        parts = [part for xs, ys in rings for part in self.projection.ring_to_lonlat(xs, ys)]
        if parts:
            self.state.polygons = list(self.state.polygons) + [[tuple(pt) for pt in part] for part in parts]
            self.in_doc(lambda: self._clear(which))

    # to the browser -----------------------------------------------------------------
    def _regions_changed(self, event) -> None:
        # regions changed in Python (Clear button, undo, a link): show the same in the browser
        current = (
            [tuple(b) for b in event.new]
            if event.name == "boxes"
            else [list(map(tuple, p)) for p in event.new]
        )
        if current != self._drawn[event.name] and self.rendered:
            self._drawn[event.name] = current
            self.in_doc(lambda: self._sync(event.name))

    def find_renderers(self, plot) -> None:
        """Take the drawing layers' Bokeh renderers from the map's plot once it is rendered."""
        self.rendered = True
        for element, renderer in panel_internals.drawing_renderers(plot, GROUP):
            which = "boxes" if isinstance(element, hv.Rectangles) else "polygons"
            renderer.name = f"drawn_{which}"  # for scripts and tests in the browser
            self.renderers[which] = renderer

    def _clear(self, which: str) -> None:
        renderer = self.renderers.get(which)
        if renderer is not None:
            renderer.data_source.data = {key: [] for key in renderer.data_source.data}

    def _sync(self, which: str) -> None:
        """Replace the shapes of a drawing layer in the browser by the state's boxes or polygons."""
        renderer = self.renderers.get(which)
        if renderer is None:
            return
        glyph, old = renderer.glyph, renderer.data_source.data

        def field(spec):
            return spec.get("field") if isinstance(spec, dict) else getattr(spec, "field", spec)

        if which == "boxes":
            shapes = _boxes_of(self.state)
            columns = {
                field(glyph.left): [b[0] for b in shapes],
                field(glyph.bottom): [b[1] for b in shapes],
                field(glyph.right): [b[2] for b in shapes],
                field(glyph.top): [b[3] for b in shapes],
            }
        else:
            shapes = self.state.polygons
            columns = {
                field(glyph.xs): [np.array([p[0] for p in poly]) for poly in shapes],
                field(glyph.ys): [np.array([p[1] for p in poly]) for poly in shapes],
            }
        for key, values in old.items():  # other columns (styles) keep their first value
            if key not in columns:
                columns[key] = list(values[:1]) * len(shapes) if len(values) else ["#ffffff"] * len(shapes)
        renderer.data_source.data = columns
