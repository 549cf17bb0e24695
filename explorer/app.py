"""The explorer server: ``serve(paths)`` serves one page (``page.build_page``) per browser session.

Indexes are opened once per process (``explorer.served``) and shared read-only by all sessions;
Panel runs session callbacks on a thread pool so one session's search does not block another's.
Thumbnails and basemap images come from the server's own HTTP routes (``explorer.handlers``).

Everything that is per process rather than per session (source images and their pyramids, the
HiRISE footprints, the numba kernels of the search and of Datashader) is loaded or compiled by
``warm_up`` before the server listens (about a second once ``pixel_cache`` holds the decoded
basemaps), so the first page is as quick as any later one.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from pathlib import Path

import holoviews as hv
import panel as pn

from lookalike.errors import LookalikeError
from lookalike.explorer import basemap, handlers, panel_internals
from lookalike.explorer.acquisitions import acquisitions
from lookalike.explorer.collection_controls import enter_body
from lookalike.explorer.map_view import MapView
from lookalike.explorer.page import build_page
from lookalike.explorer.projection import PROJECTIONS, MapProjection
from lookalike.explorer.scene_images import body_basemap, scene_pyramid, scenes_in_view
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.state import MAP_LAYERS, ExplorerState
from lookalike.explorer.thumbnail_renderer import THUMBNAILS
from lookalike.indexer.search import Query, search_index

log = logging.getLogger(__name__)

THREADS = 8
# the largest websocket message a session may send (drawn regions are the large ones) and the
# largest HTTP request body (the app takes no uploads over HTTP)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_BODY_BYTES = 64 * 1024
PAGE_TITLE = "Lookalike"
WARM_SCENES = 32  # scenes of a collection decoded before the server listens


def serve_session(served: ServedIndexes) -> None:
    """Make one browser page's session: its page (``build_page``) put into the session's
    document, built quietly (``panel_internals.quiet_document``)."""
    doc = pn.state.curdoc
    with panel_internals.quiet_document(doc):
        build_page(served).server_doc(doc, title=PAGE_TITLE, location=True)


def warm_up(served: ServedIndexes) -> None:
    """Do once per process what the first session would otherwise wait for.

    Loads each source image and its basemap pyramid (from ``pixel_cache`` after the first start
    on a machine), creates the thumbnail thread's zone transformers (in the background), compiles
    the numba search kernel, and renders one map offline and clicks it, which loads the HiRISE
    footprints and compiles Datashader's kernels.
    """
    t0 = time.perf_counter()
    if "matplotlib" in sys.modules:  # Panel's pane-type check imports this on the first page
        import matplotlib.figure  # noqa: F401
    for key in served.bodies:
        try:
            basemap.pyramid(body_basemap(served, key))
        except LookalikeError as exc:
            log.warning("%s: %s", key, exc)
            continue
        for name in served.body(key).collections:
            _warm_collection(served, key, name)
    log.info("warm-up took %.1f s", time.perf_counter() - t0)
    # the polar basemaps (a second or two each) are made while the server already listens
    threading.Thread(
        target=_warm_polar_projections, args=(served,), daemon=True, name="polar-basemaps"
    ).start()
    # and the files an open does not read whole are verified, which brings them into the page cache
    threading.Thread(target=_verify_rest, args=(served,), daemon=True, name="index-verification").start()


def _warm_collection(served: ServedIndexes, body: str, name: str) -> None:
    """Search a collection once and render its body's map offline, clicking it."""
    index = served[name].index
    THUMBNAILS.warm(index)
    if index.n == 0:
        return
    if name != served.body(body).base:  # the scenes' pictures, for the first zoom into them
        scenes = [(name, a.source) for a in acquisitions(index)[:WARM_SCENES]]
        for image in scenes_in_view(served, body, scenes, -180.0, -90.0, 180.0, 90.0, 1 << 30):
            scene_pyramid(image)
    search_index(index, Query(tile_id=index.tile_id_at(0)), k=10)
    try:
        state = ExplorerState(layers=list(MAP_LAYERS))  # every layer on: each one's first rendering is here
        enter_body(state, served, body, name)
        state.search_in = name
        pane = MapView(state, served, body).panel()
        root = pane.get_root()
        tile = index.tile(index.n // 2)
        state.click(float(tile["lon"]), float(tile["lat"]))
        panel_internals.release_offline_root(pane, root)  # never destroyed as a session is
    except Exception:  # warming up is an optimisation: never keep the server from starting
        log.exception("warm-up of %s failed", name)


def _verify_rest(served: ServedIndexes) -> None:
    for entry in served.entries.values():
        entry.index.verify_rest()


def _warm_polar_projections(served: ServedIndexes) -> None:
    for key in served.bodies:
        try:
            image = body_basemap(served, key)
            for name in PROJECTIONS:
                if name != "global":
                    basemap.pyramid(image, MapProjection.of(name, image.geographic))
        except Exception:  # an optimisation: the map makes its basemap when first asked
            log.exception("polar basemaps of %s failed", key)


def local_address(address: str) -> bool:
    return address in ("localhost", "127.0.0.1", "::1")


def serve(
    paths: list[Path | str],
    port: int = 5006,
    show: bool = False,
    address: str = "localhost",
    threaded: bool = False,
    **kwargs,
):
    """Serve the explorer on the indexes at ``paths`` (the first is the default).

    The server listens on ``address``: this machine only unless another address is given
    (``0.0.0.0`` for every interface). Websocket messages and HTTP bodies are bounded
    (``MAX_MESSAGE_BYTES``, ``MAX_BODY_BYTES``), and each session runs one search at a time.
    With ``threaded`` the server runs in a background thread and is returned (call ``.stop()``);
    otherwise this blocks until interrupted.
    """
    served = ServedIndexes(paths)
    pn.extension(notifications=False)
    hv.extension("bokeh", logo=False)
    pn.config.nthreads = THREADS
    local = local_address(address)
    print(
        f"Lookalike explorer: http://{'localhost' if local else address}:{port}/\n"
        "  Click anywhere on the planet: its 1,000 most similar places appear as thumbnails and on\n"
        "  the map. Body switches Mars/Earth, Map view the poles; draw boxes to narrow the search.",
        flush=True,
    )
    # before listening: a page opened meanwhile would share the two cores with it, and be slower
    # by about as long as it takes
    warm_up(served)
    # what is loaded by now (libraries, the indexes, what the warm-up made) lives as long as the
    # process: kept out of the collector's full passes, which would otherwise walk it (a third of
    # a second) every time sessions have made enough new objects, holding every session up
    gc.collect()
    gc.freeze()
    kwargs.setdefault(
        "websocket_origin",
        [f"localhost:{port}", f"127.0.0.1:{port}"] + ([] if local else [f"{address}:{port}"]),
    )
    kwargs.setdefault("websocket_max_message_size", MAX_MESSAGE_BYTES)
    kwargs.setdefault("compress_response", True)  # gzip: the page's scripts are most of its bytes
    kwargs.setdefault(
        "http_server_kwargs", dict(max_body_size=MAX_BODY_BYTES, max_buffer_size=MAX_BODY_BYTES)
    )
    # a plain function: Panel calls functions, and would show any other callable as a pane
    return pn.serve(
        lambda: serve_session(served),
        port=port,
        show=show,
        address=address,
        title=PAGE_TITLE,
        threaded=threaded,
        extra_patterns=handlers.routes(served),
        **kwargs,
    )
