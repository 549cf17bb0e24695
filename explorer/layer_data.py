"""Column data of the map's glyph layers (hit markers and density, landmark boxes, outlines of the
query, examples and focus, the typed bbox, regions) for a session's state, in a map projection.

Plain data for Bokeh data sources, no models: ``map_view.MapView`` replaces its sources' data
with what ``LayerData.all`` returns whenever the state changes.
"""

from __future__ import annotations

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.explorer import basemap
from lookalike.explorer.map_style import DENSITY_COLORS, HIT_COLORS, LANDMARK_COLORS
from lookalike.explorer.projection import MapProjection
from lookalike.explorer.state import ExplorerState

LANDMARK_MAX_DRAWN = 5000  # the most confident first, when more are visible


class LayerData:
    """The glyph layers' data of one map: ``state`` in ``projection``."""

    def __init__(self, state: ExplorerState, projection: MapProjection) -> None:
        self.state, self.projection = state, projection
        self.density_cells = (projection.density_cells(state.index.tiles) if state.index is not None
                              else ((0.0, 0.0, 1.0, 1.0), 1, 1))

    def all(self) -> dict[str, dict]:
        """Column data of each glyph layer for the current state, by layer name."""
        state = self.state
        return {"hits": self.hits(), "density": self.density(), "landmarks": self.landmarks(),
                "bbox": self.bbox(), "regions": self.regions(),
                "query": self.outlines([state.query_tile]), "positives": self.outlines(state.positives),
                "negatives": self.outlines(state.negatives), "focus": self.outlines([state.focus_tile])}

    def hits(self) -> dict:
        """Hit markers, coloured by rank: the current page drawn last, on top."""
        state, projection = self.state, self.projection
        hits = state.hits
        if hits is None or len(hits) == 0:
            return {"x": np.zeros(0), "y": np.zeros(0), "color": []}
        rank = hits["rank"].to_numpy()
        on_page = (rank > state.page * state.page_size) & (rank <= (state.page + 1) * state.page_size)
        color = np.where(on_page, HIT_COLORS[2], np.where(rank <= max(10, len(hits) // 5),
                                                          HIT_COLORS[1], HIT_COLORS[0]))
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
        if not rows or "lon0" not in index.tiles:  # nothing to outline, or no footprints to draw
            return {"xs": [], "ys": []}
        rows = np.asarray(rows, np.int64)
        lons = np.column_stack([index.column(f"lon{i}") for i in range(4)])[rows]
        lats = np.column_stack([index.column(f"lat{i}") for i in range(4)])[rows]
        seen = self.projection.visible(index.column("lat")[rows])
        rings = self.projection.footprint_rings(lons[seen], lats[seen], index.column("lon")[rows][seen])
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
        return {**shape, "label": lm["label"].astype(str).tolist(),
                "posterior": lm["posterior"].to_numpy(float),
                "scene": scene, "color": [colors.get(c, "#ffffff") for c in lm["label"].astype(str)]}
