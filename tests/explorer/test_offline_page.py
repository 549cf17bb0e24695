"""The page needs nothing from the internet: every request goes to the explorer's own server
(users work offline, behind firewalls, on air-gapped mission networks)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_page_loads_everything_from_its_own_server(page, explorer_url):
    own = urlparse(explorer_url).netloc
    outside = []
    page.on("request", lambda r: outside.append(r.url)
            if urlparse(r.url).scheme in ("http", "https", "ws", "wss") and urlparse(r.url).netloc != own else None)
    page.goto(explorer_url)
    page.wait_for_selector("canvas", timeout=60_000)
    page.wait_for_load_state("networkidle")
    assert outside == [], f"requests outside the server: {sorted(set(outside))[:10]}"
