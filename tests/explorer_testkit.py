"""Helpers for the explorer tests (tests/explorer/): constants, the fixture index's landmark
catalogue, a ``lookalike serve`` launcher and page helpers for the browser tests.

A plain module, not a conftest: the fixtures built on it (``explorer_env``, ``explorer_index``,
``explorer_url``, ``browser``, ``page``) are in tests/explorer/conftest.py. Importable by name
from any test folder (``pythonpath = ["tests"]`` in pyproject.toml); the explorer benchmark
(benchmarks/explorer_click.py) uses the launcher and page helpers too.

The fixture index covers zones 30N and 31N dated 2010-01-01 and, appended, zone 32N dated
2015-06-01, and carries a small synthetic landmark catalogue (``fixture_landmarks``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIRST_DATE, SECOND_DATE = "2010-01-01", "2015-06-01"
LANDMARK_CLASSES = ["crater", "dark_dune", "streak", "edge"]  # no tile gets an 'edge'


def fixture_landmarks(tiles):
    """One landmark at the centre of every tile: classes in turn (crater, dark_dune, streak),
    posteriors spread over 0.5-0.99 by a fixed rule, boxes of +-0.4 degrees."""
    import numpy as np
    import pandas as pd

    i = np.arange(len(tiles))
    lm = pd.DataFrame(
        {
            "landmark_id": [f"lm{j}" for j in i],
            "scene": "fixture",
            "label": np.array(LANDMARK_CLASSES[:3])[i % 3],
            "posterior": 0.5 + 0.49 * ((i * 37) % 100) / 100.0,
            "lon": tiles["lon"].to_numpy(float),
            "lat": tiles["lat"].to_numpy(float),
        }
    )
    lm["lon_min"], lm["lon_max"] = lm["lon"] - 0.4, lm["lon"] + 0.4
    lm["lat_min"], lm["lat_max"] = lm["lat"] - 0.4, lm["lat"] + 0.4
    for c in LANDMARK_CLASSES:
        lm[f"p_{c}"] = (lm["label"] == c).astype(float) * lm["posterior"]
    return lm


def data_dir() -> Path:
    env = os.environ.get("LOOKALIKE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path | list[Path], env: dict, timeout: float = 240.0) -> tuple[subprocess.Popen, str]:
    """``lookalike serve INDEX...`` on a free port; returns the process and the app's URL.

    The server warms up (decodes its basemaps unless they are cached, loads its numba kernels,
    renders a map offline) before it listens: a few seconds, more on busy cores.
    """
    indexes = [index] if isinstance(index, Path) else list(index)
    index = indexes[0]
    port = free_port()
    log = open(index.parent / f"serve-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lookalike", "serve", *map(str, indexes), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited: {(index.parent / f'serve-{port}.log').read_text()[-2000:]}"
            )
        try:
            # a static file answers as soon as the server listens (the app page builds a session)
            with urllib.request.urlopen(url + "static/js/bokeh.min.js", timeout=5) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the explorer server did not start in time")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server from ``start_server``: politely, then for good."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# ------------------------------------------------------------------ page helpers
def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the page may be mid-update
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def open_app(page, url: str) -> None:
    """Load the app and wait until the map is drawn and Bokeh has finished rendering."""
    page.goto(url)
    page.locator(".map canvas").first.wait_for(state="visible")
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle")


# JavaScript: the Bokeh model of a name, and the map's figure (the last one made: a map rebuilt
# for another body replaces the first)
MODEL = """name => { let found = null; for (const m of Bokeh.documents[0]._all_models.values())
    if (m.name == name) found = m; return found; }"""
FIGURE = (
    "() => { let f = null; for (const m of Bokeh.documents[0]._all_models.values()) "
    "if (m.type == 'Figure') f = m; return f; }"
)


def zoom_map(page, bounds, margin: float = 0.2) -> None:
    """Set the map's view around lon/lat ``bounds`` (west, south, east, north), ``margin`` of
    their size added on each side, as a zoom does (true shape then widens one side)."""
    west, south, east, north = bounds
    pad_x, pad_y = (east - west) * margin, (north - south) * margin
    page.evaluate(f"""() => {{ const f = ({FIGURE})();
        f.x_range.setv({{start: {west - pad_x}, end: {east + pad_x}}});
        f.y_range.setv({{start: {south - pad_y}, end: {north + pad_y}}}); }}""")


def map_point(page, fx: float, fy: float, timeout_ms: float = 30_000) -> tuple[float, float]:
    """Page coordinates of a point of the map's canvas, as fractions of its width and height.
    Waits while the map is being rebuilt (a new view or index replaces its canvas, which has no
    box until it is laid out)."""
    canvas = page.locator(".map canvas").first
    waited = 0.0
    while (box := canvas.bounding_box()) is None or not box["width"]:
        if waited > timeout_ms:
            raise AssertionError("the map's canvas was never laid out")
        page.wait_for_timeout(100)
        waited += 100
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def draw_box(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Draw a box on the map with the box-edit tool (shift-drag), corners as canvas fractions."""
    page.locator(".bk-tool-icon-box-edit").click()
    page.keyboard.down("Shift")
    page.mouse.move(*map_point(page, *start))
    page.mouse.down()
    page.mouse.move(*map_point(page, *end), steps=8)
    page.mouse.up()
    page.keyboard.up("Shift")


def current_url(page) -> str:
    """The address bar (``page.url`` can miss ``history.replaceState`` updates)."""
    return page.evaluate("() => window.location.href")


def cards(page) -> list[dict]:
    """The thumbnail cards on the current page of results, as dicts of their data attributes."""
    return page.locator(".thumb").evaluate_all("els => els.map(e => Object.assign({}, e.dataset))")


def shadow_text(page, selector: str) -> str:
    """Text of the first element matching ``selector``, including its shadow DOM (Panel panes)."""
    loc = page.locator(selector).first
    return loc.evaluate("""e => e.shadowRoot
        ? Array.from(e.shadowRoot.children).filter(c => !['STYLE', 'LINK'].includes(c.tagName))
               .map(c => c.innerText).join(' ')
        : e.innerText""")


def status_text(page) -> str:
    """The always-visible summary: hit count, query and filters."""
    return " ".join(shadow_text(page, ".status").split())


def click_map(page, fx: float = 0.5, fy: float = 0.5, previous_first: str | None = None) -> list[dict]:
    """Click the map at a fraction of its canvas until results appear; returns the cards.

    A click that lands before the plot's event handlers are wired is retried.
    """
    for _ in range(5):
        page.mouse.click(*map_point(page, fx, fy))
        try:
            return wait_until(
                lambda: (c := cards(page)) and c[0]["tileId"] != previous_first and c,
                timeout=4,
                what="results after a map click",
            )
        except AssertionError:
            continue
    raise AssertionError("no results appeared after clicking the map")


def set_text(page, label: str, value: str) -> None:
    """Type into the text input whose label is ``label`` and commit it with Enter."""
    field = page.locator(".bk-input-group", has_text=label).locator("input").first
    field.fill(value)
    field.press("Enter")


def _pager_settled(page, next_button) -> str | None:
    """``"last"`` or ``"more"`` once the pager's caption and its Next button agree, else None.

    The caption and the button's ``disabled`` arrive as separate updates after a new search.
    """
    info = page.locator(".page-info")
    text = shadow_text(page, ".page-info") if info.count() else ""
    if not text or "page" not in text:
        return "last"
    current, total = text.split("page ")[1].split(" of ")
    more = int(current) < int(total)
    if more != next_button.is_enabled():
        return None
    return "more" if more else "last"


def all_cards(page) -> list[dict]:
    """Cards of every page of results (pages through with the Next button)."""
    out = cards(page)
    next_button = page.get_by_role("button", name="Next ▶")
    while True:
        settled = wait_until(lambda: _pager_settled(page, next_button), what="the pager to settle")
        if settled == "last":
            return out
        first_rank = int(out[-1]["rank"]) + 1
        for attempt in range(3):  # a click that lands while the grid is re-rendering is lost
            next_button.click(timeout=10_000)
            try:
                wait_until(
                    lambda: cards(page) and int(cards(page)[0]["rank"]) == first_rank,
                    timeout=15,
                    what="next page",
                )
                break
            except AssertionError:
                if attempt == 2:
                    raise
        out += cards(page)


def zone_labels_drawn(page) -> list[str]:
    """The zone labels the map shows (the text column of the zone label layer)."""
    return page.evaluate("""() => {
        for (const m of Bokeh.documents[0].all_models) {
            if (m.data && m.data.zone !== undefined) return Array.from(m.data.zone);
        }
        return null; }""")
