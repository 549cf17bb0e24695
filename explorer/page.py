"""The explorer's page for one session: the sidebar, the map, the status and the results, over
one ``ExplorerState``.

``build_page`` makes the page ``lookalike serve`` sends to every new browser page;
``page_parts`` its two columns, which a notebook (``notebook.Explorer``) shows too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import panel as pn

from lookalike.explorer import panel_internals
from lookalike.explorer.collection_controls import enter_body
from lookalike.explorer.map_view import MapView
from lookalike.explorer.results import results_panel
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.sessions import release_memory, session_params
from lookalike.explorer.sidebar import controls
from lookalike.explorer.state import ExplorerState
from lookalike.explorer.status import status_pane
from lookalike.explorer.thumbnail_renderer import THUMBNAILS

log = logging.getLogger(__name__)

THEME = "dark"
TITLE = "Lookalike: click a planet, see its lookalikes"
SIDEBAR_WIDTH = 330
ACCENT = "#d2691e"
# the system's own fonts: the theme's default pulls Open Sans from the internet, which an offline
# or firewalled page waits for and never gets
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def session_state(served: ServedIndexes, params: dict[str, str]) -> ExplorerState:
    """A new session's state: the link's body and collection (or the first) and the search the
    link holds."""
    name = params.get("index") if params.get("index") in served else None
    body = params.get("body") if params.get("body") in served.bodies else None
    body = body or (served[name].body if name else served.default_body)
    state = ExplorerState()
    enter_body(state, served, body, name)
    try:
        state.apply_url_params(params)  # a shared link reproduces its search
    except Exception:  # a link must never cost the page: log the bug, open the app as it is
        log.exception("applying a link's parameters failed")
        state.error = "The link's search could not be applied; ignoring it."
    if params.get("index") and params["index"] not in served and not state.error:
        state.error = f"The link's index is not served here; showing {served.body(state.body).label}."
    return state


def page_parts(
    state: ExplorerState, served: ServedIndexes, inline: Callable | None, inline_basemap: bool = False
) -> tuple[pn.viewable.Viewable, pn.Column]:
    """The sidebar and the main column (map, status, results) of one session's page.

    ``inline`` embeds thumbnails in the results (``results.thumbnail_items``); with
    ``inline_basemap`` the basemap images travel inside the page too (no server routes).
    """
    # widgets take their design's theme from the session's config when they are made: without
    # this, the sidebar rebuilt on a change of index would get light-theme (dark) labels
    pn.config.theme = THEME

    # a new map for another body or another projection of it; a new sidebar for another
    # collection searched too (its zones, dates and landmark classes)
    def map_for(body: str, projection: str) -> pn.viewable.Viewable:
        return MapView(state, served, body, inline_basemap=inline_basemap).panel()

    def controls_for(body: str, index_name: str, projection: str) -> pn.Column:
        return controls(state, served)

    sidebar = pn.panel(
        pn.bind(controls_for, state.param.body, state.param.index_name, state.param.projection)
    )
    main = pn.Column(
        pn.panel(pn.bind(map_for, state.param.body, state.param.projection)),
        status_pane(state),
        results_panel(state, inline=inline),
        sizing_mode="stretch_width",
    )
    return sidebar, main


def prefetch_thumbnails(state: ExplorerState) -> None:
    """Queue the current page's thumbnails for rendering whenever the hits or the page change."""

    def prefetch(*_) -> None:
        if state.index is not None and state.hits is not None and len(state.hits):
            THUMBNAILS.prefetch(state.index, state.page_hits())

    state.param.watch(prefetch, ["hits", "page"])
    prefetch()


def page_template(sidebar: pn.viewable.Viewable, main: pn.viewable.Viewable) -> pn.template.BaseTemplate:
    """The page around the two columns."""
    panel_internals.without_web_fonts()
    template = pn.template.FastListTemplate(
        title=TITLE,
        theme=THEME,
        sidebar=[sidebar],
        main=[main],
        sidebar_width=SIDEBAR_WIDTH,
        accent=ACCENT,
        # no busy spinner: it is a Panel HTML model, which makes the page load MathJax
        busy_indicator=None,
        font=FONT,
        font_url="",
    )
    panel_internals.without_mathjax(template)
    return template


def build_page(served: ServedIndexes) -> pn.template.BaseTemplate:
    """The page of one served session (called by Panel for every new browser page)."""
    state = session_state(served, session_params())
    # keep the address bar in step with the search, so copying it shares the search
    location = pn.state.location

    def sync_url(*_) -> None:
        if location is not None:
            location.search = state.url_query()

    state.param.watch(
        sync_url, ["hits", "error", "positives", "negatives", "projection", "body", "index_name"]
    )
    sync_url()
    prefetch_thumbnails(state)
    pn.state.on_session_destroyed(release_memory)

    def inline(tiles) -> dict[str, str]:
        return THUMBNAILS.data_uris(state.index, tiles) if state.index is not None else {}

    return page_template(*page_parts(state, served, inline))
