"""Every private or undocumented part of Panel, HoloViews and Bokeh the explorer relies on.

The libraries offer no public way to do these things; each function below names what it reaches
and why it is needed. tests/explorer/test_panel_internals.py pins every one of them on the
installed versions, so an upgrade that moves one fails there, by name, instead of as a slower or
broken page.

- ``clear_range_triggers``: HoloViews' ``plot._trigger`` (range streams a new plot triggers once
  the page is made, which renders the whole map a second time).
- ``drawing_renderers``: HoloViews' ``plot.subplots``, ``current_frame`` and
  ``handles['glyph_renderer']`` (the Bokeh renderers of the drawing layers, to edit their shapes).
- ``run_on_thread_pool``: ``pn.state._thread_pool`` (whether Panel runs callbacks on threads)
  and ``panel.io.state.set_curdoc``.
- ``send_model_changes``: ``pn.state._views`` and ``viewable._models`` (a notebook's document and
  comm: Panel sends only its own changes there, not those made to Bokeh models directly).
- ``without_web_fonts``: ``pn.theme.Fast._resources`` (the web font the Fast design links).
- ``without_mathjax``: a template's ``_render_items['js_area']`` and ``_js_area``.
- ``release_offline_root``: ``pane._cleanup(root)`` and ``pn.state._views`` (a root rendered
  outside a session, which no session destruction releases).
- ``figure_inner_size``: ``bokeh.core.property.descriptors.UnsetValueError`` (an unset property).
- ``quiet_document``: ``doc.models.freeze()`` and ``bokeh.core.property.validation.validate``.

The ``_esm``, ``_stylesheets`` and ``_handle_msg`` of ``results.ThumbnailGrid`` are not on this
list: they are Panel's documented way to define a ``JSComponent``. The test pins them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import panel as pn
from bokeh.core.property.descriptors import UnsetValueError
from bokeh.core.property.validation import validate


def clear_range_triggers(plot) -> None:
    """Drop the range-stream triggers HoloViews queues for a new plot. Its test (``xlim or
    ylim``) holds for the default (None, None) too, and the trigger renders the whole map a
    second time: a quarter of the server's cost of a new page."""
    plot.traverse(lambda p: p._trigger.clear() if isinstance(getattr(p, "_trigger", None), list) else None)


def drawing_renderers(plot, group: str) -> list[tuple[object, object]]:
    """(element, Bokeh glyph renderer) of each layer of an overlay plot whose element is of
    ``group``."""
    out = []
    for sub in getattr(plot, "subplots", {}).values():
        frame = getattr(sub, "current_frame", None)
        if frame is not None and getattr(frame, "group", None) == group:
            renderer = sub.handles.get("glyph_renderer")
            if renderer is not None:
                out.append((frame, renderer))
    return out


def run_on_thread_pool(doc, fn: Callable[[], None]) -> bool:
    """Run ``fn`` on Panel's thread pool for the session of ``doc``; False (nothing run) when
    Panel runs no thread pool or there is no session."""
    if doc is None or pn.state._thread_pool is None:
        return False
    from panel.io.state import set_curdoc

    with set_curdoc(doc):
        pn.state.execute(fn, schedule="thread")
    return True


def send_model_changes(viewable: pn.viewable.Viewable, fn: Callable[[], None]) -> None:
    """Run ``fn``, which changes Bokeh models of ``viewable`` directly, and send the changes to
    the notebooks showing it (outside a notebook, just run it)."""
    from panel.io.notebook import push

    shown = [pn.state._views[ref] for ref in list(viewable._models) if ref in pn.state._views]
    targets = [(doc, comm) for _, _, doc, comm in shown if comm is not None]
    held = [doc.callbacks.hold_value for doc, _ in targets]
    for doc, _ in targets:
        doc.hold("combine")  # the changes are collected, then sent as one message
    try:
        fn()
    finally:
        for (doc, comm), policy in zip(targets, held):
            push(doc, comm)
            if policy is None:
                doc.unhold()


def without_web_fonts() -> None:
    """Drop the web font Panel's Fast design links from fonts.googleapis.com on every page: an
    offline or firewalled browser waits for it and never gets it. Panel offers no option for
    this, hence the class edit."""
    pn.theme.Fast._resources = {
        kind: value for kind, value in pn.theme.Fast._resources.items() if kind != "font"
    }


def without_mathjax(template: pn.template.BaseTemplate) -> None:
    """Spare the page MathJax's 600 kB of script, which nothing here typesets: Panel loads it
    for any Panel HTML model in the document, and a template always holds one, an empty area
    for scripts that nothing in the explorer uses. A plain Bokeh Div takes its place (the
    other texts of the page are Divs for the same reason, ``page_text.text_block``)."""
    items = getattr(template, "_render_items", {})
    if "js_area" in items:
        template._js_area = pn.widgets.StaticText(margin=0, width=0, height=0)
        items["js_area"] = (template._js_area, items["js_area"][1])


def release_offline_root(pane: pn.viewable.Viewable, root) -> None:
    """Release a root model rendered outside any session (``get_root``), as Panel does when a
    session is destroyed."""
    pane._cleanup(root)
    pn.state._views.pop(root.ref["id"], None)


def figure_inner_size(figure) -> tuple[int | None, int | None]:
    """The figure's drawn width and height as the browser last reported them; None before."""
    try:
        return figure.inner_width or None, figure.inner_height or None
    except (AttributeError, UnsetValueError):  # no figure yet, or not laid out by a browser yet
        return None, None


@contextmanager
def quiet_document(doc) -> Iterator[None]:
    """Build a document's models with one walk over them at the end (rather than one per change)
    and without Bokeh's property validation (a fifth of a new page's cost; every value set
    comes from this code, not from a user)."""
    with doc.models.freeze(), validate(False):
        yield
