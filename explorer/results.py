"""The results: one page of hits as thumbnails, and the pager above them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pandas as pd
import panel as pn
import param
from panel.custom import JSComponent

from lookalike.explorer.page_text import text_block
from lookalike.explorer.state import ExplorerState

STATIC = Path(__file__).parent / "static"


class ThumbnailGrid(JSComponent):
    """One page of hits as thumbnails; a click focuses a tile, + / − mark it as an example.

    Each card carries ``data-tile-id``, ``data-rank``, ``data-time``, ``data-lon`` and
    ``data-lat`` so tests and scripts can read the results off the page.
    """

    items = param.List(default=[], doc="dicts: tile_id, rank, distance, src, time, lon, lat, mark")
    selected = param.String(default="", doc="tile id shown highlighted")

    # Panel reads the module and the stylesheet from these files (the package ships them)
    _esm = STATIC / "thumbnail_grid.js"
    # the text itself: a path is served as a URL of this machine's folders, which 404s
    _stylesheets = [(STATIC / "thumbnail_grid.css").read_text(encoding="utf-8")]

    def __init__(self, on_action=None, **params):
        super().__init__(**params)
        self._on_action = on_action

    def _handle_msg(self, msg) -> None:
        if self._on_action is not None and isinstance(msg, dict):
            self._on_action(str(msg.get("action", "")), str(msg.get("tile_id", "")))


def thumbnail_url(index_name: str, tile_id: str) -> str:
    # relative, so the app also works behind a path prefix
    return f"thumb/{quote(index_name, safe='')}/{quote(tile_id, safe='')}.jpg"


def thumbnail_items(
    state: ExplorerState,
    hits: pd.DataFrame | None,
    page: int,
    positives: list[str],
    negatives: list[str],
    inline=None,
) -> list[dict]:
    """The cards of the current page.

    ``inline``, when given, maps the page's tile rows to {tile id: image data URI} for the
    thumbnails it has at hand; the others are loaded by the browser from the /thumb route.
    """
    if hits is None or len(hits) == 0:
        return []
    rows = hits.iloc[page * state.page_size : (page + 1) * state.page_size]
    embedded = inline(rows) if inline is not None else {}
    times = rows["time"].tolist() if "time" in rows else [None] * len(rows)
    items = []
    # columns, not records: a record of every column of the tile table costs more than the page
    for tile_id, rank, distance, t, lon, lat in zip(
        rows["tile_id"].astype(str).tolist(),
        rows["rank"].tolist(),
        rows["distance"].tolist(),
        times,
        rows["lon"].to_numpy(float).tolist(),
        rows["lat"].to_numpy(float).tolist(),
    ):
        items.append(
            dict(
                tile_id=tile_id,
                rank=int(rank),
                distance=int(distance),
                src=embedded.get(tile_id) or thumbnail_url(state.index_name, tile_id),
                time="" if t is None or pd.isna(t) else pd.Timestamp(t).isoformat(),
                lon=round(lon, 5),
                lat=round(lat, 5),
                mark="positive" if tile_id in positives else "negative" if tile_id in negatives else "",
            )
        )
    return items


def page_caption(state: ExplorerState, hits, page) -> str:
    """The pager's caption: which hits the page shows."""
    if hits is None or len(hits) == 0:
        return ""
    first = page * state.page_size + 1
    last = min(len(hits), (page + 1) * state.page_size)
    return f"Hits {first}–{last} of {len(hits)} · page {page + 1} of {state.n_pages}"


def results_panel(state: ExplorerState, inline=None) -> pn.Column:
    """Hit count, pager and the thumbnail grid (``inline``: see ``thumbnail_items``)."""

    def on_action(action: str, tile_id: str) -> None:
        if action == "focus":
            state.focus_tile = tile_id
        elif action in ("positive", "negative"):
            state.mark(tile_id, action)

    grid = ThumbnailGrid(
        on_action=on_action,
        selected=state.param.focus_tile,
        items=pn.bind(
            thumbnail_items,
            state,
            state.param.hits,
            state.param.page,
            state.param.positives,
            state.param.negatives,
            inline=inline,
        ),
        sizing_mode="stretch_width",
    )
    prev_page = pn.widgets.Button(
        name="◀ Previous", width=110, disabled=pn.bind(lambda p: p <= 0, state.param.page)
    )
    next_page = pn.widgets.Button(
        name="Next ▶",
        width=110,
        disabled=pn.bind(
            lambda h, p: h is None or p >= state.n_pages - 1, state.param.hits, state.param.page
        ),
    )
    prev_page.on_click(lambda _: state.param.update(page=max(0, state.page - 1)))
    next_page.on_click(lambda _: state.param.update(page=min(state.n_pages - 1, state.page + 1)))

    # always shown (disabled without hits): a pager appearing with the first results made the
    # browser lay the whole page out again, a third of a second of the first click
    info = text_block(
        pn.bind(page_caption, state, state.param.hits, state.param.page),
        css_classes=["page-info"],
        margin=(12, 10),
    )
    pager = pn.Row(prev_page, next_page, info)
    return pn.Column(pager, grid, sizing_mode="stretch_width")
