"""Crafted links and thumbnail URLs in a real Chromium: no script runs, no traceback page, no
server folder, and the app opens with a message."""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import quote, urlencode

import pytest
from explorer_testkit import open_app, shadow_text, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCRIPT = '<img src=x onerror="window.__pwned=(window.__pwned||0)+1;alert(1)">'


def watch_for_script(page) -> list[str]:
    """Dialogs opened by the page (an injected alert) are recorded and dismissed."""
    dialogs: list[str] = []

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


def error_text(page) -> str:
    """The message banner's text, once it is shown and filled (the two updates may come apart)."""
    page.locator(".error").first.wait_for(state="visible")
    return wait_until(lambda: " ".join(shadow_text(page, ".error").split()), what="the message's text")


def test_crafted_link_runs_no_script(page, explorer_url, explorer_index):
    dialogs = watch_for_script(page)
    link = (
        explorer_url
        + "?"
        + urlencode({"tile": SCRIPT, "classes": SCRIPT, "from": SCRIPT, "pos": SCRIPT}, quote_via=quote)
    )
    open_app(page, link)
    text = error_text(page)
    page.wait_for_timeout(500)
    assert dialogs == [] and page.evaluate("() => window.__pwned") is None  # no script ran
    assert page.locator("img[src='x']").count() == 0  # no element was injected
    assert "<img src=x" in text  # the value is shown, as text
    content = page.content()
    assert "Traceback" not in content and str(explorer_index.parent) not in text


@pytest.mark.parametrize("k", ["-5", "100000"])
def test_out_of_range_k_opens_the_app_with_a_message(page, explorer_url, k):
    open_app(page, explorer_url + f"?k={k}")
    assert "k must be between 1 and 10000" in error_text(page)
    assert "Traceback" not in page.content()


def test_unknown_tile_names_no_server_folder(page, explorer_url, explorer_index):
    open_app(page, explorer_url + "?tile=nonsense")
    text = error_text(page)
    assert "nonsense" in text and str(explorer_index) not in text and "/" not in text.split("nonsense")[1]


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode("latin-1")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode("latin-1")


@pytest.mark.parametrize(
    "name, tile",
    [
        ("{index}", "<img src=x onerror=alert(1)>"),
        ("<script>alert(1)</script>", "t"),
        ("{index}", "../../../../etc/passwd"),
        ("{index}", "..%2F..%2Fmanifest"),
        ("{index}", "z" * 20_000),
    ],
)
def test_thumbnail_refusals_are_plain_text(page, explorer_url, explorer_index, name, tile):
    dialogs = watch_for_script(page)
    url = (
        f"{explorer_url}thumb/{quote(name.format(index=explorer_index.name), safe='')}/"
        f"{quote(tile, safe='%')}.jpg"
    )
    status, kind, body = fetch(url)
    assert status == 404 and kind.startswith("text/plain")
    assert "<" not in body and "root:" not in body and len(body) < 100 and "/" not in body
    page.goto(url)  # and in the browser: shown as text, no script
    page.wait_for_timeout(300)
    assert dialogs == []
