"""Pure map-layer logic: which switches and legend rows a map has, zone label placement, density."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from lookalike.explorer.basemap import LABEL_MIN_PX, density_image, zone_label_positions
from lookalike.explorer.legend import legend_entries, legend_html
from lookalike.explorer.map_style import HIT_COLORS, LANDMARK_COLORS
from lookalike.explorer.state import MAP_LAYERS, available_layers

ALL_ZONES = [f"{n}{h}" for n in range(1, 61) for h in "NS"]


def test_available_layers():
    assert available_layers(True, True) == list(MAP_LAYERS)
    assert "hirise" not in available_layers(False, True)
    assert "landmarks" not in available_layers(True, False)
    assert available_layers(False, False) == ["basemap", "zones", "density", "hits"]


def test_legend_only_for_layers_the_map_has():
    earth = legend_entries(available_layers(False, False), ["hits"], [])
    layers = {row["layer"] for row in earth}
    assert "hirise" not in layers and "landmarks" not in layers
    assert [row["colors"][0] for row in earth if row["layer"] == "hits"] == HIT_COLORS[::-1]
    assert any(row["off"] for row in earth if row["layer"] == "density")
    assert not any(row["off"] for row in earth if row["layer"] in ("hits", ""))

    mars = legend_entries(available_layers(True, True), ["hits", "landmarks"], ["crater", "dune"])
    boxes = [row for row in mars if row["layer"] == "landmarks"]
    assert [row["colors"][0] for row in boxes] == LANDMARK_COLORS[:2]
    assert [row["text"] for row in boxes] == ["landmark: crater", "landmark: dune"]
    assert any(row["layer"] == "hirise" for row in mars)


def test_legend_escapes_class_names():
    text = legend_html(legend_entries(["landmarks"], ["landmarks"], ["<img src=x onerror=alert(1)>"]))
    assert "<img" not in text and "&lt;img src=x" in text


def _assert_apart(labels, x_range, width_px):
    px = width_px / (x_range[1] - x_range[0])
    for row in {lat for _, lat, _ in labels}:
        xs = sorted(lon for lon, lat, _ in labels if lat == row)
        assert all((b - a) * px >= LABEL_MIN_PX for a, b in pairwise(xs))


@pytest.mark.parametrize("x_range", [(-180, 180), (-100, 100), (-30, 30), (-7, 8), (2.5, 3.5), (170, 180)])
@pytest.mark.parametrize("width_px", [300, 800, 1600])
def test_zone_labels_never_overlap(x_range, width_px):
    labels = zone_label_positions(ALL_ZONES, x_range, (-60, 70), width_px, 400)
    assert labels  # something is always labelled
    _assert_apart(labels, x_range, width_px)
    assert all(x_range[0] <= lon <= x_range[1] and -60 <= lat <= 70 for lon, lat, _ in labels)
    tops = {lat for _, lat, label in labels if label.endswith("N")}
    bottoms = {lat for _, lat, label in labels if label.endswith("S")}
    assert len(tops) == 1 and len(bottoms) == 1 and min(tops) > 0 > max(bottoms)


def test_zone_labels_follow_the_view():
    # zoomed in every zone is labelled; zoomed out only some, and the same ones while panning
    near = zone_label_positions(ALL_ZONES, (-20, 20), (10, 50), 1000, 500)
    assert {label for *_, label in near} == {"27N", "28N", "29N", "30N", "31N", "32N", "33N", "34N"}
    far = {label for *_, label in zone_label_positions(ALL_ZONES, (-180, 180), (10, 50), 800, 400)}
    panned = {label for *_, label in zone_label_positions(ALL_ZONES, (-174, 186), (10, 50), 800, 400)}
    assert 5 < len(far) < 60 and far - {"1N", "60N"} == panned - {"1N", "60N"}
    # a view of the north only has no southern labels; a zone inside the view is labelled mid-view
    assert zone_label_positions(["31N", "31S"], (2, 4), (10, 20), 800, 400) == [
        (3.0, pytest.approx(20 - 14 * 10 / 400), "31N")
    ]
    assert zone_label_positions(["31N"], (0, 1), (1, 1), 800, 400) == []  # an empty view


def test_density_image_is_transparent_without_hits():
    empty = density_image(np.zeros(0), np.zeros(0), (0, 0, 10, 10), 5, 5, ("#000000", "#ffffff"))
    assert (empty["image"][0] >> 24 == 0).all()
    img = density_image(
        np.array([1.0, 1.0, 8.0]), np.array([1.0, 1.0, 8.0]), (0, 0, 10, 10), 5, 5, ("#000000", "#ffffff")
    )["image"][0]
    alpha = img >> 24
    assert alpha[0, 0] > alpha[4, 4] > 0 and alpha[2, 4] == 0  # more where more hits


def test_frame_size_is_unknown_until_a_browser_lays_the_map_out():
    from bokeh.plotting import figure

    from lookalike.explorer.map_view import FrameSize

    size = FrameSize()
    assert size() == (None, None)  # no figure yet
    size.figure = figure()
    assert size() == (None, None)  # a figure no browser has drawn (the warm-up's, a new page's)


def test_hirise_footprints_in_a_polar_view():
    import pandas as pd

    from lookalike.explorer.basemap import hirise_rectangles
    from lookalike.explorer.projection import MapProjection

    table = pd.DataFrame(
        {
            "west": [10.0, 10.0, 100.0, 179.0],
            "east": [12.0, 12.0, 101.0, 181.0],
            "south": [85.0, 20.0, -86.0, 70.0],
            "north": [86.0, 21.0, -85.0, 71.0],
            "observation_id": ["A", "B", "C", "D"],
            "date": ["2010-01-01"] * 4,
        }
    )
    north = MapProjection("north")
    boxes = hirise_rectangles(table, north).data
    assert list(boxes["observation_id"]) == ["A", "D"]  # the north cap's footprints only
    for row, (lon, lat) in zip(boxes.itertuples(), [(11.0, 85.5), (180.0, 70.5)]):
        x, y = north.forward(lon, lat)
        assert row.x0 < x < row.x1 and row.y0 < y < row.y1  # the box holds the footprint's middle
        assert row.x1 - row.x0 < 300e3 and row.y1 - row.y0 < 300e3  # a small box, not a ring
    assert list(hirise_rectangles(table, MapProjection("south")).data["observation_id"]) == ["C"]
    assert [d.name for d in hirise_rectangles(table).kdims] == ["west", "south", "east", "north"]


@pytest.mark.parametrize("view", ["north", "south"])
@pytest.mark.parametrize("zoom", [1.0, 0.4, 0.1, 0.02])
@pytest.mark.parametrize("width_px", [300, 600])
def test_polar_zone_labels_never_overlap(view, zoom, width_px):
    from lookalike.explorer.basemap import polar_zone_label_positions
    from lookalike.explorer.projection import MapProjection

    projection = MapProjection(view)
    x0, y0, x1, y1 = projection.extent
    # a window of the view around a place at 75 degrees from the equator, or the whole view
    cx, cy = (0.0, 0.0) if zoom == 1.0 else projection.forward(33.0, 75.0 * projection.sign)
    half = (x1 - x0) / 2 * zoom
    x_range, y_range = (float(cx) - half, float(cx) + half), (float(cy) - half, float(cy) + half)
    labels = polar_zone_label_positions(
        ALL_ZONES + ["UPSN", "UPSS"], projection, x_range, y_range, width_px, width_px
    )
    assert labels  # something is always labelled
    px = width_px / (2 * half)
    for i, (xa, ya, _) in enumerate(labels):
        assert x_range[0] <= xa <= x_range[1] and y_range[0] <= ya <= y_range[1]
        assert all(np.hypot(xa - xb, ya - yb) * px >= LABEL_MIN_PX for xb, yb, _ in labels[i + 1 :])
    hemi = "N" if view == "north" else "S"
    assert all(label.endswith(hemi) for _, _, label in labels)
    if zoom == 1.0:
        assert ("UPS" + hemi) in {label for _, _, label in labels} and len(labels) > 8
    else:  # zoomed in: the zone under the middle of the view is labelled (33 E is in zone 36)
        assert f"36{hemi}" in {label for _, _, label in labels}
