"""One map per body in a real headless Chromium: collections drawn where they lie, zooming into a
scene's own pixels, a click searching the finest collection under it, true shape, and dates."""

from __future__ import annotations

import urllib.request
from io import BytesIO

import numpy as np
import pytest
from explorer_testkit import (
    FIGURE,
    MODEL,
    cards,
    click_map,
    map_point,
    open_app,
    screenshot,
    set_text,
    shadow_text,
    status_text,
    wait_until,
    zoom_map,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _scene(scene_indexes, collection: str, source: str) -> tuple[float, float, float, float]:
    from lookalike.explorer.acquisitions import acquisitions
    from lookalike.indexer.store import open_index

    return next(a.bounds for a in acquisitions(open_index(scene_indexes[collection])) if a.source == source)


def _detail(page) -> dict:
    return page.evaluate(f"""() => {{ const d = ({MODEL})('basemap_detail').data_source.data;
        return {{url: d.url[0], x: d.x[0], y: d.y[0], w: d.w[0], h: d.h[0]}}; }}""")


def _select(page, label: str):
    return page.locator(".bk-input-group", has_text=label).locator("select").first


def _click_centre_until_searching(page, collection: str, attempts: int = 5) -> None:
    """Click the map's centre until a search of ``collection`` starts: a click before a rebuilt
    map's handlers are wired is lost."""
    for attempt in range(attempts):
        page.mouse.click(*map_point(page, 0.5, 0.5))
        try:
            wait_until(lambda: f"Searching {collection}" in status_text(page), timeout=6, what="the search")
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def _open_mars_scene(page, url, scene_indexes, source="no_change_before"):
    open_app(page, url)
    bounds = _scene(scene_indexes, "hirise_cubes", source)
    zoom_map(page, bounds)
    wait_until(
        lambda: "hirise_cubes~" in _detail(page)["url"] and _detail(page)["w"] < 0.1,
        timeout=30,
        what="the detail picture of the scene",
    )
    return bounds


def test_body_selector_lists_bodies_only(page, collections_url):
    open_app(page, collections_url)
    options = _select(page, "Body").locator("option").all_inner_texts()
    assert options == ["Mars", "Earth"]
    collections = page.locator(".collections input[type=checkbox]").count()
    assert collections == 3  # the mosaic zones, the cubes and the colour scene: one switch each


def test_zooming_into_the_cube_shows_its_pixels(page, collections_url, scene_indexes):
    from PIL import Image

    west, south, east, north = _open_mars_scene(page, collections_url, scene_indexes)
    detail = _detail(page)
    assert detail["x"] <= west and detail["x"] + detail["w"] >= east
    assert detail["y"] <= south and detail["y"] + detail["h"] >= north
    with urllib.request.urlopen(collections_url + detail["url"], timeout=60) as resp:
        picture = np.asarray(Image.open(BytesIO(resp.read())).convert("L"), float)
    h, w = picture.shape
    cols = slice(
        int((west - detail["x"]) / detail["w"] * w) + 2, int((east - detail["x"]) / detail["w"] * w) - 2
    )
    rows = slice(
        int((detail["y"] + detail["h"] - north) / detail["h"] * h) + 2,
        int((detail["y"] + detail["h"] - south) / detail["h"] * h) - 2,
    )
    scene = picture[rows, cols]
    assert scene.size > 10_000 and scene.std() > 8  # real terrain at full resolution, not a blur
    screenshot(page, "collections-cube")


def test_a_click_in_a_scene_searches_its_collection_and_tiles_are_square(
    page, collections_url, scene_indexes
):
    _open_mars_scene(page, collections_url, scene_indexes)
    page.wait_for_timeout(1000)  # the view settles to its true shape
    found = click_map(page, 0.5, 0.5)
    assert "Searching hirise_cubes" in status_text(page)
    assert all(
        c["tileId"].split(":")[0]
        in {
            "no_change_before",
            "no_change_after",
            "ESP_014038_1415_RED0.30421_33069.boulder_shift.before",
            "ESP_031022_1415_RED1.34517_37165.boulder_shift.after",
        }
        for c in found
    )
    wait_until(
        lambda: page.evaluate(f"() => ({MODEL})('query').data_source.data.xs.length"),
        what="the query tile's outline",
    )
    size = page.evaluate(f"""() => {{ const f = ({FIGURE})(), d = ({MODEL})('query').data_source.data;
        const xs = Array.from(d.xs[0]), ys = Array.from(d.ys[0]);
        const px = f.inner_width / (f.x_range.end - f.x_range.start);
        const py = f.inner_height / (f.y_range.end - f.y_range.start);
        return [(Math.max(...xs) - Math.min(...xs)) * px, (Math.max(...ys) - Math.min(...ys)) * py]; }}""")
    assert size[0] > 20 and size[0] / size[1] == pytest.approx(1.0, rel=0.05)
    # the hits show on the map too
    assert page.evaluate(f"() => ({MODEL})('hit_outlines').data_source.data.xs.length") > 0


def test_the_hirise_pair_resolves_its_two_dates(page, collections_url, scene_indexes):
    _open_mars_scene(page, collections_url, scene_indexes)
    select = _select(page, "hirise_cubes: date drawn")
    options = select.locator("option").all_inner_texts()
    assert {"2009-02-18", "2010-12-23"} <= set(options)
    assert "no_change_after" in _detail(page)["url"]  # the latest by default
    select.select_option("2009-02-18")
    wait_until(
        lambda: "no_change_before" in _detail(page)["url"] and "no_change_after" not in _detail(page)["url"],
        what="the earlier acquisition drawn",
    )


def test_naip_dates_filter(page, collections_url, scene_indexes):
    open_app(page, collections_url + "?body=earth")  # a link to the Earth's map
    assert _select(page, "Body").locator("option:checked").inner_text() == "Earth"
    wait_until(lambda: page.locator(".scene-date").count() > 0, what="the Earth map's collections")
    zoom_map(page, _scene(scene_indexes, "naip", "m_4709963_se_14_1_20150926"), margin=0.0)
    page.wait_for_timeout(1000)
    _click_centre_until_searching(page, "naip")
    wait_until(lambda: cards(page), timeout=30, what="the NAIP hits")
    set_text(page, "From date", "2015-01-01")
    set_text(page, "To date", "2015-12-31")
    wait_until(
        lambda: cards(page) and all(c["time"].startswith("2015") for c in cards(page)), what="only 2015 hits"
    )
    wait_until(
        lambda: "20150926" in _detail(page)["url"] and "20200831" not in _detail(page)["url"],
        what="the 2015 acquisition drawn",
    )
    assert "dates 2015-01-01 to 2015-12-31" in shadow_text(page, ".status")


def _landmark_boxes(page) -> dict:
    return page.evaluate(f"""() => {{ const d = ({MODEL})('landmarks').data_source.data;
        const get = k => Array.from(d[k] ?? d.get(k));
        return {{label: get('label'), left: get('left'), right: get('right'), bottom: get('bottom'),
                 top: get('top')}}; }}""")


def test_landmark_boxes_appear_over_the_hirise_cog(page, collections_url, scene_indexes):
    """The COG's catalogue (found at the classifier's ground scale) is drawn over the scene once a
    click there searches its collection; the confidence slider and class facet act on it."""
    from lookalike.indexer.store import open_index

    catalogue = open_index(scene_indexes["hirise5m"]).landmarks
    assert catalogue is not None and len(catalogue)
    open_app(page, collections_url)
    west, south, east, north = _scene(scene_indexes, "hirise5m", "cog_hirise_mars")
    zoom_map(page, (west, south, east, north), margin=0.05)
    page.wait_for_timeout(1000)
    _click_centre_until_searching(page, "hirise5m")
    shown = catalogue[catalogue["posterior"] >= 0.5]  # the slider's default
    wait_until(lambda: len(_landmark_boxes(page)["label"]) == len(shown), what="the COG's landmark boxes")
    boxes = _landmark_boxes(page)
    assert sorted(boxes["label"]) == sorted(shown["label"])
    pad = 0.01  # degrees: the scene's extent and the boxes are both outlines densified on the sphere
    assert min(boxes["left"]) >= west - pad and max(boxes["right"]) <= east + pad
    assert min(boxes["bottom"]) >= south - pad and max(boxes["top"]) <= north + pad
    screenshot(page, "collections-cog-landmarks")
