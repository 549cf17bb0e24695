"""Click-to-thumbnails time of the explorer in a real headless Chromium; prints JSON.

    python benchmarks/explorer_click.py [INDEX_DIR ...] [--clicks 20] [--view north] [--json OUT.json]
    python benchmarks/explorer_click.py --demo [--zoom hirise_red_25cm] [--json OUT.json]

Starts ``lookalike serve`` on the indexes (default: the Mars demo index, built if missing;
``--demo``: everything ``lookalike demo`` serves, every body and collection), opens the app,
optionally zooms into the first scene of a collection (``--zoom NAME``: clicks then fall on that
scene and count only when they searched it), then clicks the map at ``--clicks`` + 1 different places; each time is measured from
the click until the first page of thumbnails of the new query has loaded (every <img> decoded).
The first click of the session is reported on its own (``first_click_s``) and not counted in
the percentiles. Also reported: how long the server took to start (it warms up before it
listens), the first page load and the bytes it moved, when its two basemap images had arrived
(``basemap_loaded_s``, from the same start), a second page load (a new browser session
on the warm server), the bytes the server sends for one zoom and one pan of the map, the
server's peak resident memory (``server_peak_rss_mb``), and the load average. ``--view`` picks
the map view (global, north, south) before clicking. Timings on a shared machine are noisy:
compare medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from explorer_testkit import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    MODEL,
    cards,
    data_dir,
    open_app,
    start_server,
    status_text,
    wait_until,
    zoom_map,
)

ALL_LOADED = """els => els.length > 0 && els.every(i => i.complete && i.naturalWidth > 0)"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", nargs="*", help="index directories (default: the Mars demo index)")
    parser.add_argument("--demo", action="store_true", help="serve what `lookalike demo` serves")
    parser.add_argument("--zoom", help="a collection (index directory name): click inside its first scene")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--view", default="global", choices=["global", "north", "south"])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    env = dict(os.environ, LOOKALIKE_DATA=os.environ.get("LOOKALIKE_DATA", str(data_dir())))
    if args.index:
        indexes = [Path(i) for i in args.index]
    else:
        os.environ.update(env)
        from lookalike.workflows.demo import demo_indexes, ensure_demo_index

        indexes = demo_indexes(["mars", "earth"]) if args.demo else [ensure_demo_index("mars")]

    from playwright.sync_api import sync_playwright

    from lookalike.indexer.store import open_index

    n_tiles = sum(len(open_index(i).tiles) for i in indexes)
    scene = zoom_target(indexes, args.zoom) if args.zoom else None

    t_start = time.perf_counter()
    proc, url = start_server(indexes, env, timeout=300)
    start_s = time.perf_counter() - t_start
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            traffic = Traffic(page)
            basemap_at: list[float] = []  # when each basemap image arrived
            page.on(
                "requestfinished",
                lambda r: basemap_at.append(time.perf_counter()) if "/basemap/" in r.url else None,
            )
            t0 = time.perf_counter()
            open_app(page, url)
            load_s = time.perf_counter() - t0
            deadline = time.monotonic() + 60
            while len(basemap_at) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(20)  # Playwright delivers its events while it runs
            basemap_s = max(basemap_at[:2]) - t0 if len(basemap_at) >= 2 else None
            load_bytes = traffic.settle()
            if args.view != "global":
                from lookalike.explorer.projection import PROJECTIONS as VIEWS

                page.locator(".bk-input-group", has_text="Map view").locator("select").first.select_option(
                    label=VIEWS[args.view]
                )
                canvas = page.locator(".map canvas").first
                wait_until(
                    lambda: (b := canvas.bounding_box()) and abs(b["width"] - b["height"]) < 0.2 * b["width"],
                    timeout=60,
                    what="the polar map",
                )
                page.wait_for_function("() => Bokeh.documents[0].is_idle")
                traffic.settle()
            canvas = page.locator(".map canvas").first
            box = canvas.bounding_box()
            zoom_bytes, pan_bytes = map_traffic(page, box, traffic)
            if scene is not None:
                zoom_into(page, scene["bounds"])
                box = canvas.bounding_box()
            first_click_s, times, previous = None, [], None
            # points spread over the map's frame (fractions of the canvas); the first one warms up;
            # zoomed into a scene, over the middle of the view, which the scene fills
            spread = (0.2, 0.6, 0.25, 0.5) if scene is None else (0.4, 0.2, 0.4, 0.2)
            points = [
                (spread[0] + spread[1] * ((i * 0.37) % 1.0), spread[2] + spread[3] * ((i * 0.61) % 1.0))
                for i in range(args.clicks + 1)
            ]
            for fx, fy in points:
                start = time.perf_counter()
                page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
                try:
                    found = wait_until(
                        lambda: (c := cards(page)) and c[0]["tileId"] != previous and c,
                        timeout=30,
                        interval=0.01,
                        what="new results",
                    )
                    wait_until(
                        lambda: page.locator(".thumb img").evaluate_all(ALL_LOADED),
                        timeout=30,
                        interval=0.01,
                        what="thumbnails",
                    )
                except AssertionError:
                    continue  # a click on no tile (or the same tile): not a measurement
                elapsed = time.perf_counter() - start
                if scene is not None and f"Searching {args.zoom}" not in status_text(page):
                    continue  # a click that missed the scene searched another collection
                previous = found[0]["tileId"]
                if first_click_s is None:
                    first_click_s = elapsed
                else:
                    times.append(elapsed)
            t0 = time.perf_counter()
            second = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_app(second, url)
            second_load_s = time.perf_counter() - t0
            browser.close()
    finally:
        peak_rss_mb, rss_parts = peak_rss(proc.pid), resident_parts(proc.pid)
        proc.terminate()
        proc.wait(10)
    result = dict(
        index=indexes[0].name if len(indexes) == 1 else "demo" if args.demo else "several",
        indexes=[i.name for i in indexes],
        tiles=n_tiles,
        view=args.view,
        zoom=None if scene is None else dict(collection=args.zoom, **scene),
        cpus=os.cpu_count(),
        load_average=[round(v, 2) for v in os.getloadavg()],
        server_start_s=round(start_s, 3),
        page_load_s=round(load_s, 3),
        basemap_loaded_s=None if basemap_s is None else round(basemap_s, 3),
        page_load_bytes=load_bytes,
        second_page_load_s=round(second_load_s, 3),
        server_peak_rss_mb=peak_rss_mb,
        # at the end: pages of mapped index files (the kernel can drop them) and the rest
        server_rss_file_mb=rss_parts.get("RssFile"),
        server_rss_anon_mb=rss_parts.get("RssAnon"),
        zoom_bytes=zoom_bytes,
        pan_bytes=pan_bytes,
        clicks=len(times),
        thumbnails_per_page=50,
        first_click_s=None if first_click_s is None else round(first_click_s, 3),
        click_to_thumbnails_s=dict(
            p50=round(statistics.median(times), 3) if times else None,
            p95=round(float(np.percentile(times, 95)), 3) if times else None,
            min=round(min(times), 3) if times else None,
            max=round(max(times), 3) if times else None,
            all=[round(t, 3) for t in times],
        ),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def zoom_target(indexes: list[Path], collection: str) -> dict:
    """The first scene (by name) of the collection ``collection``: its source and lon/lat box."""
    from lookalike.explorer.acquisitions import acquisitions
    from lookalike.indexer.store import open_index

    chosen = [i for i in indexes if i.name == collection]
    if not chosen:
        raise SystemExit(f"--zoom {collection}: not among {', '.join(i.name for i in indexes)}")
    first = min(acquisitions(open_index(chosen[0])), key=lambda a: a.source)
    return dict(source=first.source, bounds=[round(v, 6) for v in first.bounds])


def zoom_into(page, bounds: list[float]) -> None:
    """Set the map's view on ``bounds`` (as a zoom does; true shape then widens one side) and
    wait until the scene's own pixels are drawn."""
    zoom_map(page, bounds, margin=0.0)
    wait_until(
        lambda: page.evaluate(f"() => ({MODEL})('basemap_detail').data_source.data.url[0].includes('~')"),
        timeout=60,
        what="the scene's pixels",
    )
    page.wait_for_function("() => Bokeh.documents[0].is_idle")
    page.wait_for_timeout(1000)  # the view settles to its true shape


def peak_rss(pid: int) -> float | None:
    """The process's peak resident memory in MB (Linux's VmHWM), None where /proc has no such field."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def resident_parts(pid: int) -> dict[str, float]:
    """Linux's RssAnon and RssFile of the process now, in MB (empty where /proc lacks them)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name = line.split(":")[0]
            if name in ("RssAnon", "RssFile"):
                out[name] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


class Traffic:
    """Bytes a page receives: HTTP responses and websocket messages, through the DevTools protocol."""

    def __init__(self, page) -> None:
        self.total = 0
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Network.enable")
        self.cdp.on("Network.loadingFinished", lambda e: self._add(e.get("encodedDataLength", 0)))
        self.cdp.on(
            "Network.webSocketFrameReceived",
            lambda e: self._add(len(e.get("response", {}).get("payloadData", ""))),
        )
        self.page = page

    def _add(self, n) -> None:
        self.total += int(n)

    def settle(self, quiet_s: float = 1.5, timeout_s: float = 30.0) -> int:
        """Wait until nothing arrives for ``quiet_s``; the bytes received since the last call."""
        deadline, last, seen = time.monotonic() + timeout_s, -1, time.monotonic()
        while time.monotonic() < deadline:
            self.page.wait_for_timeout(100)
            if self.total != last:
                last, seen = self.total, time.monotonic()
            elif time.monotonic() - seen >= quiet_s:
                break
        total, self.total = self.total, 0
        return total


def map_traffic(page, box: dict, traffic: Traffic) -> tuple[int, int]:
    """Bytes received for one wheel zoom in, then one drag pan, of the map."""
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -300)
    zoom = traffic.settle()
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 40, steps=8)
    page.mouse.up()
    pan = traffic.settle()
    page.mouse.wheel(0, 300)  # back out, for the clicks
    traffic.settle()
    return zoom, pan


if __name__ == "__main__":
    main()
