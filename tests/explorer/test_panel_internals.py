"""What ``explorer.panel_internals`` (and ``results.ThumbnailGrid``) rely on in the installed
Panel, HoloViews and Bokeh: private attributes exist and behave as assumed. An upgrade that
changes one fails here, by name, rather than as a slower or broken page."""

from __future__ import annotations

import holoviews as hv
import panel as pn
import pytest
from bokeh.document import Document
from bokeh.plotting import figure

from lookalike.explorer import panel_internals


@pytest.fixture(scope="module", autouse=True)
def bokeh_backend():
    hv.extension("bokeh", logo=False)


def test_range_triggers_are_a_list_on_plots_and_are_cleared():
    plot = hv.renderer("bokeh").get_plot(hv.Curve([1, 2, 3]) * hv.Curve([3, 2, 1]))
    lists = []
    plot.traverse(lambda p: lists.append(p._trigger) if hasattr(p, "_trigger") else None)
    assert lists and all(isinstance(t, list) for t in lists)
    lists[0].append(object())
    panel_internals.clear_range_triggers(plot)
    assert all(t == [] for t in lists)


def test_drawing_renderers_are_found_by_group():
    drawn = hv.Rectangles([(0, 0, 1, 1)], group="Drawn")
    plot = hv.renderer("bokeh").get_plot(hv.Curve([1, 2]) * drawn * hv.Polygons([], group="Drawn"))
    found = panel_internals.drawing_renderers(plot, "Drawn")
    assert len(found) == 2
    assert {type(element) for element, _ in found} == {hv.Rectangles, hv.Polygons}
    assert all(type(renderer).__name__ == "GlyphRenderer" for _, renderer in found)


def test_thread_pool_is_none_without_threads():
    assert hasattr(pn.state, "_thread_pool")
    assert panel_internals.run_on_thread_pool(None, lambda: None) is False


def test_notebook_views_hold_viewable_root_document_and_comm():
    pane = pn.pane.Markdown("x")
    root = pane.get_root(Document())
    assert root.ref["id"] in pane._models
    assert isinstance(pn.state._views, dict)
    changed = []
    panel_internals.send_model_changes(pane, lambda: changed.append(True))  # no notebook: just runs
    assert changed == [True]
    panel_internals.release_offline_root(pane, root)
    assert root.ref["id"] not in pane._models and root.ref["id"] not in pn.state._views


def test_fast_design_links_a_web_font_that_can_be_dropped():
    assert isinstance(pn.theme.Fast._resources, dict)
    saved = dict(pn.theme.Fast._resources)
    try:
        panel_internals.without_web_fonts()
        assert "font" not in pn.theme.Fast._resources
    finally:
        pn.theme.Fast._resources = saved


def test_template_script_area_is_replaced_by_a_div():
    template = pn.template.FastListTemplate(main=[pn.widgets.StaticText(value="x")])
    assert "js_area" in template._render_items
    panel_internals.without_mathjax(template)
    assert isinstance(template._render_items["js_area"][0], pn.widgets.StaticText)
    assert template._js_area is template._render_items["js_area"][0]


def test_figure_size_is_unknown_until_laid_out():
    assert panel_internals.figure_inner_size(None) == (None, None)
    assert panel_internals.figure_inner_size(figure()) == (None, None)


def test_quiet_document_freezes_models_and_validation():
    doc = Document()
    with panel_internals.quiet_document(doc):
        doc.add_root(figure())
    assert len(doc.roots) == 1


def test_thumbnail_grid_reads_its_script_and_stylesheet_from_files():
    from lookalike.explorer.results import ThumbnailGrid

    assert ThumbnailGrid._esm.is_file()
    css = (ThumbnailGrid._esm.parent / "thumbnail_grid.css").read_text(encoding="utf-8")
    assert ThumbnailGrid._stylesheets == [css] and ".thumb" in css
    grid = ThumbnailGrid()
    model = grid.get_root(Document())
    assert "export function render" in model.esm
    assert any(".thumb-grid" in str(sheet) for sheet in model.stylesheets)  # inline outside a server
    received = []
    grid._on_action = lambda action, tile_id: received.append((action, tile_id))
    grid._handle_msg({"action": "focus", "tile_id": "t1"})
    assert received == [("focus", "t1")]
