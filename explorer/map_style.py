"""The map's colours and line styles, shared by its layers (``map_view``) and its legend."""

from __future__ import annotations

HIT_COLORS = ["#ffe066", "#ff6b00", "#ff0040"]  # farther hit, among the nearest fifth, on the page
HIRISE_COLORS = ["#9fe0ff", "#2a8cff"]  # coverage: few to many images
HIRISE_FOOTPRINT_COLOR = "#7fd4ff"  # single footprints, drawn once few are in view
# one colour per landmark class, in the classifier's class order
LANDMARK_COLORS = [
    "#39cccc",
    "#b10dc9",
    "#2ecc40",
    "#f012be",
    "#ffffff",
    "#01ff70",
    "#7fdbff",
    "#aaaaaa",
    "#3d9970",
    "#85144b",
]  # none of the hit markers' yellow/orange/red
DENSITY_COLORS = ("#6a51a3", "#f2e6ff")  # few -> many hits, transparent where there are none
ZONE_COLOR = "#4da3ff"  # selected zones' shading (the grid itself is faint white)
# outlines of tiles and regions: colour, width, dash
OUTLINE_STYLES = {
    "query": ("#ff2d2d", 3, "solid"),
    "positives": ("#2ecc40", 2, "solid"),
    "negatives": ("#ff4136", 2, "dashed"),
    "focus": ("#00e5ff", 3, "solid"),
}
REGION_STYLE = dict(
    fill_alpha=0.1, fill_color="#ffffff", line_color="#ffffff", line_width=2, line_dash="dashed"
)
# one colour per collection of a body (scene outlines and markers), in the served order
COLLECTION_COLORS = ["#ffdc00", "#ff851b", "#7fdbff", "#f012be", "#2ecc40", "#ffffff"]
HIT_OUTLINE_COLOR = "#ff0040"  # footprints of the hits on the page of thumbnails shown
