"""The basemap in the browser: two JPEG images over the map, never the source rasters.

One image is the whole map, coarse, fetched once; the other, the detail, covers the visible
part padded by ``BASEMAP_PAD`` of its size on each side, at screen resolution. After a pan or
zoom that leaves the detail or changes its scale, the browser reports what it shows
(static/basemap_follow.js) and ``basemap_request`` picks the next detail image: the padding is
computed here only. The detail also shows the scenes of the body's collections drawn over the
mosaic (``scene_images``); it is sent again when the scenes drawn change (a collection switched,
another date). A served page fetches the images from the server's basemap route
(``handlers.BasemapHandler``); a page without that route (a notebook) gets them inline, as data
URIs rendered by the kernel.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from lookalike.explorer.projection import MapProjection

STATIC = Path(__file__).parent / "static"
BASEMAP_PAD = 0.25  # the detail image reaches this fraction of the visible size past each side
BASEMAP_MAX_PX = 2400  # the detail image's largest side in pixels
BASEMAP_MIN_PX = 16  # and its smallest
OVERVIEW_PX = 1024  # width of the coarse image of the whole map


def basemap_query(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> str:
    return f"x0={x0!r}&y0={y0!r}&x1={x1!r}&y1={y1!r}&w={int(width)}&h={int(height)}"


def basemap_request(
    bounds, x_range, y_range, width: float, height: float, pad: float = BASEMAP_PAD
) -> dict | None:
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
    return {
        "query": basemap_query(x0, y0, x1, y1, w, h),
        "x": x0,
        "y": y0,
        "w": x1 - x0,
        "h": y1 - y0,
        "px": w,
        "py": h,
    }


def basemap_url(body: str, projection: MapProjection) -> str:
    """Where a served page fetches its body's map pictures (relative: works behind a path prefix)."""
    return f"basemap/{quote(body, safe='')}/{projection.name}.jpg"


def scenes_query(pairs: list[tuple[str, str]]) -> str:
    """The scenes drawn over the basemap, for the basemap route: ``s=collection~source`` each."""
    return "".join(f"&s={quote(f'{c}~{s}', safe='')}" for c, s in pairs)


class BasemapImages:
    """The two pictures of one body's map, as ``image_url`` glyphs added to its figure: the
    whole map, coarse, and the detail of the view with the scenes drawn over it (``scenes()``:
    the (collection, source) pairs drawn now).

    With ``render`` (request, pairs -> JPEG bytes) the pictures are rendered here and sent
    inline; otherwise the browser fetches them from the basemap route of body ``body``.
    ``in_doc`` runs a change of Bokeh models where the document allows it (``MapView._in_doc``).
    """

    def __init__(
        self,
        body: str,
        projection: MapProjection,
        bounds,
        in_doc: Callable,
        render: Callable | None = None,
        scenes: Callable[[], list] = list,
    ) -> None:
        self.body, self.projection, self.bounds = body, projection, tuple(bounds)
        self.in_doc, self.render, self.scenes = in_doc, render, scenes
        self.renderers: dict = {}  # 'basemap', 'basemap:detail' -> their image_url renderers
        self.request: dict | None = None  # the detail picture shown now

    def columns(self, request: dict | None, pairs: list | None = None) -> dict:
        """Column data of an image glyph showing ``request`` with scenes ``pairs``."""
        if request is None:  # the view lies outside the image
            return {"url": [], "x": [], "y": [], "w": [], "h": [], "px": []}
        pairs = [] if pairs is None or self.projection.polar else pairs
        if self.render is None:
            url = f"{basemap_url(self.body, self.projection)}?{request['query']}{scenes_query(pairs)}"
        else:
            url = "data:image/jpeg;base64," + base64.b64encode(self.render(request, pairs)).decode()
        return {"url": [url], **{k: [request[k]] for k in ("x", "y", "w", "h", "px")}}

    def add_to(self, fig, first_window, shape: dict | None = None) -> None:
        """Add both pictures under the map's other layers, and follow the browser's view
        (``shape``: the true-shape constants of a lon/lat map, ``true_shape``)."""
        from bokeh.models import ColumnDataSource, CustomJS

        x0, y0, x1, y1 = self.bounds
        overview = basemap_request(
            self.bounds, (x0, x1), (y0, y1), OVERVIEW_PX, OVERVIEW_PX / self.projection.aspect, pad=0.0
        )
        self.request = basemap_request(self.bounds, *first_window, *self.projection.detail_px)
        pictures = (("basemap", overview, None), ("basemap:detail", self.request, self.scenes()))
        for key, request, pairs in pictures:
            name = key.replace(":", "_")
            source = ColumnDataSource(self.columns(request, pairs), name=f"{name}_source")
            self.renderers[key] = fig.image_url(
                url="url",
                x="x",
                y="y",
                w="w",
                h="h",
                anchor="bottom_left",
                source=source,
                level="image",
                name=name,
            )
        sink = ColumnDataSource(
            data={k: [] for k in ("x0", "x1", "y0", "y1", "width", "height", "n")}, name="basemap_view"
        )
        follow = CustomJS(
            args=dict(
                fig=fig,
                source=self.renderers["basemap:detail"].data_source,
                bounds=list(self.bounds),
                sink=sink,
                shape=shape or {},
            ),
            code=(STATIC / "basemap_follow.js").read_text(encoding="utf-8"),
        )
        for axis in (fig.x_range, fig.y_range):
            axis.js_on_change("start", follow)
            axis.js_on_change("end", follow)
        sink.on_change("data", self._view_reported)

    def _view_reported(self, attr, old, new) -> None:
        if not new.get("x0"):
            return
        request = basemap_request(
            self.bounds,
            (float(new["x0"][0]), float(new["x1"][0])),
            (float(new["y0"][0]), float(new["y1"][0])),
            float(new["width"][0]),
            float(new["height"][0]),
        )
        if request is not None:
            self.request = request
            self.refresh()

    def refresh(self) -> None:
        """Send the detail picture of the view shown, with the scenes drawn now."""
        if self.request is None or "basemap:detail" not in self.renderers:
            return
        columns = self.columns(self.request, self.scenes())
        source = self.renderers["basemap:detail"].data_source

        def show() -> None:
            source.data = columns

        self.in_doc(show)
