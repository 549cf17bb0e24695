"""The explorer server's HTTP routes besides Panel's: thumbnails and basemap images.

``/thumb/<index>/<tile id>.jpg`` answers a tile's thumbnail from the process-wide renderer
(``thumbnail_renderer``), so the browser loads them in parallel and caches them;
``/basemap/<body>/<projection>.jpg?x0=&y0=&x1=&y1=&w=&h=&s=...`` a JPEG of a box of a body's map
(the basemap with the scenes ``s`` over it), which the browser fetches after each pan or zoom,
so no raster goes over the session's websocket.
"""

from __future__ import annotations

import asyncio
import logging
import math
from urllib.parse import unquote

from tornado.web import MissingArgumentError, RequestHandler

from lookalike.errors import LookalikeError
from lookalike.explorer import scene_images
from lookalike.explorer.projection import PROJECTIONS, MapProjection
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.thumbnail_renderer import THUMBNAILS

log = logging.getLogger(__name__)


class ThumbnailHandler(RequestHandler):
    """GET /thumb/<index name>/<tile id>.jpg -> JPEG of the tile, from the process-wide cache.

    Only tiles of the served indexes are ever answered (the id is looked up in the tile table,
    never used as a path). Every refusal is a short plain-text 404 that echoes nothing of the
    request and names no server folder.
    """

    MAX_ID_CHARS = 512

    def initialize(self, served: ServedIndexes) -> None:
        self.served = served

    async def get(self, name: str, tile_id: str) -> None:
        name, tile_id = unquote(name), unquote(tile_id)
        if len(name) > self.MAX_ID_CHARS or len(tile_id) > self.MAX_ID_CHARS or name not in self.served:
            return self._refuse(404, "no such thumbnail")

        async def render() -> bytes:
            index = self.served[name].index
            tile = index.tile(index.row_of(tile_id)).to_dict()
            # resampling runs off the event loop so other sessions stay responsive
            return await THUMBNAILS.jpeg(index, tile)

        await self._send_jpeg(render, "thumbnail", name)

    async def _send_jpeg(self, render, what: str, name: str) -> None:
        """Answer with the JPEG ``render()`` makes; an unknown tile or index is a 404, a bug a
        logged 500 that shows nothing of it."""
        try:
            data = await render()
        except LookalikeError:
            return self._refuse(404, f"no such {what}")
        except Exception:  # a bug: logged here, never shown to the browser
            log.exception("%s of %s failed", what, name)
            return self._refuse(500, f"the {what} could not be rendered")
        self.set_header("Content-Type", "image/jpeg")
        self.set_header("Cache-Control", "public, max-age=86400")
        self.write(data)

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(message + "\n")

    def write_error(self, status_code: int, **kwargs) -> None:
        """Tornado's own errors (e.g. a malformed request) as plain text, no traceback."""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(f"{status_code}\n")


class BasemapHandler(ThumbnailHandler):
    """GET /basemap/<body>/<projection>.jpg?x0=&y0=&x1=&y1=&w=&h=[&s=collection~scene...] -> JPEG
    of that box of the body's map in that map projection (lon/lat degrees, or metres of a polar
    one): its basemap with the scenes ``s`` drawn over it (``scene_images``). A collection's
    name stands for its body.

    Only the served bodies, their scenes and the known projections are answered; every number
    is checked (finite, a box of positive size, at most ``MAX_PIXELS`` a side) and a refusal is
    a short plain-text 400 or 404 that echoes nothing.
    """

    MAX_PIXELS = 4096
    MAX_SCENES = 256

    async def get(self, name: str, projection_name: str) -> None:
        name = unquote(name)
        body = self.served[name].body if name in self.served else name
        if (
            len(name) > self.MAX_ID_CHARS
            or body not in self.served.bodies
            or projection_name not in PROJECTIONS
        ):
            return self._refuse(404, "no such basemap")
        try:
            box = [float(self.get_query_argument(k)) for k in ("x0", "y0", "x1", "y1")]
            width, height = (int(self.get_query_argument(k)) for k in ("w", "h"))
        except (ValueError, MissingArgumentError):
            return self._refuse(400, "a basemap request needs x0, y0, x1, y1 (numbers) and w, h (pixels)")
        if not (
            all(math.isfinite(v) and abs(v) < 1e9 for v in box)
            and box[2] > box[0]
            and box[3] > box[1]
            and 1 <= width <= self.MAX_PIXELS
            and 1 <= height <= self.MAX_PIXELS
        ):
            return self._refuse(
                400, f"a basemap box needs x1 > x0, y1 > y0 and 1-{self.MAX_PIXELS} pixels a side"
            )
        pairs = [tuple(unquote(v).partition("~")[::2]) for v in self.get_query_arguments("s")]
        if len(pairs) > self.MAX_SCENES or any(len(c) + len(s) > 2 * self.MAX_ID_CHARS for c, s in pairs):
            return self._refuse(400, "too many scenes")

        def picture() -> bytes:
            image = scene_images.body_basemap(self.served, body)
            projection = MapProjection.of(projection_name, image.geographic)
            scenes = (
                [] if projection.polar else scene_images.scenes_in_view(self.served, body, pairs, *box, width)
            )
            return scene_images.view_jpeg(image, projection, scenes, *box, width, height)

        async def render() -> bytes:  # decoding and resampling run off the event loop
            return await asyncio.get_running_loop().run_in_executor(None, picture)

        await self._send_jpeg(render, "basemap", name)


def routes(served: ServedIndexes) -> list[tuple]:
    """The routes above, for ``pn.serve(extra_patterns=...)``."""
    return [
        (r"/thumb/([^/]+)/(.+)\.jpg", ThumbnailHandler, dict(served=served)),
        (r"/basemap/([^/]+)/([a-z]+)\.jpg", BasemapHandler, dict(served=served)),
    ]
