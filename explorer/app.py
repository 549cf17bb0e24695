"""The explorer web app: ``serve(paths)`` builds one ``ExplorerState`` and layout per browser session.

Indexes are opened once per process (``explorer.catalog``) and shared read-only by all sessions;
Panel runs session callbacks on a thread pool so one session's search does not block another's.
Thumbnails are served by a small HTTP route (``/thumb/<index>/<tile id>.jpg``) from the cached
in-memory source images (``indexer.thumbnails``), so the browser loads them in parallel and
caches them.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import unquote

import holoviews as hv
import panel as pn
from tornado.web import RequestHandler

from explorer.catalog import Catalog
from explorer.state import ExplorerState
from explorer.views import MapView, controls, results_panel, status_pane
from indexer.errors import LookalikeError

log = logging.getLogger(__name__)

URL_KEYS = ("index", "tile", "k", "zones", "from", "to", "bbox", "pos", "neg", "examples", "regions")
THREADS = 8

CSS = """
.status p { margin: 0.2em 0; }
"""


class ThumbnailHandler(RequestHandler):
    """GET /thumb/<index name>/<tile id>.jpg -> JPEG of the tile, from the process-wide cache."""

    def initialize(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def get(self, name: str, tile_id: str) -> None:
        from indexer.thumbnails import thumbnail_jpeg

        name, tile_id = unquote(name), unquote(tile_id)
        try:
            index = self.catalog[name].index
            tile = index.tiles.iloc[index.row_of(tile_id)].to_dict()
            # decoding and resampling run off the event loop so other sessions stay responsive
            data = await asyncio.get_running_loop().run_in_executor(None, thumbnail_jpeg, index, tile)
        except LookalikeError as exc:
            self.set_status(404)
            self.write(str(exc))
            return
        self.set_header("Content-Type", "image/jpeg")
        self.set_header("Cache-Control", "public, max-age=86400")
        self.write(data)


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


def build_app(catalog: Catalog) -> pn.template.BaseTemplate:
    """The layout of one session (called by Panel for every new browser page)."""
    params = session_params()
    name = params.get("index") if params.get("index") in catalog else catalog.default
    state = ExplorerState(index=catalog[name].index, index_name=name)
    state.apply_url_params(params)  # a shared link reproduces its search

    show_hirise = pn.widgets.Checkbox(name="HiRISE coverage (Mars)", value=True)

    def map_for(index_name: str):
        return MapView(state, catalog[index_name], show_hirise).panel()

    def controls_for(index_name: str):
        return controls(state, catalog, show_hirise)

    # keep the address bar in step with the search, so copying it shares the search
    location = pn.state.location

    def sync_url(*_) -> None:
        if location is not None:
            location.search = state.url_query()

    state.param.watch(sync_url, ["hits", "error", "positives", "negatives"])
    sync_url()

    template = pn.template.FastListTemplate(
        title="Lookalike: click a planet, see its lookalikes", theme="dark",
        sidebar=[pn.panel(pn.bind(controls_for, state.param.index_name))],
        main=[pn.Column(pn.panel(pn.bind(map_for, state.param.index_name)), status_pane(state),
                        results_panel(state), sizing_mode="stretch_width")],
        sidebar_width=330, raw_css=[CSS], accent="#d2691e")
    return template


def serve(paths: list[Path | str], port: int = 5006, show: bool = False,
          address: str | None = None, threaded: bool = False, **kwargs):
    """Serve the explorer on the indexes at ``paths`` (the first is the default).

    With ``threaded`` the server runs in a background thread and is returned (call ``.stop()``);
    otherwise this blocks until interrupted.
    """
    catalog = Catalog(paths)
    pn.extension(notifications=False)
    hv.extension("bokeh", logo=False)
    pn.config.nthreads = THREADS
    for entry in catalog.entries.values():  # warm up: decode the source image before the first user
        try:
            from indexer.thumbnails import index_source_image

            index_source_image(entry.index)
        except LookalikeError as exc:
            log.warning("%s: %s", entry.name, exc)
    kwargs.setdefault("websocket_origin", [f"localhost:{port}", f"127.0.0.1:{port}"]
                      + ([f"{address}:{port}"] if address else []))
    return pn.serve(lambda: build_app(catalog), port=port, show=show, address=address,
                    title="Lookalike", threaded=threaded,
                    extra_patterns=[(r"/thumb/([^/]+)/(.+)\.jpg", ThumbnailHandler, dict(catalog=catalog))],
                    **kwargs)
