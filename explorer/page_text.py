"""Text on the page: blocks of HTML, and user input made inert before it is shown."""

from __future__ import annotations

import panel as pn

WARNING_STYLE = {
    "background": "#4d3800",
    "color": "#ffe08a",
    "border": "1px solid #8a6d00",
    "border-radius": "4px",
    "padding": "2px 10px",
}
# characters that Markdown or HTML would read as markup
_MARKUP = frozenset("\\`*_{}[]()<>#+-.!|&\"'~=")


def text_block(html_text, size: int | None = None, **params) -> pn.widgets.StaticText:
    """A block of text given as HTML (escape what does not come from this code: ``inert``,
    ``html.escape``). A Bokeh Div rather than a Panel HTML or Markdown pane: any of those makes
    the page load MathJax (600 kB of script) and re-sends its stylesheets with every change,
    which makes Bokeh walk every model of the page, on the server and in the browser."""
    if size:
        params["styles"] = {**params.get("styles", {}), "font-size": f"{size}px"}
    return pn.widgets.StaticText(value=html_text, **params)


def inert(text: str) -> str:
    """``text`` as Markdown that shows it literally: every character that HTML or Markdown would
    read as markup becomes a numeric character reference (user input, such as a shared link's
    values, must never become markup in someone else's page)."""
    return "".join(f"&#{ord(c)};" if c in _MARKUP else c for c in str(text))
