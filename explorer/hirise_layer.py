"""The HiRISE layer of a Mars map: coverage as a density of footprints, and the footprints
themselves, with hover, once few are in view. It follows the view (regridded on pan and zoom),
the date filter and its switch."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import holoviews as hv
import numpy as np
import panel as pn
from holoviews.operation.datashader import rasterize, shade

from lookalike.data.hirise import in_time_range, load_hirise_footprints
from lookalike.errors import LookalikeError
from lookalike.explorer import basemap
from lookalike.explorer.map_style import HIRISE_COLORS, HIRISE_FOOTPRINT_COLOR
from lookalike.explorer.projection import MapProjection
from lookalike.explorer.state import ExplorerState

HIRISE_CELL_PX = 3  # screen pixels per cell of the coverage raster
HIRISE_HOVER_MAX = 3000  # footprints drawn as hoverable shapes when at most this many are in view


@lru_cache(maxsize=16)
def hirise_footprints(
    start: str, end: str, show: bool, projection: MapProjection | None = None
) -> hv.Rectangles:
    """HiRISE footprints observed between two dates, in lon/lat or in a polar ``projection``,
    shared by every session of the process."""
    table = load_hirise_footprints()
    if not show:
        return basemap.hirise_rectangles(table.iloc[:0], projection)
    try:
        return basemap.hirise_rectangles(in_time_range(table, start or None, end or None), projection)
    except (ValueError, TypeError):
        return basemap.hirise_rectangles(table, projection)


def hirise_layer(
    state: ExplorerState,
    shown,
    projection: MapProjection,
    frame_size: Callable[[], tuple[int | None, int | None]],
) -> hv.Overlay:
    """Coverage and hoverable footprints; ``shown`` is the layer's switch (a parameter), and
    ``frame_size`` the map's size on screen. Without the footprint table: an empty layer, and
    the state's error says why."""
    try:
        hirise_footprints("", "", True)
    except LookalikeError as exc:
        state.error = str(exc)
        return hv.Overlay([hv.Rectangles([])])
    # one cache entry per hemisphere: the planet's map asks in lon/lat
    source = hv.DynamicMap(
        pn.bind(
            hirise_footprints,
            state.param.time_start,
            state.param.time_end,
            shown,
            projection if projection.polar else None,
        )
    )

    def density(footprints: hv.Rectangles, x_range=None, y_range=None) -> hv.RGB:
        # rasterized at a third of the screen's resolution: a pan or zoom sends a small image,
        # and nothing at all (one pixel) while the layer is off
        if len(footprints.data) == 0 or x_range is None or y_range is None:
            return hv.RGB(np.zeros((1, 1, 4), np.uint8), bounds=(0, 0, 1, 1), vdims=list("RGBA"))
        width, height = frame_size()
        cells = dict(
            width=max(int((width or 900) / HIRISE_CELL_PX), 16),
            height=max(int((height or 450) / HIRISE_CELL_PX), 8),
        )
        counts = rasterize(
            footprints, aggregator="count", x_range=x_range, y_range=y_range, dynamic=False, **cells
        )
        return shade(counts, cmap=HIRISE_COLORS, min_alpha=60, alpha=170, dynamic=False)

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

    coverage = source.apply(density, streams=[hv.streams.RangeXY()])
    detail = source.apply(hoverable, streams=[hv.streams.RangeXY()]).opts(
        fill_alpha=0.15,
        fill_color=HIRISE_FOOTPRINT_COLOR,
        line_color=HIRISE_FOOTPRINT_COLOR,
        line_width=1,
        tools=["hover"],
        hover_tooltips=[("HiRISE", "@observation_id"), ("date", "@date")],
    )
    return coverage * detail
