"""Server defaults that protect a shared explorer: it listens on this machine only unless told
otherwise, and bounds what a client may send."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.slow]


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_listens_on_loopback_only(explorer_url):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc/net/tcp to list listening sockets")
    port = urlparse(explorer_url).port
    addresses = listening_addresses(port)
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert addresses and addresses <= loopback, addresses


def test_an_oversized_request_body_is_refused(explorer_url):
    body = b"x" * (1024 * 1024)
    request = urllib.request.Request(explorer_url + "thumb/x/y.jpg", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (TimeoutError, ConnectionError, urllib.error.URLError):
        status = 413  # the server closed the connection on the oversized body
    assert 400 <= status < 500


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_basemap_route_answers_views_and_refuses_the_rest(explorer_url):
    """The browser's basemap images: a JPEG of the asked size for a served index and a known view;
    anything else a short plain-text refusal that echoes nothing of the request."""
    from io import BytesIO

    from PIL import Image

    status, kind, body = _get(
        explorer_url + "basemap/mars_small/global.jpg?x0=-20&y0=-10&x1=20&y1=10&w=200&h=100"
    )
    assert status == 200 and kind == "image/jpeg"
    assert Image.open(BytesIO(body)).size == (200, 100)
    status, _, body = _get(
        explorer_url + "basemap/mars_small/north.jpg?x0=-1e6&y0=-1e6&x1=1e6&y1=1e6&w=64&h=64"
    )
    assert status == 200 and Image.open(BytesIO(body)).size == (64, 64)
    bad = [
        "basemap/nope/global.jpg?x0=0&y0=0&x1=1&y1=1&w=8&h=8",
        "basemap/mars_small/sideways.jpg?x0=0&y0=0&x1=1&y1=1&w=8&h=8",
        "basemap/mars_small/global.jpg?x0=0&y0=0&x1=1&y1=1&w=99999&h=8",
        "basemap/mars_small/global.jpg?x0=5&y0=0&x1=1&y1=1&w=8&h=8",
        "basemap/mars_small/global.jpg?x0=nan&y0=0&x1=1&y1=1&w=8&h=8",
        "basemap/mars_small/global.jpg?x0=%3Cscript%3E&y0=0&x1=1&y1=1&w=8&h=8",
        "basemap/mars_small/global.jpg",
    ]
    for path in bad:
        status, kind, body = _get(explorer_url + path)
        assert status in (400, 404), path
        assert (
            kind.startswith("text/plain") and len(body) < 200 and b"<" not in body and b"script" not in body
        )
