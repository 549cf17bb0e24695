"""Sessions driven over the Bokeh protocol (``tests/protocol_client.py``, what the load benchmark
uses): each one gets the answer to its own clicks, at once, while others click too."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from protocol_client import ProtocolSession

from lookalike.indexer.search import tile_at
from lookalike.indexer.store import open_index

pytestmark = [pytest.mark.slow]


async def clicks(url: str, index, rows: list[int]) -> list[tuple[str, object]]:
    """Open a session, click the centres of these tiles one after another; (expected, result)."""
    session = ProtocolSession(url, timeout=60)
    try:
        await session.open()
        out, previous = [], None
        for row in rows:
            lon, lat = float(index.tiles["lon"].iat[row]), float(index.tiles["lat"].iat[row])
            expected = str(index.tiles["tile_id"].iat[tile_at(index, lon, lat)])
            result = await session.click(lon, lat, previous)
            previous = result.tile_ids[0]
            out.append((expected, result))
        assert not session.errors
        return out
    finally:
        await session.close()


def test_concurrent_sessions_each_see_their_own_results(explorer_url, explorer_index):
    index = open_index(explorer_index)
    rng = np.random.default_rng(3)
    plans = [[int(r) for r in rng.choice(index.n, size=4, replace=False)] for _ in range(3)]

    async def run():
        return await asyncio.gather(*(clicks(explorer_url, index, rows) for rows in plans))

    # on a thread of its own: Playwright's sync API may hold this thread's event loop
    with ThreadPoolExecutor(1) as pool:
        sessions = pool.submit(asyncio.run, run()).result()
    for answers in sessions:
        for expected, result in answers:
            assert result.tile_ids[0] == expected  # the clicked tile ranks first...
            assert result.distances[0] == 0  # ...at distance 0
            assert result.distances == sorted(result.distances)
            assert f"Query: {expected}" in result.status
            assert 0 < len(result.tile_ids) <= 50  # one page of thumbnails arrived (inline or fetched)
