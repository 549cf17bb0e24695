"""Server defaults that protect a shared explorer: it listens on this machine only unless told
otherwise, and bounds what a client may send."""

from __future__ import annotations

import socket
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
    except (ConnectionError, socket.timeout, urllib.error.URLError):
        status = 413  # the server closed the connection on the oversized body
    assert 400 <= status < 500
