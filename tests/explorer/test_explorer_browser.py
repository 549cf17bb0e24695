"""The explorer in a real headless Chromium, served by ``lookalike serve`` on a small index."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlparse

import pytest
from explorer_testkit import (
    FIRST_DATE,
    SECOND_DATE,
    all_cards,
    cards,
    click_map,
    current_url,
    draw_box,
    fixture_landmarks,
    map_point,
    open_app,
    screenshot,
    set_text,
    shadow_text,
    status_text,
    stop_server,
    wait_until,
    zone_labels_drawn,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_click_map_shows_lookalikes(page, explorer_url):
    open_app(page, explorer_url)
    screenshot(page, "explorer-start")
    found = click_map(page)
    assert found[0]["rank"] == "1" and found[0]["distance"] == "0"  # the clicked tile itself
    assert "138 hits" in status_text(page)  # k=1000 > the 138 tiles of the index
    assert found[0]["tileId"] in status_text(page)
    # thumbnails are real images read from the source raster
    wait_until(
        lambda: page.locator(".thumb img").first.evaluate("i => i.complete && i.naturalWidth == 96"),
        what="first thumbnail to load",
    )
    screenshot(page, "explorer-results")
    # clicking a thumbnail highlights it (and pans the map to it)
    page.locator(".thumb img").nth(3).click()
    wait_until(lambda: page.locator(".thumb.selected").count() == 1, what="highlighted thumbnail")
    assert page.locator(".thumb.selected").get_attribute("data-tile-id") == found[3]["tileId"]


FRAME_SIZE = """() => { for (const m of Bokeh.documents[0]._all_models.values())
    if (m.type == "Figure") return [m.inner_width, m.inner_height]; }"""


def test_map_keeps_its_shape_when_it_is_drawn_again(page, explorer_url):
    # the map is twice as wide as it is tall; each re-render of its HoloViews layers (as the page
    # was laid out, and when a layer is switched) once squeezed it to its minimum height
    def assert_shape() -> None:
        page.wait_for_timeout(1500)  # the browser reports its layout to the server meanwhile
        page.wait_for_function("() => Bokeh.documents[0].is_idle")
        width, height = page.evaluate(FRAME_SIZE)
        assert width > 400 and height == pytest.approx(width / 2, rel=0.15)

    open_app(page, explorer_url)
    assert_shape()
    toggle_layer(page, "Zone grid")
    wait_until(lambda: zone_labels_drawn(page), what="zone labels")
    assert_shape()
    toggle_layer(page, "HiRISE")
    assert_shape()


def test_bbox_filter_restricts_hits(page, explorer_url):
    open_app(page, explorer_url)
    click_map(page)
    set_text(page, "Bounding box", "0,20,10,60")
    wait_until(lambda: "bbox 0, 20, 10, 60" in status_text(page), what="bbox in the status")

    def inside(c):
        return 0 <= float(c["lon"]) <= 10 and 20 <= float(c["lat"]) <= 60

    wait_until(lambda: cards(page) and all(inside(c) for c in cards(page)), what="hits inside the box")
    hits = all_cards(page)
    assert hits and all(inside(c) for c in hits)
    assert f"{len(hits)} hits" in status_text(page)
    screenshot(page, "explorer-bbox")


def test_date_range_filters_hits(page, explorer_url):
    open_app(page, explorer_url)
    click_map(page)
    set_text(page, "From date", "2012-01-01")
    wait_until(
        lambda: cards(page) and all(c["time"].startswith(SECOND_DATE) for c in cards(page)),
        what="only 2015 tiles",
    )
    assert all(c["time"].startswith(SECOND_DATE) for c in all_cards(page))
    set_text(page, "From date", "")
    set_text(page, "To date", "2012-12-31")
    wait_until(
        lambda: cards(page) and all(c["time"].startswith(FIRST_DATE) for c in cards(page)),
        what="only 2010 tiles",
    )
    assert all(c["time"].startswith(FIRST_DATE) for c in all_cards(page))
    # an impossible range is a message on the page, not an error page
    set_text(page, "From date", "2020-01-01")
    page.locator(".error").first.wait_for(state="visible")
    assert "empty" in shadow_text(page, ".error")
    screenshot(page, "explorer-date-error")


def test_export_geojson(page, explorer_url):
    open_app(page, explorer_url)
    found = click_map(page)
    set_text(page, "From date", "2012-01-01")
    wait_until(
        lambda: cards(page) and all(c["time"].startswith(SECOND_DATE) for c in cards(page)),
        what="filtered hits",
    )
    n = int(status_text(page).split(" hits")[0].split()[-1].strip("*"))
    with page.expect_download() as info:
        page.get_by_role("button", name="Export hits (GeoJSON)").click()
    collection = json.loads(open(info.value.path()).read())
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == n
    assert collection["lookalike"]["query"] == {"tile_id": found[0]["tileId"]}
    assert collection["lookalike"]["filters"]["time_range"][0].startswith("2012-01-01")
    first = collection["features"][0]
    assert first["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert first["properties"]["time"].startswith(SECOND_DATE)


def test_shared_url_reproduces_search(browser, explorer_url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    open_app(pg, explorer_url)
    click_map(pg)
    set_text(pg, "Bounding box", "-10,0,20,50")
    wait_until(lambda: "bbox=" in current_url(pg), what="the URL to carry the bbox")
    wait_until(lambda: cards(pg) and all(float(c["lat"]) <= 50 for c in cards(pg)), what="bbox hits")
    shared, expected = current_url(pg), [c["tileId"] for c in cards(pg)]
    query = parse_qs(urlparse(shared).query)
    assert query["tile"] == [expected[0]] and query["bbox"] == ["-10,0,20,50"]

    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    open_app(other, shared)
    wait_until(lambda: [c["tileId"] for c in cards(other)] == expected, what="the same hits")
    assert "bbox -10, 0, 20, 50" in status_text(other)
    screenshot(other, "explorer-shared-url")
    other.context.close()
    ctx.close()


def test_sessions_are_independent(browser, explorer_url):
    a = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    b = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    first_a, first_b = [], []
    for pg, first in ((a, first_a), (b, first_b)):
        open_app(pg, explorer_url)
        first += click_map(pg)  # same tile in both: also proves the map is ready for clicks
    # then both sessions click elsewhere, and both clicks are sent before either result is awaited
    for pg, fx in ((a, 0.50), (b, 0.53)):  # lon about -3 (zone 30N) and 4 (31N)
        pg.mouse.click(*map_point(pg, fx, 0.3))
    found_a = wait_until(
        lambda: (c := cards(a)) and c[0]["tileId"] != first_a[0]["tileId"] and c,
        what="new results in session A",
    )
    found_b = wait_until(
        lambda: (c := cards(b)) and c[0]["tileId"] != first_b[0]["tileId"] and c,
        what="new results in session B",
    )
    assert found_a[0]["tileId"] != found_b[0]["tileId"]
    assert found_a[0]["tileId"] in status_text(a) and found_b[0]["tileId"] not in status_text(a)
    assert found_b[0]["tileId"] in status_text(b) and found_a[0]["tileId"] not in status_text(b)
    # a filter in one session leaves the other alone
    set_text(a, "From date", "2012-01-01")
    wait_until(lambda: "dates 2012-01-01" in status_text(a), what="filter in A")
    assert "Filters: none" in status_text(b)
    assert [c["tileId"] for c in cards(b)] == [c["tileId"] for c in found_b]
    a.context.close()
    b.context.close()


def test_refine_with_examples_and_undo(page, explorer_url):
    open_app(page, explorer_url)
    found = click_map(page)
    page.locator(".thumb").nth(2).locator("button.mark-positive").click()
    wait_until(
        lambda: "positive" in page.locator(".thumb").nth(2).get_attribute("class"), what="the first mark"
    )
    page.locator(".thumb").nth(3).locator("button.mark-negative").click()
    wait_until(lambda: "Marked: 2 positive, 1 negative" in status_text(page), what="marks")
    page.get_by_role("button", name="Search with examples").click()
    wait_until(lambda: "2 positive / 1 negative examples" in status_text(page), what="example query")
    # the address bar follows the search a moment after the status line
    wait_until(lambda: "examples=1" in current_url(page), what="the example query in the URL")
    screenshot(page, "explorer-refined")
    page.get_by_role("button", name="Undo").click()
    wait_until(
        lambda: [c["tileId"] for c in cards(page)] == [c["tileId"] for c in found],
        what="the first search's hits back after undo",
    )
    assert f"Query: {found[0]['tileId']}" in status_text(page)


def drawn_shapes(page, which: str) -> int:
    """How many boxes / polygons the map's drawing layer holds in the browser."""
    return page.evaluate(
        """which => {
        const m = Bokeh.documents[0].get_model_by_name('drawn_' + which);
        const d = m.data_source.data, k = Object.keys(d)[0];
        return k === undefined ? 0 : d[k].length; }""",
        which,
    )


def test_draw_box_filters_clear_and_undo(page, explorer_url):
    open_app(page, explorer_url)
    found = click_map(page)
    # the hit count from the status line: the pager under the cards can render after the
    # first page, and counting cards before it is there would see one page only
    total = int(
        wait_until(lambda: re.search(r"(\d+) hits", status_text(page)), what="the hit count").group(1)
    )
    wait_until(lambda: len(all_cards(page)) == total, what="every page of hits")
    draw_box(page, (0.40, 0.20), (0.60, 0.55))  # a real box across the indexed strip
    wait_until(lambda: "1 drawn region(s)" in status_text(page), what="the drawn box in the status")
    shared = wait_until(lambda: (u := current_url(page)) and "regions=" in u and u, what="the box in the URL")
    ((west, south, east, north),) = json.loads(parse_qs(urlparse(shared).query)["regions"][0])["boxes"]
    assert west < east and south < north
    hits = all_cards(page)
    assert hits and len(hits) < total
    assert all(west <= float(c["lon"]) <= east and south <= float(c["lat"]) <= north for c in hits)
    assert f"{len(hits)} hits" in status_text(page)
    assert drawn_shapes(page, "boxes") == 1

    # with a drawing tool active a tap draws or selects; it must not send a map query
    taps = page.evaluate("() => Bokeh.documents[0].get_model_by_name('map_taps').data.n?.[0] ?? 0")
    page.mouse.click(*map_point(page, 0.47, 0.8))
    assert page.evaluate("() => Bokeh.documents[0].get_model_by_name('map_taps').data.n?.[0] ?? 0") == taps

    page.get_by_role("button", name="Clear regions").click()
    wait_until(lambda: "Filters: none" in status_text(page), what="regions cleared")
    wait_until(lambda: drawn_shapes(page, "boxes") == 0, what="the box removed from the map")
    assert f"Query: {found[0]['tileId']}" in status_text(page)  # the tap above did not search
    assert f"{total} hits" in status_text(page)

    page.get_by_role("button", name="Undo").click()  # brings the box back, on the map too
    wait_until(lambda: "1 drawn region(s)" in status_text(page), what="the box back after undo")
    wait_until(lambda: drawn_shapes(page, "boxes") == 1, what="the box redrawn after undo")
    screenshot(page, "explorer-drawn-box")


def landmark_boxes(page) -> list[str]:
    """Classes of the landmark boxes the map draws in the browser."""
    return page.evaluate("""() => {
        const m = Bokeh.documents[0].get_model_by_name('landmarks');
        return Array.from(m.data_source.data.label ?? m.data_source.data.get('label')); }""")


def facet_labels(page) -> list[str]:
    return page.locator(".class-facet label").all_inner_texts()


def test_class_facet_changes_boxes_and_hits(page, explorer_url, explorer_index):
    from lookalike.indexer.store import open_index

    tiles = open_index(explorer_index).tiles
    lm = fixture_landmarks(tiles)
    n = {c: int((lm["label"] == c).sum()) for c in ("crater", "dark_dune", "streak")}
    open_app(page, explorer_url)
    wait_until(lambda: len(landmark_boxes(page)) == len(lm), what="every landmark box drawn")
    labels = wait_until(lambda: facet_labels(page), what="the class facet")
    assert [t.strip() for t in labels] == [
        f"crater ({n['crater']})",
        f"dark_dune ({n['dark_dune']})",
        f"streak ({n['streak']})",
        "edge (0)",
    ]
    click_map(page)
    page.locator(".class-facet label", has_text="crater").first.click()
    wait_until(lambda: set(landmark_boxes(page)) == {"crater"}, what="only crater boxes")
    assert len(landmark_boxes(page)) == n["crater"]
    craters = set(tiles["tile_id"][(lm["label"] == "crater").to_numpy()])
    wait_until(lambda: f"{n['crater']} hits" in status_text(page), what="hits narrowed to craters")
    assert all(c["tileId"] in craters for c in all_cards(page))
    screenshot(page, "explorer-class-facet")
    # typing a class applies the facet too
    set_text(page, "Class (type", "streak")
    wait_until(lambda: set(landmark_boxes(page)) == {"streak"}, what="only streak boxes")
    # crater's box was the one ticked before: wait for the tick to move, not for a count of one
    ticked = ".class-facet label:has(input:checked)"
    wait_until(
        lambda: page.locator(ticked).count() == 1 and "streak" in page.locator(ticked).inner_text(),
        what="streak's box alone ticked",
    )


# ------------------------------------------------------------------ map layers and legend
def renderer_visible(page, name: str) -> bool:
    return page.evaluate("n => Bokeh.documents[0].get_model_by_name(n).visible", name)


def legend_rows(page) -> list[dict]:
    return page.locator(".map-legend .legend-row").evaluate_all("""els => els.map(e => ({
        layer: e.dataset.layer, off: e.classList.contains('off'), text: e.innerText,
        color: e.querySelector('.swatch').dataset.color}))""")


def toggle_layer(page, label: str) -> None:
    page.locator(".map-layers label", has_text=label).first.click()


def test_layer_switches_and_legend(page, explorer_url):
    from lookalike.explorer.map_style import HIT_COLORS, LANDMARK_COLORS

    open_app(page, explorer_url)
    click_map(page)
    # the defaults: markers, density and landmark boxes on, the zone grid off
    assert renderer_visible(page, "hits") and renderer_visible(page, "density")
    assert renderer_visible(page, "landmarks")
    assert zone_labels_drawn(page) == []
    rows = wait_until(lambda: legend_rows(page), what="the legend")
    assert [r["color"] for r in rows if r["layer"] == "hits"] == HIT_COLORS[::-1]
    assert [r["color"] for r in rows if r["layer"] == "landmarks"] == LANDMARK_COLORS[:4]
    assert any("query tile" in r["text"] for r in rows) and any(r["layer"] == "hirise" for r in rows)
    assert all(r["off"] for r in rows if r["layer"] in ("zones", "hirise"))

    toggle_layer(page, "Hit markers")
    wait_until(lambda: not renderer_visible(page, "hits"), what="the hit markers hidden")
    wait_until(
        lambda: all(r["off"] for r in legend_rows(page) if r["layer"] == "hits"),
        what="the legend to mark the markers off",
    )
    assert renderer_visible(page, "density")  # the other layers stay
    toggle_layer(page, "Hit markers")
    wait_until(lambda: renderer_visible(page, "hits"), what="the hit markers shown again")

    toggle_layer(page, "Zone grid")
    labels = wait_until(lambda: zone_labels_drawn(page), what="zone labels")
    assert set(labels) <= {"30N", "31N", "32N"}
    screenshot(page, "explorer-layers")
    toggle_layer(page, "Zone grid")
    wait_until(lambda: zone_labels_drawn(page) == [], what="zone labels gone")


def typed_bbox(page) -> list[list[float]]:
    return page.evaluate("""() => { const d = Bokeh.documents[0].get_model_by_name('bbox').data_source.data;
        return ['left', 'bottom', 'right', 'top'].map(k => Array.from(d[k] ?? d.get(k))); }""")


def test_typed_bbox_is_drawn(page, explorer_url):
    open_app(page, explorer_url)
    click_map(page)
    set_text(page, "Bounding box", "0,20,10,60")
    wait_until(lambda: typed_bbox(page) == [[0], [20], [10], [60]], what="the typed box on the map")
    page.get_by_role("button", name="Clear regions").click()
    wait_until(lambda: typed_bbox(page) == [[], [], [], []], what="the typed box removed")


def outline_count(page, name: str) -> int:
    return page.evaluate(
        """n => { const d = Bokeh.documents[0].get_model_by_name(n).data_source.data;
        return (d.xs ?? d.get('xs')).length; }""",
        name,
    )


def test_focus_outline_cleared_by_a_new_search(page, explorer_url):
    open_app(page, explorer_url)
    click_map(page)
    page.locator(".thumb img").nth(3).click()
    wait_until(lambda: outline_count(page, "focus") == 1, what="the focus outline")
    set_text(page, "From date", "2012-01-01")  # a new search, not a new click
    wait_until(lambda: "dates 2012-01-01" in status_text(page), what="the filtered search")
    wait_until(lambda: outline_count(page, "focus") == 0, what="the focus outline cleared")
    assert page.locator(".thumb.selected").count() == 0


@pytest.fixture(scope="module")
def two_body_url(explorer_index, explorer_env, tmp_path_factory):
    """A server of the Mars fixture index and a one-zone Earth index (~30 s to build)."""
    import subprocess
    import sys

    from explorer_testkit import start_server

    earth = tmp_path_factory.mktemp("earth") / "earth_small"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "index",
            "earth_8k",
            "--zones",
            "31N",
            "--bits",
            "64",
            "--out",
            str(earth),
        ],
        env=explorer_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"no Earth index could be built: {proc.stderr[-500:]}")
    server, url = start_server([explorer_index, earth], explorer_env)
    yield url
    stop_server(server)


LABEL_COLORS_JS = """() => { const out = [];
    function walk(root) {
        for (const el of root.querySelectorAll('*')) {
            if (el.shadowRoot) walk(el.shadowRoot);
            if (el.tagName === 'LABEL' && el.innerText.trim()) out.push(getComputedStyle(el).color);
        }
    }
    walk(document); return out; }"""


def label_brightness(page) -> list[float]:
    """Mean RGB of every visible widget label, 0 (black) to 255 (white)."""
    colors = page.evaluate(LABEL_COLORS_JS)
    return [sum(map(float, re.findall(r"[\d.]+", c)[:3])) / 3 for c in colors]


def test_labels_stay_light_after_a_body_switch(page, two_body_url):
    open_app(page, two_body_url)
    assert label_brightness(page) and min(label_brightness(page)) > 150  # the dark theme
    for body in ("Earth", "Mars"):
        page.locator("select").first.select_option(label=body)
        wait_until(
            lambda body=body: (
                body in page.locator("select").first.evaluate("s => s.options[s.selectedIndex].text")
            ),
            what=f"{body} selected",
        )
        wait_until(
            lambda body=body: (
                page.locator(".map-layers label", has_text="HiRISE").count() == (body == "Mars")
            ),
            what=f"the {body} sidebar",
        )
        page.wait_for_function("() => Bokeh.documents[0].is_idle")
        assert min(label_brightness(page)) > 150, body
    rows = legend_rows(page)
    assert any(r["layer"] == "hirise" for r in rows)
    screenshot(page, "explorer-body-switch")
