"""The explorer web app: ``serve(paths)`` builds one ``ExplorerState`` and layout per browser session.

Indexes are opened once per process (``explorer.served``) and shared read-only by all sessions;
Panel runs session callbacks on a thread pool so one session's search does not block another's.
Thumbnails are served by a small HTTP route (``/thumb/<index>/<tile id>.jpg``) from the cached
in-memory source images (``indexer.thumbnails``), so the browser loads them in parallel and
caches them. They are rendered on one dedicated thread (pyproj builds its transformers once per
thread and zone, which costs more than the thumbnail itself), and a page of hits is queued for
rendering as soon as the search returns, before the browser asks for it. The basemap is a second
route (``/basemap/<index>/<view>.jpg?x0=&y0=&x1=&y1=&w=&h=``): the browser fetches a JPEG of what
it shows after each pan or zoom, and no raster goes over the session's websocket.

Everything that is per process rather than per session (source images and their pyramids, the
HiRISE footprints, the numba kernels of the search and of Datashader) is loaded or compiled by
``warm_up`` before the server listens (about a second once ``pixel_cache`` holds the decoded
basemaps), so the first page is as quick as any later one.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import gc
import logging
import math
import sys
import threading
import time
from functools import partial
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import holoviews as hv
import panel as pn
from bokeh.core.property.validation import validate
from tornado.web import MissingArgumentError, RequestHandler

from lookalike.errors import LookalikeError
from lookalike.explorer import basemap
from lookalike.explorer.projection import VIEWS, MapProjection
from lookalike.explorer.served import Catalog
from lookalike.explorer.state import MAP_LAYERS, ExplorerState
from lookalike.explorer.views import MapView, controls, results_panel, status_pane
from lookalike.indexer.search import Query, search
from lookalike.indexer.thumbnails import basemap_image, has_stored_thumbnails, thumbnail_jpeg, warm_zones

log = logging.getLogger(__name__)

URL_KEYS = ("index", "view", "tile", "k", "zones", "from", "to", "bbox", "pos", "neg", "examples", "regions",
            "classes", "conf", "min_n")
THREADS = 8
# the largest websocket message a session may send (drawn regions are the large ones) and the
# largest HTTP request body (the app takes no uploads over HTTP)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_BODY_BYTES = 64 * 1024
THEME = "dark"
PAGE_TITLE = "Lookalike"
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
                    out[tile_id] = "data:image/jpeg;base64," + base64.b64encode(
                        index.thumbnail(index.row_of(tile_id))).decode()
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


class ThumbnailHandler(RequestHandler):
    """GET /thumb/<index name>/<tile id>.jpg -> JPEG of the tile, from the process-wide cache.

    Only tiles of the served indexes are ever answered (the id is looked up in the tile table,
    never used as a path). Every refusal is a short plain-text 404 that echoes nothing of the
    request and names no server folder.
    """

    MAX_ID_CHARS = 512

    def initialize(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def get(self, name: str, tile_id: str) -> None:
        name, tile_id = unquote(name), unquote(tile_id)
        if len(name) > self.MAX_ID_CHARS or len(tile_id) > self.MAX_ID_CHARS or name not in self.catalog:
            return self._refuse(404, "no such thumbnail")
        async def render() -> bytes:
            index = self.catalog[name].index
            tile = index.tiles.iloc[index.row_of(tile_id)].to_dict()
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
    """GET /basemap/<index name>/<view>.jpg?x0=&y0=&x1=&y1=&w=&h= -> JPEG of that box of the
    index's basemap in that map view (lon/lat degrees, or metres of a polar view).

    Only the served indexes and the known views are answered; every number is checked (finite,
    a box of positive size, at most ``MAX_PIXELS`` a side) and a refusal is a short plain-text
    400 or 404 that echoes nothing.
    """

    MAX_PIXELS = 4096

    async def get(self, name: str, view: str) -> None:
        name = unquote(name)
        if len(name) > self.MAX_ID_CHARS or name not in self.catalog or view not in VIEWS:
            return self._refuse(404, "no such basemap")
        try:
            box = [float(self.get_query_argument(k)) for k in ("x0", "y0", "x1", "y1")]
            width, height = (int(self.get_query_argument(k)) for k in ("w", "h"))
        except (ValueError, MissingArgumentError):
            return self._refuse(400, "a basemap request needs x0, y0, x1, y1 (numbers) and w, h (pixels)")
        if not (all(math.isfinite(v) and abs(v) < 1e9 for v in box) and box[2] > box[0] and box[3] > box[1]
                and 1 <= width <= self.MAX_PIXELS and 1 <= height <= self.MAX_PIXELS):
            return self._refuse(400, f"a basemap box needs x1 > x0, y1 > y0 and 1-{self.MAX_PIXELS} pixels a side")
        async def render() -> bytes:
            image = basemap_image(self.catalog[name].index)
            projection = MapProjection.of(view, image.geographic)
            return await asyncio.get_running_loop().run_in_executor(
                None, partial(basemap.view_jpeg, image, projection, *box, width, height))

        await self._send_jpeg(render, "basemap", name)


def session_params() -> dict[str, str]:
    """The page's query-string parameters (first value of each)."""
    args = pn.state.session_args or {}
    out = {}
    for key in URL_KEYS:
        values = args.get(key)
        if values:
            value = values[0]
            out[key] = value.decode() if isinstance(value, bytes) else str(value)
    return out


RELEASE_DELAY_S = 2.0  # closed sessions dropped within this time share one collection


class _MemoryRelease:
    """Collect dropped sessions' objects and hand the freed heap back to the system (glibc keeps
    it otherwise, so a server's RSS would only ever grow). A full collection of this heap takes
    a tenth of a second or more and holds every session up meanwhile, so the sessions dropped
    within ``RELEASE_DELAY_S`` of each other share one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __call__(self, session_context) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(RELEASE_DELAY_S, self._run)
                self._timer.daemon = True
                self._timer.start()

    def _run(self) -> None:
        with self._lock:
            self._timer = None
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)


release_memory = _MemoryRelease()


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc: nothing to trim
        return None


_LIBC = _load_libc()


def without_web_fonts() -> None:
    """Drop the web font Panel's Fast design links from fonts.googleapis.com on every page: an
    offline or firewalled browser waits for it and never gets it. The page uses the system's
    fonts instead (see ``build_app``). Panel offers no option for this, hence the class edit."""
    pn.theme.Fast._resources = {kind: value for kind, value in pn.theme.Fast._resources.items()
                                if kind != "font"}


def build_app(catalog: Catalog) -> pn.template.BaseTemplate:
    """The layout of one session (called by Panel for every new browser page)."""
    params = session_params()
    # widgets take their design's theme from the session's config when they are made: without
    # this, the sidebar rebuilt on a change of index would get light-theme (dark) labels
    pn.config.theme = THEME
    name = params.get("index") if params.get("index") in catalog else catalog.default
    state = ExplorerState(index=catalog[name].index, index_name=name)
    try:
        state.apply_url_params(params)  # a shared link reproduces its search
    except Exception:  # a link must never cost the page: log the bug, open the app as it is
        log.exception("applying a link's parameters failed")
        state.error = "The link's search could not be applied; ignoring it."
    if params.get("index") and params["index"] not in catalog and not state.error:
        state.error = f"The link's index is not served here; showing {catalog[name].label}."

    # a new map and sidebar for another index or another view (projection) of it
    def map_for(index_name: str, view: str):
        return MapView(state, catalog[index_name]).panel()

    def controls_for(index_name: str, view: str):
        return controls(state, catalog)

    # keep the address bar in step with the search, so copying it shares the search
    location = pn.state.location

    def sync_url(*_) -> None:
        if location is not None:
            location.search = state.url_query()

    state.param.watch(sync_url, ["hits", "error", "positives", "negatives", "view"])
    sync_url()

    def prefetch(*_) -> None:
        if state.index is not None and state.hits is not None and len(state.hits):
            THUMBNAILS.prefetch(state.index, state.page_hits())

    state.param.watch(prefetch, ["hits", "page"])
    prefetch()
    pn.state.on_session_destroyed(release_memory)

    def inline(tiles):
        return THUMBNAILS.data_uris(state.index, tiles) if state.index is not None else {}

    without_web_fonts()
    template = pn.template.FastListTemplate(
        title="Lookalike: click a planet, see its lookalikes", theme=THEME,
        sidebar=[pn.panel(pn.bind(controls_for, state.param.index_name, state.param.view))],
        main=[pn.Column(pn.panel(pn.bind(map_for, state.param.index_name, state.param.view)), status_pane(state),
                        results_panel(state, inline=inline), sizing_mode="stretch_width")],
        sidebar_width=330, accent="#d2691e",
        # no busy spinner: it is a Panel HTML model, which makes the page load MathJax
        busy_indicator=None,
        # the system's own fonts: the theme's default pulls Open Sans from the internet, which
        # an offline or firewalled page waits for and never gets
        font="system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif", font_url="")
    without_mathjax(template)
    return template


def without_mathjax(template: pn.template.BaseTemplate) -> None:
    """Spare the page MathJax's 600 kB of script, which nothing here typesets: Panel loads it
    for any Panel HTML model in the document, and a template always holds one, an empty area
    for scripts that nothing in the explorer uses. A plain Bokeh Div takes its place (the
    other texts of the page are Divs for the same reason, ``views.text_block``)."""
    items = getattr(template, "_render_items", {})
    if "js_area" in items:
        template._js_area = pn.widgets.StaticText(margin=0, width=0, height=0)
        items["js_area"] = (template._js_area, items["js_area"][1])


def serve_session(catalog: Catalog) -> None:
    """Make one browser page's session: its layout (``build_app``) put into the session's
    document. Bokeh's property validation is off while the document's few hundred models are
    made: it is a fifth of the time a new page costs the server, and every value set here comes
    from this code, not from a user."""
    doc = pn.state.curdoc
    # one walk over the document's models at the end, rather than one per change made to it
    with doc.models.freeze():
        template = build_app(catalog)
        with validate(False):
            template.server_doc(doc, title=PAGE_TITLE, location=True)


def warm_up(catalog: Catalog) -> None:
    """Do once per process what the first session would otherwise wait for.

    Loads each source image and its basemap pyramid (from ``pixel_cache`` after the first start
    on a machine), creates the thumbnail thread's zone transformers (in the background), compiles
    the numba search kernel, and renders one map offline and clicks it, which loads the HiRISE
    footprints and compiles Datashader's kernels.
    """

    t0 = time.perf_counter()
    if "matplotlib" in sys.modules:  # Panel's pane-type check imports this on the first page
        import matplotlib.figure  # noqa: F401
    for entry in catalog.entries.values():
        index = entry.index
        try:
            basemap.pyramid(basemap_image(index))
        except LookalikeError as exc:
            log.warning("%s: %s", entry.name, exc)
            continue
        THUMBNAILS.warm(index)
        if len(index.tiles) == 0:
            continue
        search(index, Query(tile_id=str(index.tiles["tile_id"].iat[0])), k=10)
        try:
            # every layer on, so each one's first rendering is done here
            state = ExplorerState(index=index, index_name=entry.name, layers=list(MAP_LAYERS))
            view = MapView(state, entry)
            pane = view.panel()
            root = pane.get_root()
            tile = index.tiles.iloc[len(index.tiles) // 2]
            state.click(float(tile["lon"]), float(tile["lat"]))
            pane._cleanup(root)
            pn.state._views.pop(root.ref["id"], None)  # an offline root is never destroyed as a session is
        except Exception:  # warming up is an optimisation: never keep the server from starting
            log.exception("warm-up of %s failed", entry.name)
    log.info("warm-up took %.1f s", time.perf_counter() - t0)
    # the polar views' basemaps (a second or two each) are made while the server already listens
    threading.Thread(target=_warm_polar_views, args=(catalog,), daemon=True, name="polar-basemaps").start()


def _warm_polar_views(catalog: Catalog) -> None:
    for entry in catalog.entries.values():
        try:
            image = basemap_image(entry.index)
            for view in ("north", "south"):
                basemap.pyramid(image, MapProjection.of(view, image.geographic))
        except Exception:  # an optimisation: the view makes its basemap when first asked
            log.exception("polar basemaps of %s failed", entry.name)


def local_address(address: str) -> bool:
    return address in ("localhost", "127.0.0.1", "::1")


def serve(paths: list[Path | str], port: int = 5006, show: bool = False,
          address: str = "localhost", threaded: bool = False, **kwargs):
    """Serve the explorer on the indexes at ``paths`` (the first is the default).

    The server listens on ``address``: this machine only unless another address is given
    (``0.0.0.0`` for every interface). Websocket messages and HTTP bodies are bounded
    (``MAX_MESSAGE_BYTES``, ``MAX_BODY_BYTES``), and each session runs one search at a time.
    With ``threaded`` the server runs in a background thread and is returned (call ``.stop()``);
    otherwise this blocks until interrupted.
    """
    catalog = Catalog(paths)
    pn.extension(notifications=False)
    hv.extension("bokeh", logo=False)
    pn.config.nthreads = THREADS
    local = local_address(address)
    print(f"Lookalike explorer: http://{'localhost' if local else address}:{port}/\n"
          "  Click anywhere on the planet: its 1,000 most similar places appear as thumbnails and on\n"
          "  the map. Body switches Mars/Earth, Map view the poles; draw boxes to narrow the search.",
          flush=True)
    # before listening: a page opened meanwhile would share the two cores with it, and be slower
    # by about as long as it takes
    warm_up(catalog)
    # what is loaded by now (libraries, the indexes, what the warm-up made) lives as long as the
    # process: kept out of the collector's full passes, which would otherwise walk it (a third of
    # a second) every time sessions have made enough new objects, holding every session up
    gc.collect()
    gc.freeze()
    kwargs.setdefault("websocket_origin", [f"localhost:{port}", f"127.0.0.1:{port}"]
                      + ([] if local else [f"{address}:{port}"]))
    kwargs.setdefault("websocket_max_message_size", MAX_MESSAGE_BYTES)
    kwargs.setdefault("compress_response", True)  # gzip: the page's scripts are most of its bytes
    kwargs.setdefault("http_server_kwargs", dict(max_body_size=MAX_BODY_BYTES, max_buffer_size=MAX_BODY_BYTES))
    # a plain function: Panel calls functions, and would show any other callable as a pane
    return pn.serve(lambda: serve_session(catalog), port=port, show=show, address=address,
                    title=PAGE_TITLE, threaded=threaded,
                    extra_patterns=[(r"/thumb/([^/]+)/(.+)\.jpg", ThumbnailHandler, dict(catalog=catalog)),
                                    (r"/basemap/([^/]+)/([a-z]+)\.jpg", BasemapHandler, dict(catalog=catalog))],
                    **kwargs)
