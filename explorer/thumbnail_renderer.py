"""The process's thumbnail renderer: thumbnails of tiles rendered from their source (or read from
the index's thumbnail store) once, for the /thumb route and for pages that embed them.

Rendering runs on one dedicated thread (pyproj builds its transformers once per thread and
zone, which costs more than the thumbnail itself), and a page of hits is queued for rendering as
soon as the search returns, before the browser asks for it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from lookalike.errors import LookalikeError
from lookalike.indexer.thumbnails import has_stored_thumbnails, thumbnail_jpeg, warm_zones

log = logging.getLogger(__name__)

INLINE_WAIT_S = 1.0  # how long a page of results may wait for its thumbnails to be embedded


class Thumbnails:
    """The process's thumbnail renderer: one thread, so pyproj's per-thread setup happens once.

    Every thumbnail is rendered once: the JPEG bytes stay in the ``lru_cache`` of
    ``indexer.thumbnails``, and the future of each rendering (queued or done) is kept, so a
    browser request for a thumbnail that is queued already waits for that rendering instead of
    queueing behind the rest of the page.
    """

    MAX_FUTURES = 20_000

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookalike-thumbs")
        self._futures: OrderedDict[tuple[str, str], Future] = OrderedDict()
        self._lock = threading.Lock()

    def warm(self, index) -> None:
        """Queue the creation of every zone transformer of ``index`` on the thumbnail thread."""

        def run() -> None:
            try:
                warm_zones(index)
            except LookalikeError as exc:
                log.warning("thumbnail warm-up: %s", exc)

        self.executor.submit(run)

    def future(self, index, tile: dict) -> Future:
        """The (possibly finished) rendering of one tile row's JPEG."""

        key = (str(index.path), str(tile["tile_id"]))
        with self._lock:
            future = self._futures.get(key)
            if future is not None and not (future.done() and future.exception() is not None):
                self._futures.move_to_end(key)
                return future
            future = self._futures[key] = self.executor.submit(thumbnail_jpeg, index, tile)
            while len(self._futures) > self.MAX_FUTURES:
                self._futures.popitem(last=False)
        return future

    def prefetch(self, index, tiles) -> None:
        """Render the thumbnails of these tile rows ahead of the browser's requests (stored ones
        need no rendering)."""
        if has_stored_thumbnails(index):
            return
        for tile in tiles.to_dict("records"):
            self.future(index, tile)

    def data_uris(self, index, tiles, timeout: float = INLINE_WAIT_S) -> dict[str, str]:
        """{tile id: JPEG data URI} of these rows, for those rendered within ``timeout`` seconds.

        Sending a page of thumbnails inside the results message saves the browser fifty
        requests (six at a time); what is not ready by then loads through /thumb as usual.
        """
        if has_stored_thumbnails(index):  # a lookup each, on this thread
            out = {}
            for tile_id in tiles["tile_id"].astype(str).tolist():
                try:
                    out[tile_id] = (
                        "data:image/jpeg;base64,"
                        + base64.b64encode(index.thumbnail(index.row_of(tile_id))).decode()
                    )
                except LookalikeError:  # e.g. a damaged thumbnail file: the /thumb route says why
                    continue
            return out
        futures = {rec["tile_id"]: self.future(index, rec) for rec in tiles.to_dict("records")}
        deadline = time.monotonic() + timeout
        out = {}
        for tile_id, future in futures.items():
            try:
                data = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # not ready in time, or failed: the browser asks /thumb
                continue
            out[tile_id] = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        return out

    async def jpeg(self, index, tile: dict) -> bytes:
        future = self.future(index, tile)
        return future.result() if future.done() else await asyncio.wrap_future(future)


THUMBNAILS = Thumbnails()
