"""The polar views in a real headless Chromium: a click at each pole of Mars and Earth finds the
tile there, and a box drawn across a pole filters the hits to the tiles inside it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from urllib.parse import parse_qs, urlparse

import pytest
import shapely
from explorer_testkit import (
    all_cards,
    cards,
    current_url,
    draw_box,
    map_point,
    open_app,
    screenshot,
    start_server,
    status_text,
    stop_server,
    wait_until,
    zone_labels_drawn,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def polar_url(explorer_env, tmp_path_factory):
    """A server of the polar caps of the Mars and Earth mosaics (UPSN and UPSS zones only)."""
    root = tmp_path_factory.mktemp("polar")
    paths = []
    for mosaic in ("mars_8k", "earth_8k"):
        out = root / f"{mosaic}_poles"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "lookalike",
                "index",
                mosaic,
                "--zones",
                "UPSN,UPSS",
                "--bits",
                "64",
                "--out",
                str(out),
            ],
            env=explorer_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        paths.append(out)
    server, url = start_server(paths, explorer_env)
    yield url
    stop_server(server)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the sidebar select labelled ``label`` and wait for the new map."""
    select = page.locator(".bk-input-group", has_text=label).locator("select").first
    select.select_option(label=option)
    wait_until(lambda: option in select.evaluate("s => s.options[s.selectedIndex].text"), what=option)
    page.wait_for_timeout(300)
    page.wait_for_function("() => Bokeh.documents[0].is_idle")
    canvas = page.locator(".map canvas").first
    canvas.wait_for(state="visible")
    if label == "Body":  # the sidebar is built again for the new body: Earth has no HiRISE layer
        mars = "mars" in option.lower()

        def switched() -> bool:
            return page.locator(".map-layers label", has_text="HiRISE").count() == mars

        try:
            wait_until(switched, what=f"the {option} sidebar")
        except AssertionError:  # a change sent while the document was busy can be lost: once more
            select.select_option(index=0 if select.evaluate("s => s.selectedIndex") else 1)
            page.wait_for_function("() => Bokeh.documents[0].is_idle")
            select.select_option(label=option)
            wait_until(switched, timeout=40, what=f"the {option} sidebar, asked for twice")
        page.wait_for_function("() => Bokeh.documents[0].is_idle")
    if label == "Map view":  # the new map is in place: a polar view is square, the globe 2:1
        polar = option != "Whole planet"
        wait_until(
            lambda: (
                (b := canvas.bounding_box()) and (abs(b["width"] - b["height"]) < 0.2 * b["width"]) == polar
            ),
            what=f"the {option} map",
        )


def glyph_rows(page, name: str) -> list[int]:
    """Rows of the data of each Bokeh renderer called ``name`` in the page (a map replaced by
    another view may linger in the document until it is collected)."""
    return page.evaluate(
        """name => [...Bokeh.documents[0].all_models]
        .filter(m => m.name === name && m.data_source)
        .map(m => m.data_source.data.xs.length)""",
        name,
    )


def click_pole(page, zone: str) -> list[dict]:
    """Click the middle of a polar view (the pole) until results for a tile of ``zone`` appear."""
    for _ in range(5):
        page.mouse.click(*map_point(page, 0.5, 0.5))
        try:
            return wait_until(
                lambda: (c := cards(page)) and f":{zone}:" in c[0]["tileId"] and c,
                timeout=6,
                what="results after a click at the pole",
            )
        except AssertionError:
            continue
    raise AssertionError("no results after clicking the pole")


@pytest.mark.parametrize("body", ["Mars", "Earth"])
def test_a_click_at_each_pole_finds_the_polar_tile(page, polar_url, body):
    open_app(page, polar_url)
    if body == "Earth":
        choose(
            page,
            "Body",
            next(
                o
                for o in page.locator("select").first.locator("option").all_inner_texts()
                if "earth" in o.lower()
            ),
        )
    for view, sign, zone in (("North pole", 1, "UPSN"), ("South pole", -1, "UPSS")):
        choose(page, "Map view", view)
        screenshot(page, f"explorer-{body.lower()}-{zone}")
        found = click_pole(page, zone)
        first = found[0]
        assert first["rank"] == "1" and first["distance"] == "0"
        assert f":{zone}:" in first["tileId"]
        assert sign * float(first["lat"]) > 85.0  # the tile at the pole itself, not one further out
        assert f"view={view.split()[0].lower()}" in current_url(page)
        wait_until(lambda: 1 in glyph_rows(page, "query"), what="the query outline in the polar view")
        screenshot(page, f"explorer-{body.lower()}-{zone}-results")


def test_box_drawn_across_the_north_pole_filters_to_it(page, polar_url):
    open_app(page, polar_url)
    choose(page, "Map view", "North pole")
    click_pole(page, "UPSN")
    total = int(
        wait_until(lambda: re.search(r"(\d+) hits", status_text(page)), what="the hit count").group(1)
    )
    draw_box(page, (0.42, 0.42), (0.60, 0.58))
    wait_until(lambda: "1 drawn region(s)" in status_text(page), what="the drawn box in the status")
    shared = wait_until(
        lambda: (u := current_url(page)) and "regions=" in u and u, what="the region in the URL"
    )
    regions = json.loads(parse_qs(urlparse(shared).query)["regions"][0])
    (ring,) = regions["polygons"]  # drawn in a polar view: kept as a lon/lat polygon
    polygon = shapely.Polygon(ring)
    assert polygon.is_valid and polygon.covers(shapely.Point(0.0, 90.0))  # it holds the pole
    hits = all_cards(page)
    assert 0 < len(hits) < total
    assert all(float(c["lat"]) > 80.0 for c in hits)
    assert all(polygon.covers(shapely.Point(float(c["lon"]), float(c["lat"]))) for c in hits)
    # the region is shown in the view, and the drawing layer handed it over
    assert 1 in glyph_rows(page, "regions")
    screenshot(page, "explorer-box-across-the-pole")


COVERAGE_PIXELS = """() => [...Bokeh.documents[0].all_models]
    .filter(m => m.glyph && m.glyph.type === "ImageRGBA" && m.name !== "density" && m.visible)
    .map(m => { const d = m.data_source.data; const image = (d.image ?? d.get("image"))[0];
                let lit = 0; for (let i = 3; i < image.length; i += 4) lit += image[i] > 0; return lit; })"""


def test_zone_labels_and_hirise_coverage_in_a_polar_view(page, polar_url):
    open_app(page, polar_url + "?view=north")  # one map in the page: no other view's labels linger
    page.locator(".map-layers label", has_text="Zone grid").first.click()
    labels = wait_until(lambda: zone_labels_drawn(page), what="zone labels in the polar view")
    assert "UPSN" in labels and all(label.endswith("N") for label in labels)
    page.locator(".map-layers label", has_text="HiRISE").first.click()
    # the polar caps hold many HiRISE images: the coverage raster has lit cells
    wait_until(
        lambda: any(n > 10 for n in page.evaluate(COVERAGE_PIXELS)), what="HiRISE coverage near the pole"
    )
    screenshot(page, "explorer-mars-north-layers")
