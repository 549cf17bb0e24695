"""Click-to-thumbnails time of the explorer in a real headless Chromium; prints JSON.

    python benchmarks/explorer_click.py [INDEX_DIR] [--clicks 10]

Starts ``lookalike serve`` on the index (default: the Mars demo index, built if missing), opens
the app, then clicks the map at ``--clicks`` different places; each time is measured from the
click until the first page of thumbnails of the new query has loaded (every <img> decoded).
The first click is a warm-up and is not counted. Also reported: how long the server took to
start (it warms up before it listens), the first page load, and a second page load (a new
browser session on the warm server). Timings on a shared machine are noisy: compare medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from explorer_testkit import CHROMIUM, CHROMIUM_ARGS, cards, data_dir, open_app, start_server, wait_until  # noqa: E402

ALL_LOADED = """els => els.length > 0 && els.every(i => i.complete && i.naturalWidth > 0)"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", nargs="?", help="index directory (default: the Mars demo index)")
    parser.add_argument("--clicks", type=int, default=10)
    args = parser.parse_args()
    env = dict(os.environ, LOOKALIKE_DATA=os.environ.get("LOOKALIKE_DATA", str(data_dir())))
    if args.index:
        index = Path(args.index)
    else:
        os.environ.update(env)
        from lookalike.workflows.demo import ensure_demo_index

        index = ensure_demo_index("mars")

    from playwright.sync_api import sync_playwright

    from lookalike.indexer.store import open_index

    n_tiles = len(open_index(index).tiles)

    t_start = time.perf_counter()
    proc, url = start_server(index, env, timeout=300)
    start_s = time.perf_counter() - t_start
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            open_app(page, url)
            load_s = time.perf_counter() - t0
            canvas = page.locator(".map canvas").first
            box = canvas.bounding_box()
            times, previous = [], None
            # points spread over the map's frame (fractions of the canvas); the first one warms up
            points = [(0.2 + 0.6 * ((i * 0.37) % 1.0), 0.25 + 0.5 * ((i * 0.61) % 1.0))
                      for i in range(args.clicks + 1)]
            for i, (fx, fy) in enumerate(points):
                start = time.perf_counter()
                page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
                try:
                    found = wait_until(lambda: (c := cards(page)) and c[0]["tileId"] != previous and c,
                                       timeout=30, interval=0.01, what="new results")
                    wait_until(lambda: page.locator(".thumb img").evaluate_all(ALL_LOADED),
                               timeout=30, interval=0.01, what="thumbnails")
                except AssertionError:
                    continue  # a click on no tile (or the same tile): not a measurement
                elapsed = time.perf_counter() - start
                previous = found[0]["tileId"]
                if i > 0:
                    times.append(elapsed)
            t0 = time.perf_counter()
            second = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_app(second, url)
            second_load_s = time.perf_counter() - t0
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    result = dict(index=str(index), tiles=n_tiles, cpus=os.cpu_count(), server_start_s=round(start_s, 3),
                  page_load_s=round(load_s, 3), second_page_load_s=round(second_load_s, 3), clicks=len(times),
                  thumbnails_per_page=50,
                  click_to_thumbnails_s=dict(
                      p50=round(statistics.median(times), 3) if times else None,
                      min=round(min(times), 3) if times else None,
                      max=round(max(times), 3) if times else None,
                      all=[round(t, 3) for t in times]))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
