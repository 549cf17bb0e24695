"""Column data of the map's glyph layers (hit markers, outlines and density, landmark boxes, the
scenes of the body's collections, outlines of the query, examples and focus, the typed bbox,
regions) for a session's state, in a map projection.

Plain data for Bokeh data sources, no models: ``map_view.MapView`` replaces its sources' data
with what ``LayerData.all`` returns whenever the state changes.
"""

from __future__ import annotations

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.explorer import basemap
from lookalike.explorer.acquisitions import Acquisition, acquisitions
from lookalike.explorer.collection_choice import drawn_for
from lookalike.explorer.map_style import COLLECTION_COLORS, DENSITY_COLORS, HIT_COLORS, LANDMARK_COLORS
from lookalike.explorer.projection import MapProjection
from lookalike.explorer.state import ExplorerState

LANDMARK_MAX_DRAWN = 5000  # the most confident first, when more are visible


class LayerData:
    """The glyph layers' data of one map: ``state`` in ``projection``."""

    def __init__(self, state: ExplorerState, projection: MapProjection, base: str | None = None) -> None:
        self.state, self.projection, self.base = state, projection, base
        self._cells: tuple = (None, ((0.0, 0.0, 1.0, 1.0), 1, 1))

    @property
    def density_cells(self) -> tuple[tuple[float, float, float, float], int, int]:
        """The hit density grid of the collection searched (made again when it changes)."""
        index = self.state.index
        if index is not None and self._cells[0] is not index:
            self._cells = (index, self.projection.density_cells(index.sample()))
        return self._cells[1]

    def all(self) -> dict[str, dict]:
        """Column data of each glyph layer for the current state, by layer name."""
        state = self.state
        page = state.page_hits()
        return {
            "hits": self.hits(),
            "density": self.density(),
            "landmarks": self.landmarks(),
            "bbox": self.bbox(),
            "regions": self.regions(),
            "hit_outlines": self.outlines(page["tile_id"].astype(str).tolist() if len(page) else []),
            "collections": self.collections(),
            "collection_markers": self.collection_markers(),
            "query": self.outlines([state.query_tile]),
            "positives": self.outlines(state.positives),
            "negatives": self.outlines(state.negatives),
            "focus": self.outlines([state.focus_tile]),
        }

    def _drawn_acquisitions(self) -> list[tuple[str, Acquisition]]:
        """(collection, acquisition) drawn now: one per place of each collection switched on."""
        out = []
        for name in self.state.collections:
            if name == self.base or name not in self.state.collections_on:
                continue
            acqs = acquisitions(self.state.collections[name])
            drawn = drawn_for(self.state, name)
            out += [(name, a) for a in acqs if drawn is None or a.source in drawn]
        return out

    def collections(self) -> dict:
        """Outlines of the scenes of the collections switched on, coloured by collection, with the
        collection, scene and date on hover."""
        drawn = [
            (n, a)
            for n, a in self._drawn_acquisitions()
            if self.projection.visible(np.array([a.bounds[1] + a.bounds[3]]) / 2)[0]
        ]
        names = list(self.state.collections)
        shape = self.projection.box_columns(*([a.bounds[i] for _, a in drawn] for i in range(4)))
        return {
            **shape,
            "collection": [self.state.collection_labels.get(n, n) for n, _ in drawn],
            "scene": [a.source for _, a in drawn],
            "date": [a.date or "undated" for _, a in drawn],
            "color": [COLLECTION_COLORS[names.index(n) % len(COLLECTION_COLORS)] for n, _ in drawn],
        }

    def collection_markers(self) -> dict:
        """A marker at each drawn scene's centre: a scene is a few pixels at the planet's zoom."""
        columns = self.collections()
        if self.projection.box_glyph[0] == "quad":
            x = (np.asarray(columns["left"]) + np.asarray(columns["right"])) / 2
            y = (np.asarray(columns["bottom"]) + np.asarray(columns["top"])) / 2
        else:
            x = np.array([np.mean(xs) for xs in columns["xs"]])
            y = np.array([np.mean(ys) for ys in columns["ys"]])
        return {"x": x, "y": y, **{k: columns[k] for k in ("collection", "scene", "date", "color")}}

    def hits(self) -> dict:
        """Hit markers, coloured by rank: the current page drawn last, on top."""
        state, projection = self.state, self.projection
        hits = state.hits
        if hits is None or len(hits) == 0:
            return {"x": np.zeros(0), "y": np.zeros(0), "color": []}
        rank = hits["rank"].to_numpy()
        on_page = (rank > state.page * state.page_size) & (rank <= (state.page + 1) * state.page_size)
        color = np.where(
            on_page, HIT_COLORS[2], np.where(rank <= max(10, len(hits) // 5), HIT_COLORS[1], HIT_COLORS[0])
        )
        order = np.argsort(on_page, kind="stable")
        order = order[projection.visible(hits["lat"].to_numpy(float)[order])]
        x, y = projection.forward(hits["lon"].to_numpy(float)[order], hits["lat"].to_numpy(float)[order])
        return {"x": x, "y": y, "color": color[order].tolist()}

    def outlines(self, tile_ids: list[str]) -> dict:
        """Footprint rings of these tiles (unknown ids and '' left out)."""
        index = self.state.index
        rows = []
        for tile_id in tile_ids:
            if tile_id:
                try:
                    rows.append(index.row_of(tile_id))
                except LookalikeError:
                    pass
        if not rows or "lon0" not in index.table:  # nothing to outline, or no footprints to draw
            return {"xs": [], "ys": []}
        tiles = index.tile_rows(np.asarray(rows, np.int64))
        lons = tiles[[f"lon{i}" for i in range(4)]].to_numpy(float)
        lats = tiles[[f"lat{i}" for i in range(4)]].to_numpy(float)
        seen = self.projection.visible(tiles["lat"].to_numpy(float))
        rings = self.projection.footprint_rings(lons[seen], lats[seen], tiles["lon"].to_numpy(float)[seen])
        return {"xs": [r[:, 0] for r in rings], "ys": [r[:, 1] for r in rings]}

    def density(self) -> dict:
        """The hit density image (transparent without hits)."""
        bounds, nx, ny = self.density_cells
        hits = self.state.hits
        lon = np.zeros(0) if hits is None else hits["lon"].to_numpy(float)
        lat = np.zeros(0) if hits is None else hits["lat"].to_numpy(float)
        seen = self.projection.visible(lat)
        x, y = self.projection.forward(lon[seen], lat[seen])
        return basemap.density_image(x, y, bounds, nx, ny, DENSITY_COLORS)

    def bbox(self) -> dict:
        """The bbox typed in the sidebar, drawn like a drawn box (across 180° it runs past the
        edge; in a polar map, a ring of its edges)."""
        bbox = self.state.bbox
        if self.projection.polar:
            return self.projection.region_rings([bbox] if bbox else [])
        if not bbox:
            return self.projection.box_columns([], [], [], [])
        return self.projection.box_columns(*([float(v)] for v in bbox))

    def regions(self) -> dict:
        """The drawn regions (held in lon/lat by the state) as rings, where the drawing layers
        cannot show them themselves (a polar map)."""
        if self.projection.lonlat:
            return {"xs": [], "ys": []}
        return self.projection.region_rings(list(self.state.boxes), list(self.state.polygons))

    def landmarks(self) -> dict:
        """Boxes of the visible landmarks, coloured by class, for the hoverable box layer."""
        lm = self.state.visible_landmarks()
        lm = lm[self.projection.visible(lm["lat"].to_numpy(float))]
        if len(lm) > LANDMARK_MAX_DRAWN:
            lm = lm.nlargest(LANDMARK_MAX_DRAWN, "posterior")
        classes = self.state.landmark_class_names()
        colors = {c: LANDMARK_COLORS[i % len(LANDMARK_COLORS)] for i, c in enumerate(classes)}
        scene = lm["scene"].astype(str).tolist() if "scene" in lm else [""] * len(lm)
        shape = self.projection.box_columns(lm["lon_min"], lm["lat_min"], lm["lon_max"], lm["lat_max"])
        return {
            **shape,
            "label": lm["label"].astype(str).tolist(),
            "posterior": lm["posterior"].to_numpy(float),
            "scene": scene,
            "color": [colors.get(c, "#ffffff") for c in lm["label"].astype(str)],
        }
