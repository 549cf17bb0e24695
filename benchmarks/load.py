"""Many people on one explorer server, and many searches on one index: latency, errors, memory.

    python benchmarks/load.py [INDEX_DIR] [--sessions 1,4,8,16,32] [--clicks 5] [--client protocol|browser]
                              [--url URL] [--churn 100]
                              [--workers 1,2,4,8,16] [--json benchmarks/results/load.json]

Three measurements, each against a reference taken in the same run:

1. **Explorer sessions.** ``lookalike serve`` on the index (default: the Mars demo index, built
   if missing; ``--url`` loads a server already running); for each N, N sessions open the app
   and click the map ``--clicks`` times each, continuously and all at once. ``--client protocol``
   (default) drives each session over the Bokeh protocol as a page does (``tests/protocol_client.py``),
   so the figures are the server's; ``--client browser`` uses real Chromium contexts, which share
   the cores with the server. A click is timed from the tap until the first page of thumbnails of
   its new query is in (decoded, in a browser). Every result is checked against the session's own query (the first card is the
   clicked tile at distance 0 and the status names the same tile), so one session seeing
   another's results counts as a leak. The server's resident memory is sampled throughout.
2. **Sessions opened and closed.** ``--churn`` sessions open the app one after another and close;
   the server's RSS after they are all gone is compared with its RSS before the first.
3. **API searches.** ``search`` on one opened index from 1..16 threads and from 1..16
   processes (each opening the index, memory-mapped); queries/s and p95 latency, and every
   result compared with the serial answer to the same query.

Writes JSON and a Markdown table (``benchmarks/results/load.md``). Figures on a shared 2-core
machine are noisy: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from explorer_testkit import CHROMIUM, CHROMIUM_ARGS, data_dir, start_server  # noqa: E402
from protocol_client import ProtocolSession  # noqa: E402

from lookalike.indexer.search import tile_at  # noqa: E402

ALL_LOADED = "els => els.length > 0 && els.every(i => i.complete && i.naturalWidth > 0)"
CARDS = "els => els.map(e => Object.assign({}, e.dataset))"
TAP = """() => { const m = Bokeh.documents[0].get_model_by_name('map_taps');
  return m && m.data.x.length ? [m.data.x[0], m.data.y[0]] : null; }"""
STATUS = """e => e.shadowRoot
  ? Array.from(e.shadowRoot.children).filter(c => !['STYLE', 'LINK'].includes(c.tagName))
         .map(c => c.innerText).join(' ')
  : e.innerText"""


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


class RssSampler:
    """The peak and last resident memory of a process, sampled every ``interval`` seconds, and
    the peak of its anonymous part (``peak_anon``: what is not pages of mapped files, which the
    kernel can drop and read again)."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.proc, self.interval = psutil.Process(pid), interval
        self.peak = self.last = self.rss()
        self.peak_anon = self.rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def rss_anon(self) -> int:
        """Linux's RssAnon in bytes (0 where /proc has no such field)."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.last = self.rss()
            self.peak = max(self.peak, self.last)
            self.peak_anon = max(self.peak_anon, self.rss_anon())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def server_pid(url: str) -> int:
    """The process listening on ``url``'s port (a server started by hand)."""
    port = urlsplit(url).port
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise SystemExit(f"no process of this user listens on port {port}")


# ------------------------------------------------------------------ explorer sessions
def judge(out: dict, expected: str, tile_ids: list[str], distances: list[int], status: str) -> None:
    """Count a click's results as a leak unless they answer the session's own tap: the status
    names the tile under it and that tile is among the hits at distance 0; another tile at
    distance 0 ranked first (ties by index order) is counted apart."""
    own = [d for t, d in zip(tile_ids, distances) if t == expected]
    if f"Query: {expected}" not in status or not own or own[0] != 0:
        out["leaks"] += 1
        out["leak_samples"].append(dict(expected=expected, first=tile_ids[0], status=status[:160]))
    elif tile_ids[0] != expected:
        out["tied_first"] += 1


async def open_app(page, url: str) -> None:
    await page.goto(url, timeout=120_000)
    await page.locator(".map canvas").first.wait_for(state="visible", timeout=120_000)
    await page.wait_for_function(
        "() => window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle", timeout=120_000
    )


async def poll(fn, timeout: float = 60.0, interval: float = 0.02):
    """Await ``fn()`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = await fn()
            if value:
                return value
        except Exception:  # the page may be mid-update
            pass
        await asyncio.sleep(interval)
    raise TimeoutError("timed out")


async def one_session(browser, url: str, index, clicks: int, seed: int) -> dict:
    """One user clicking the map ``clicks`` times; returns latencies, errors and leaks."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    out = dict(times=[], open_s=None, errors=[], leaks=0, leak_samples=[], tied_first=0, misses=0)
    try:
        t0 = time.perf_counter()
        await open_app(page, url)
        out["open_s"] = time.perf_counter() - t0
        box = await page.locator(".map canvas").first.bounding_box()
        rng = np.random.default_rng(seed)
        previous = None
        for _ in range(clicks):
            fx, fy = rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7)
            start = time.perf_counter()
            await page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            cards, images = page.locator(".thumb"), page.locator(".thumb img")  # in shadow roots

            async def new_results(prev=previous):
                found = await cards.evaluate_all(CARDS)
                return found if found and found[0]["tileId"] != prev else None

            try:
                found = await poll(new_results, timeout=60)
                await poll(lambda: images.evaluate_all(ALL_LOADED), timeout=60)
            except TimeoutError:
                out["misses"] += 1  # a click on no tile, or the same tile again: not a measurement
                continue
            out["times"].append(time.perf_counter() - start)
            previous = found[0]["tileId"]
            # the results must answer this session's own click: the tile under the point that
            # this page sent (its tap, in lon/lat), ranked first at distance 0 and named in the status
            tap = await page.evaluate(TAP)
            expected = index.tile_id_at(tile_at(index, *tap)) if tap else None
            status_pane = page.locator(".status").first

            async def status_names_query():  # the status pane may update a moment after the cards
                text = " ".join((await status_pane.evaluate(STATUS)).split())
                return text if f"Query: {expected}" in text else None

            try:
                status = await poll(status_names_query, timeout=5)
            except TimeoutError:
                status = " ".join((await status_pane.evaluate(STATUS)).split())
            judge(out, expected, [c["tileId"] for c in found], [int(c["distance"]) for c in found], status)
    except Exception as exc:  # a failed session is a figure, not the end of the benchmark
        out["errors"].append(f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        await context.close()
    return out


async def protocol_session(url: str, index, clicks: int, seed: int, opened: asyncio.Barrier) -> dict:
    """One user over the Bokeh protocol (``protocol_client``): opens the page, waits until every
    session has opened (so clicks measure sessions in use, not pages being built), then taps
    ``clicks`` random tiles one after another, each as soon as the previous results arrived."""
    session = ProtocolSession(url)
    out = dict(times=[], open_s=None, errors=[], leaks=0, leak_samples=[], tied_first=0, misses=0)
    rng = np.random.default_rng(seed)
    try:
        try:
            out["open_s"] = await session.open()
        finally:
            await opened.wait()
        previous = None
        for row in rng.choice(index.n, size=clicks, replace=False):
            tile = index.tile(row)  # one row read: a large index's table is never read whole
            lon, lat = float(tile["lon"]), float(tile["lat"])
            expected = index.tile_id_at(tile_at(index, lon, lat))
            if expected == previous:
                out["misses"] += 1
                continue
            result = await session.click(lon, lat, previous)
            out["times"].append(result.seconds)
            previous = result.tile_ids[0]
            judge(out, expected, result.tile_ids, result.distances, result.status)
    except Exception as exc:  # a failed session is a figure, not the end of the benchmark
        out["errors"].append(f"{type(exc).__name__}: {str(exc)[:200]}")
    out["errors"] += session.errors
    await session.close()
    return out


async def sessions_run(url: str, index, n: int, clicks: int, pid: int, client: str = "protocol") -> dict:
    sampler = RssSampler(pid)
    rss_before = sampler.rss()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if client == "protocol":
        opened = asyncio.Barrier(n)
        results = await asyncio.gather(
            *(protocol_session(url, index, clicks, 1000 * n + i, opened) for i in range(n))
        )
    else:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            results = await asyncio.gather(
                *(one_session(browser, url, index, clicks, seed=1000 * n + i) for i in range(n))
            )
            await browser.close()
    wall = time.perf_counter() - t0
    sampler.stop()
    times = [t for r in results for t in r["times"]]
    opens = [r["open_s"] for r in results if r.get("open_s") is not None]
    return dict(
        sessions=n,
        client=client,
        clicks=len(times),
        misses=sum(r["misses"] for r in results),
        open_p50_s=percentile(opens, 50),
        open_max_s=round(max(opens), 3) if opens else None,
        p50_s=percentile(times, 50),
        p95_s=percentile(times, 95),
        max_s=round(max(times), 3) if times else None,
        errors=sum(len(r["errors"]) for r in results),
        error_messages=[e for r in results for e in r["errors"]][:5],
        leaks=sum(r["leaks"] for r in results),
        leak_samples=[s for r in results for s in r["leak_samples"]][:5],
        tied_first=sum(r["tied_first"] for r in results),
        wall_s=round(wall, 1),
        rss_before_mb=round(rss_before / 2**20),
        rss_peak_mb=round(sampler.peak / 2**20),
        rss_anon_peak_mb=round(sampler.peak_anon / 2**20),
        load_average=round(load0, 2),
    )


async def churn_run(url: str, n: int, pid: int, settle_s: float) -> dict:
    """``n`` sessions opened and closed one after another; server RSS before and after."""
    from playwright.async_api import async_playwright

    proc = psutil.Process(pid)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for _ in range(3):  # the first sessions fill the per-process caches
            context = await browser.new_context()
            await open_app(await context.new_page(), url)
            await context.close()
        await asyncio.sleep(settle_s)
        before = proc.memory_info().rss
        peak = before
        for _ in range(n):
            context = await browser.new_context()
            await open_app(await context.new_page(), url)
            await context.close()
            peak = max(peak, proc.memory_info().rss)
        await browser.close()
    await asyncio.sleep(settle_s)  # the server drops a closed session after its unused lifetime
    after = proc.memory_info().rss
    return dict(
        sessions=n,
        rss_before_mb=round(before / 2**20),
        rss_peak_mb=round(peak / 2**20),
        rss_after_mb=round(after / 2**20),
        growth_pct=round(100.0 * (after - before) / before, 1),
    )


# ------------------------------------------------------------------ API searches
_INDEX = None


def _search_rows(args: tuple[str, str, int]) -> tuple[float, list[str]]:
    """Open the index once per process (memory-mapped) and answer one query."""
    global _INDEX
    from lookalike.indexer.search import Query
    from lookalike.indexer.search import search_index as search
    from lookalike.indexer.store import open_index

    path, tile_id, k = args
    if _INDEX is None or str(_INDEX.path) != path:
        _INDEX = open_index(path, verify=False)
    t0 = time.perf_counter()
    hits = search(_INDEX, Query(tile_id=tile_id), k=k)
    return time.perf_counter() - t0, hits["tile_id"].tolist()


def api_run(index_dir: Path, workers: list[int], queries: int, k: int) -> list[dict]:
    from lookalike.indexer.store import open_index

    index = open_index(index_dir, verify=False)
    rng = np.random.default_rng(0)
    tiles = [index.tile_id_at(r) for r in rng.choice(index.n, size=queries, replace=index.n < queries)]
    jobs = [(str(index.path), str(t), k) for t in tiles]
    serial = [_search_rows(j)[1] for j in jobs]
    rows = []
    # processes are spawned: forking a process that has started OpenMP threads (numba) is unsafe
    pools = (
        ("threads", ThreadPoolExecutor, {}),
        ("processes", ProcessPoolExecutor, dict(mp_context=multiprocessing.get_context("spawn"))),
    )
    for kind, pool_type, options in pools:
        for n in workers:
            with pool_type(max_workers=n, **options) as pool:
                list(pool.map(_search_rows, jobs[: 2 * n]))  # warm: open the index in every worker
                t0 = time.perf_counter()
                answers = list(pool.map(_search_rows, jobs))
                wall = time.perf_counter() - t0
            lat = [a[0] for a in answers]
            rows.append(
                dict(
                    kind=kind,
                    workers=n,
                    queries=len(jobs),
                    queries_per_s=round(len(jobs) / wall, 1),
                    p50_ms=round(1000 * statistics.median(lat), 1),
                    p95_ms=round(1000 * float(np.percentile(lat, 95)), 1),
                    identical_to_serial=all(a[1] == s for a, s in zip(answers, serial)),
                    load_average=round(os.getloadavg()[0], 2),
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------ report
def markdown(result: dict) -> str:
    lines = [
        "# Load: many sessions on one explorer, many searches on one index",
        "",
        f"Produced by `python benchmarks/load.py`; index `{Path(result['index']).name}` "
        f"({result['tiles']} tiles), {result['cpus']} cores, {result['clicks_per_session']} clicks a "
        "session. Clients: `protocol`, sessions that speak the Bokeh protocol as a page does "
        "(`tests/protocol_client.py`: the page's GET, the document, the map's size, taps, and the "
        "thumbnails not sent inline fetched over HTTP), so the server is measured alone; `browser`, "
        "contexts of one headless Chromium on the same cores as the server. All sessions open at "
        "once; a protocol session starts clicking when all have opened, and clicks again as soon as "
        "its results arrived. A click is timed from the tap until its first page of thumbnails is "
        "in (decoded, in a browser). A leak is a status or a page of hits that does not answer the "
        "session's own tap (the tile under the point it sent, at distance 0); a tie, another tile "
        "at distance 0 ranked first by index order, is counted apart.",
        "",
        "## Concurrent explorer sessions",
        "",
        "| sessions | client | page open p50 / max (s) | clicks timed | p50 (s) | p95 (s) | max (s) | errors | leaks | another tile at distance 0 first | server RSS before → peak (MB) | of it not file pages, peak (MB) | load avg |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in result["sessions"]:
        lines.append(
            f"| {r['sessions']} | {r.get('client', 'browser')} | {r.get('open_p50_s')} / "
            f"{r.get('open_max_s')} | {r['clicks']} | {r['p50_s']} | {r['p95_s']} | {r['max_s']} | "
            f"{r['errors']} | {r['leaks']} | {r.get('tied_first', '')} | "
            f"{r['rss_before_mb']} → {r['rss_peak_mb']} | {r.get('rss_anon_peak_mb', '')} | "
            f"{r['load_average']} |"
        )
    c = result.get("churn")
    if c:
        lines += [
            "",
            "## Sessions opened and closed",
            "",
            f"{c['sessions']} sessions opened and closed one after another: server RSS "
            f"{c['rss_before_mb']} MB before, {c['rss_peak_mb']} MB at most, {c['rss_after_mb']} MB "
            f"after they closed ({c['growth_pct']:+.1f} %).",
        ]
    if result.get("api"):
        lines += [
            "",
            f"## Concurrent API searches on one index (exact scan, k = {result['api_k']})",
            "",
            "| workers | kind | queries/s | p50 (ms) | p95 (ms) | identical to serial |",
            "|---:|---|---:|---:|---:|---|",
        ]
        for r in result["api"]:
            lines.append(
                f"| {r['workers']} | {r['kind']} | {r['queries_per_s']} | {r['p50_ms']} | "
                f"{r['p95_ms']} | {'yes' if r['identical_to_serial'] else '**no**'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", nargs="?", help="index directory (default: the Mars demo index)")
    parser.add_argument("--sessions", default="1,4,8,16,32")
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument(
        "--client",
        choices=["protocol", "browser"],
        default="protocol",
        help="sessions over the Bokeh protocol (the server measured alone) or in Chromium",
    )
    parser.add_argument("--url", help="load a server that is already running at this URL instead")
    parser.add_argument("--churn", type=int, default=100, help="sessions opened and closed (0: skip)")
    parser.add_argument(
        "--settle",
        type=float,
        default=45.0,
        help="seconds to wait for closed sessions to be dropped before measuring RSS",
    )
    parser.add_argument("--workers", default="1,2,4,8,16")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--json", default="benchmarks/results/load.json")
    args = parser.parse_args()
    env = dict(os.environ, LOOKALIKE_DATA=os.environ.get("LOOKALIKE_DATA", str(data_dir())))
    os.environ.update(env)
    if args.index:
        index = Path(args.index)
    else:
        from lookalike.workflows.demo import ensure_demo_index

        index = ensure_demo_index("mars")
    from lookalike.indexer.store import open_index

    opened = open_index(index)
    result = dict(
        index=Path(index).name,
        tiles=opened.n,
        cpus=os.cpu_count(),
        sessions=[],
        clicks_per_session=args.clicks,
        api_k=args.k,
    )
    if args.workers:
        result["api"] = api_run(index, [int(w) for w in args.workers.split(",")], args.queries, args.k)
    proc, url = (None, args.url) if args.url else start_server(index, env, timeout=300)
    pid = server_pid(url) if proc is None else proc.pid
    try:
        for n in [int(s) for s in args.sessions.split(",") if s]:
            result["sessions"].append(
                asyncio.run(sessions_run(url, opened, n, args.clicks, pid, args.client))
            )
            print(json.dumps(result["sessions"][-1]), flush=True)
        if args.churn:
            result["churn"] = asyncio.run(churn_run(url, args.churn, pid, args.settle))
            print(json.dumps(result["churn"]), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
