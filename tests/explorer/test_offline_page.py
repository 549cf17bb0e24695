"""The page needs nothing from the internet: every request goes to the explorer's own server
(users work offline, behind firewalls, on air-gapped mission networks)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_page_loads_everything_from_its_own_server(page, explorer_url):
    own = urlparse(explorer_url).netloc
    outside = []
    page.on(
        "request",
        lambda r: (
            outside.append(r.url)
            if urlparse(r.url).scheme in ("http", "https", "ws", "wss") and urlparse(r.url).netloc != own
            else None
        ),
    )
    page.goto(explorer_url)
    page.wait_for_selector("canvas", timeout=60_000)
    page.wait_for_load_state("networkidle")
    assert outside == [], f"requests outside the server: {sorted(set(outside))[:10]}"


def test_page_loads_no_script_it_does_not_use(page, explorer_url):
    """No MathJax: nothing on the page typesets formulas, and its bundle is a third of the
    page's script (Panel loads it whenever a Panel HTML or Markdown pane is in the document)."""
    scripts = []
    page.on(
        "request", lambda r: scripts.append(urlparse(r.url).path) if r.resource_type == "script" else None
    )
    page.goto(explorer_url)
    page.wait_for_selector("canvas", timeout=60_000)
    page.wait_for_load_state("networkidle")
    assert any("bokeh.min.js" in s for s in scripts), scripts  # the check sees the page's scripts
    assert not [s for s in scripts if "mathjax" in s.lower()]
