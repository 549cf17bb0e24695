"""The explorer in a notebook: ``Explorer(paths)`` is the page ``lookalike serve`` makes, for
the indexes at ``paths``, shown in JupyterLab after ``pn.extension()`` and servable with
``panel serve``.

A served page loads thumbnails and basemap images from the server's own routes
(``explorer.handlers``); a notebook's server has no such routes, and a kernel cannot add any.
So here both travel inside the page: each page of thumbnails as JPEG data URIs in the results,
and each basemap image as a data URI that the kernel renders when the map reports a new view
(``basemap_requests.BasemapImages`` with its image). The same holds under ``panel serve``.
"""

from __future__ import annotations

from pathlib import Path

import holoviews as hv
import pandas as pd
import panel as pn

from lookalike.explorer.page import (
    SIDEBAR_WIDTH,
    page_parts,
    page_template,
    prefetch_thumbnails,
    session_state,
)
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.state import ExplorerState
from lookalike.explorer.thumbnail_renderer import THUMBNAILS

THUMBNAIL_WAIT_S = 30.0  # a notebook has no thumbnail route: wait for every thumbnail of a page
BACKGROUND = "#181818"  # the served page's dark background, also in a light notebook


class Explorer(pn.viewable.Viewer):
    """The explorer over the indexes at ``paths`` (the first shown first, or ``index`` by name).

    Display it in a notebook (after ``pn.extension()``), or call ``.servable()`` in a script or
    notebook served by ``panel serve``. ``state`` is the session's ``ExplorerState``: set its
    parameters or call its methods (``click``, ``mark``, ``undo``...) and the page follows.
    """

    def __init__(self, paths: list[str | Path] | str | Path, index: str | None = None, **params) -> None:
        super().__init__(**params)
        if "bokeh" not in hv.Store.renderers:  # the map's options need the plotting backend
            hv.extension("bokeh", logo=False)
        self.served = ServedIndexes([paths] if isinstance(paths, (str, Path)) else list(paths))
        self.state: ExplorerState = session_state(self.served, {"index": index} if index else {})
        prefetch_thumbnails(self.state)
        self._sidebar, self._main = page_parts(
            self.state, self.served, inline=self._thumbnails, inline_basemap=True
        )

    def _thumbnails(self, tiles: pd.DataFrame) -> dict[str, str]:
        if self.state.index is None:
            return {}
        return THUMBNAILS.data_uris(self.state.index, tiles, timeout=THUMBNAIL_WAIT_S)

    def __panel__(self) -> pn.Row:
        sidebar = pn.Column(self._sidebar, width=SIDEBAR_WIDTH)
        return pn.Row(
            sidebar,
            self._main,
            sizing_mode="stretch_width",
            styles={"background": BACKGROUND},
            css_classes=["lookalike-explorer"],
        )

    def servable(self, title: str | None = None, **kwargs) -> pn.template.BaseTemplate:
        """The whole page, as ``lookalike serve`` shows it, marked servable for ``panel serve``."""
        return page_template(self._sidebar, self._main).servable(title=title, **kwargs)

    # the Python side of the page --------------------------------------------------------
    def click(self, lon: float, lat: float) -> pd.DataFrame | None:
        """Search for the lookalikes of the tile at ``lon``, ``lat``, as a click on the map does;
        returns the hits (also shown on the page)."""
        self.state.click(float(lon), float(lat))
        return self.state.hits

    @property
    def hits(self) -> pd.DataFrame | None:
        """The hits of the last search (None before any)."""
        return self.state.hits
