"""An explorer session driven over the Bokeh server protocol, without a browser.

A browser page of the explorer is an HTTP GET (the server builds the session's document) and a
websocket that pulls the document, sends the page's changes (a map tap writes the ``map_taps``
data source) and receives the server's patches (the results grid, the status, the map layers).
``ProtocolSession`` does the same with the same messages, so many sessions can load one server
while costing the client little: what is measured is the server. It sends what a browser sends
after the document arrives (the map's size, ``document_ready``), and fetches over HTTP the
thumbnails a page of results did not carry inline, six at a time as a browser does.

    session = ProtocolSession(url)
    await session.open()
    result = await session.click(lon, lat)   # -> ClickResult: seconds, first tile, status text
    await session.close()
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

# what Chromium reports for the map in a 1400 x 1000 window (benchmarks/explorer_click.py's)
MAP_SIZE = dict(inner_width=893, inner_height=401, outer_width=971, outer_height=485)
BROWSER_FETCHES = 6  # HTTP/1.1 connections a browser opens to one host


@dataclass
class ClickResult:
    seconds: float  # tap sent -> first page of results and its thumbnails received
    tile_ids: list[str]  # the page of results, in rank order
    distances: list[int]
    status: str  # the status's text after the click, as shown
    fetched: int  # thumbnails fetched over HTTP (not inline)


@dataclass
class _Message:
    header: dict
    content: dict
    buffers: dict[str, bytes] = field(default_factory=dict)


def _objects(node, out: dict) -> dict:
    """{id: object} of every model object in a serialized document or patch."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "id" in node:
            out[node["id"]] = node
        for value in node.values():
            _objects(value, out)
    elif isinstance(node, list):
        for value in node:
            _objects(value, out)
    return out


def _entries(value):
    """A serialized Bokeh map ({"type": "map", "entries": [[k, v], ...]}) as a dict."""
    if isinstance(value, dict) and value.get("type") == "map":
        return {k: _entries(v) for k, v in value.get("entries", [])}
    return value


class ProtocolSession:
    """One explorer page over the Bokeh protocol (see the module's docstring)."""

    def __init__(self, url: str, timeout: float = 120.0):
        self.url, self.timeout = url, timeout
        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.ws: WebSocketClientConnection | None = None
        self.http = AsyncHTTPClient(force_instance=True, max_clients=BROWSER_FETCHES)
        self.ids: dict[str, str] = {}  # role -> model id: taps, grid, figure
        self.items: list[dict] = []  # the results grid's items, as last patched
        self.texts: dict[str, str] = {}  # model id -> last text of each text model (Div, HTML)
        self._replies: dict[str, asyncio.Future] = {}
        self._changed = asyncio.Event()
        self._acked = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self._taps = 0
        self.errors: list[str] = []

    # -- connection ---------------------------------------------------------
    async def open(self) -> float:
        """Load the page and its document, then report the map's size as a browser does;
        returns the seconds it took."""
        t0 = time.perf_counter()
        page = await self.http.fetch(
            HTTPRequest(self.url, request_timeout=self.timeout, headers={"Accept-Encoding": "gzip"})
        )
        token = re.search(r'"token"\s*:\s*"([^"]+)"', page.body.decode())
        if token is None:
            raise RuntimeError("the page carries no session token")
        ws_url = urljoin(self.url.replace("http", "ws", 1), "ws")
        request = HTTPRequest(ws_url, headers={"Origin": self.origin}, request_timeout=self.timeout)
        self.ws = await websocket_connect(
            request, subprotocols=["bokeh", token.group(1)], max_message_size=64 * 2**20
        )
        self._reader = asyncio.create_task(self._read())
        # the server reads nothing before its ACK (it is still setting the connection up)
        await asyncio.wait_for(self._acked.wait(), self.timeout)
        await self._request("PULL-DOC-REQ", {}, wait_for="PULL-DOC-REPLY")
        await self._patch(
            [
                {"kind": "ModelChanged", "model": {"id": self.ids["figure"]}, "attr": name, "new": value}
                for name, value in MAP_SIZE.items()
            ]
        )
        await self._patch(
            [
                {
                    "kind": "MessageSent",
                    "msg_type": "bokeh_event",
                    "msg_data": {"type": "event", "name": "document_ready", "values": {"type": "map"}},
                }
            ]
        )
        return time.perf_counter() - t0

    async def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
        self.http.close()

    # -- the user's actions -------------------------------------------------
    async def click(self, x: float, y: float, previous: str | None = None) -> ClickResult:
        """Tap the map at (x, y) in the map's coordinates (lon/lat in the global view); wait
        until a page of results whose first tile is not ``previous`` has arrived and its
        thumbnails are fetched."""
        self._taps += 1
        t0 = time.perf_counter()
        self._changed.clear()
        await self._patch(
            [
                {
                    "kind": "ModelChanged",
                    "model": {"id": self.ids["taps"]},
                    "attr": "data",
                    "new": {"type": "map", "entries": [["x", [x]], ["y", [y]], ["n", [self._taps]]]},
                }
            ],
            wait=False,
        )
        deadline = time.monotonic() + self.timeout
        while not (self.items and self.items[0].get("tile_id") != previous):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no new results")
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), remaining)
        items = list(self.items)
        urls = [
            urljoin(self.url, it["src"]) for it in items if not str(it.get("src", "")).startswith("data:")
        ]
        await asyncio.gather(*(self.http.fetch(u, request_timeout=self.timeout) for u in urls))
        seconds = time.perf_counter() - t0
        return ClickResult(
            seconds,
            [str(it["tile_id"]) for it in items],
            [int(it["distance"]) for it in items],
            self.status(),
            len(urls),
        )

    def status(self) -> str:
        """The text of the status (the text model that names the query), as a page shows it."""
        shown = (html.unescape(re.sub(r"<[^>]*>", " ", t)) for t in self.texts.values())
        return next((t for t in shown if "Query:" in t), "")

    # -- protocol -------------------------------------------------------------
    async def _send(self, msgtype: str, content: dict, msgid: str | None = None) -> str:
        msgid = msgid or uuid.uuid4().hex.upper()
        for frame in ({"msgid": msgid, "msgtype": msgtype}, {}, content):
            await self.ws.write_message(json.dumps(frame))
        return msgid

    async def _request(self, msgtype: str, content: dict, wait_for: str = "OK") -> _Message:
        future = asyncio.get_running_loop().create_future()
        msgid = uuid.uuid4().hex.upper()
        self._replies[msgid] = future  # before sending: the reply may be read at once
        await self._send(msgtype, content, msgid)
        reply = await asyncio.wait_for(future, self.timeout)
        if reply.header["msgtype"] == "ERROR":
            raise RuntimeError(f"the server refused {msgtype}: {str(reply.content)[:300]}")
        if reply.header["msgtype"] != wait_for:
            raise RuntimeError(f"{msgtype} answered {reply.header['msgtype']}")
        return reply

    async def _patch(self, events: list[dict], wait: bool = True) -> None:
        if wait:
            await self._request("PATCH-DOC", {"events": events})
        else:
            await self._send("PATCH-DOC", {"events": events})

    async def _read(self) -> None:
        try:
            while True:
                message = await self._message()
                if message is None:
                    return
                kind, reqid = message.header["msgtype"], message.header.get("reqid")
                if kind == "ACK":
                    self._acked.set()
                elif kind == "PULL-DOC-REPLY":
                    self._load(message.content["doc"])
                elif kind == "PATCH-DOC":
                    self._apply(message.content.get("events", []))
                elif kind == "ERROR":
                    self.errors.append(str(message.content)[:300])
                if reqid in self._replies:
                    self._replies.pop(reqid).set_result(message)
        except Exception as exc:  # surfaced through the waiting calls' timeouts and ``errors``
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _message(self) -> _Message | None:
        frames = []
        for _ in range(3):
            frame = await self.ws.read_message()
            if frame is None:
                return None
            frames.append(json.loads(frame))
        header, _, content = frames
        buffers = {}
        for _ in range(int(header.get("num_buffers", 0) or 0)):
            ref = json.loads(await self.ws.read_message())
            buffers[ref["id"]] = await self.ws.read_message()
        return _Message(header, content, buffers)

    def _load(self, doc: dict) -> None:
        for oid, obj in _objects(doc, {}).items():
            attributes = obj.get("attributes", {})
            if attributes.get("name") == "map_taps":
                self.ids["taps"] = oid
            elif obj.get("name") == "Figure":
                self.ids["figure"] = oid
            elif str(obj.get("name", "")).startswith("ThumbnailGrid") and "class_name" not in attributes:
                self.ids["grid"] = oid  # the grid's parameters (its data model)
            if isinstance(attributes.get("text"), str):
                self.texts[oid] = attributes["text"]
        missing = {"taps", "figure", "grid"} - set(self.ids)
        if missing:
            raise RuntimeError(f"the document has no {', '.join(sorted(missing))}")

    def _apply(self, events: list[dict]) -> None:
        for event in events:
            if event.get("kind") != "ModelChanged":
                continue
            oid, attr = event["model"]["id"], event.get("attr")
            if oid == self.ids.get("grid") and attr == "items":
                self.items = [_entries(item) for item in event["new"]]
                self._changed.set()
            elif attr == "text" and isinstance(event.get("new"), str):
                self.texts[oid] = event["new"]
                self._changed.set()
