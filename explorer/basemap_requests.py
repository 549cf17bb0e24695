"""The basemap in the browser: two JPEG images over the map, never the source raster.

One image is the whole map, coarse, fetched once; the other, the detail, covers the visible
part padded by ``BASEMAP_PAD`` of its size on each side, at screen resolution. After a pan or
zoom that leaves the detail or changes its scale, the browser reports what it shows
(static/basemap_follow.js) and ``basemap_request`` picks the next detail image: the padding is
computed here only. A served page fetches the images from the server's basemap route
(``handlers.BasemapHandler``); a page without that route (a notebook) gets them inline, as data
URIs rendered here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from lookalike.explorer import basemap
from lookalike.explorer.projection import MapProjection
from lookalike.indexer.thumbnails import SourceImage

STATIC = Path(__file__).parent / "static"
BASEMAP_PAD = 0.25  # the detail image reaches this fraction of the visible size past each side
BASEMAP_MAX_PX = 2400  # the detail image's largest side in pixels
BASEMAP_MIN_PX = 16  # and its smallest
OVERVIEW_PX = 1024  # width of the coarse image of the whole map


def basemap_query(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> str:
    return f"x0={x0!r}&y0={y0!r}&x1={x1!r}&y1={y1!r}&w={int(width)}&h={int(height)}"


def basemap_request(bounds, x_range, y_range, width: float, height: float,
                    pad: float = BASEMAP_PAD) -> dict | None:
    """The basemap image for a view of ``width`` x ``height`` screen pixels: the view padded by
    ``pad`` of its size on each side, inside ``bounds``; None when that is empty. Keys:
    ``query`` (for the basemap route), ``x``, ``y``, ``w``, ``h`` (its box) and ``px``, ``py``
    (its size in pixels)."""
    (vx0, vx1), (vy0, vy1) = x_range, y_range
    vw, vh = vx1 - vx0, vy1 - vy0
    x0, x1 = max(bounds[0], vx0 - vw * pad), min(bounds[2], vx1 + vw * pad)
    y0, y1 = max(bounds[1], vy0 - vh * pad), min(bounds[3], vy1 + vh * pad)
    if not (x1 > x0 and y1 > y0 and vw > 0 and vh > 0):
        return None
    w = max(BASEMAP_MIN_PX, min(BASEMAP_MAX_PX, round(width * (x1 - x0) / vw)))
    h = max(BASEMAP_MIN_PX, min(BASEMAP_MAX_PX, round(height * (y1 - y0) / vh)))
    return {"query": basemap_query(x0, y0, x1, y1, w, h), "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0,
            "px": w, "py": h}


def basemap_url(index_name: str, projection: MapProjection) -> str:
    """Where a served page fetches its basemap (relative: works behind a path prefix)."""
    return f"basemap/{quote(index_name, safe='')}/{projection.name}.jpg"


class BasemapImages:
    """The two basemap images of one map, as ``image_url`` glyphs added to its figure.

    ``image`` given, the images are rendered here and sent inline; otherwise the browser fetches
    them from the basemap route of index ``index_name``. ``in_doc`` runs a change of Bokeh
    models where the document allows it (``MapView._in_doc``).
    """

    def __init__(self, index_name: str, projection: MapProjection, bounds, in_doc: Callable,
                 image: SourceImage | None = None) -> None:
        self.index_name, self.projection, self.bounds = index_name, projection, tuple(bounds)
        self.in_doc, self.image = in_doc, image
        self.renderers: dict = {}  # 'basemap', 'basemap:detail' -> their image_url renderers

    def columns(self, request: dict | None) -> dict:
        """Column data of an image glyph showing ``request`` (nothing for None)."""
        if request is None:  # the view lies outside the image
            return {"url": [], "x": [], "y": [], "w": [], "h": [], "px": []}
        if self.image is None:
            url = f"{basemap_url(self.index_name, self.projection)}?{request['query']}"
        else:
            jpeg = basemap.view_jpeg(self.image, self.projection, request["x"], request["y"],
                                     request["x"] + request["w"], request["y"] + request["h"],
                                     request["px"], request["py"])
            url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
        return {"url": [url], **{k: [request[k]] for k in ("x", "y", "w", "h", "px")}}

    def add_to(self, fig, first_window) -> None:
        """Add both images under the map's other layers, and follow the browser's view."""
        from bokeh.models import ColumnDataSource, CustomJS

        x0, y0, x1, y1 = self.bounds
        overview = basemap_request(self.bounds, (x0, x1), (y0, y1), OVERVIEW_PX,
                                   OVERVIEW_PX / self.projection.aspect, pad=0.0)
        detail = basemap_request(self.bounds, *first_window, *self.projection.detail_px)
        for key, request in (("basemap", overview), ("basemap:detail", detail)):
            name = key.replace(":", "_")
            source = ColumnDataSource(self.columns(request), name=f"{name}_source")
            self.renderers[key] = fig.image_url(url="url", x="x", y="y", w="w", h="h", anchor="bottom_left",
                                                source=source, level="image", name=name)
        sink = ColumnDataSource(data={k: [] for k in ("x0", "x1", "y0", "y1", "width", "height", "n")},
                                name="basemap_view")
        follow = CustomJS(args=dict(fig=fig, source=self.renderers["basemap:detail"].data_source,
                                    bounds=list(self.bounds), sink=sink),
                          code=(STATIC / "basemap_follow.js").read_text(encoding="utf-8"))
        for axis in (fig.x_range, fig.y_range):
            axis.js_on_change("start", follow)
            axis.js_on_change("end", follow)
        sink.on_change("data", self._view_reported)

    def _view_reported(self, attr, old, new) -> None:
        if not new.get("x0"):
            return
        request = basemap_request(self.bounds, (float(new["x0"][0]), float(new["x1"][0])),
                                  (float(new["y0"][0]), float(new["y1"][0])),
                                  float(new["width"][0]), float(new["height"][0]))
        if request is None:
            return
        columns = self.columns(request)
        source = self.renderers["basemap:detail"].data_source

        def show() -> None:
            source.data = columns

        self.in_doc(show)
