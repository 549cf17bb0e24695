"""The status above the results: hit count, query and filters in force, and the last error."""

from __future__ import annotations

import panel as pn

from lookalike.explorer.collection_choice import code_note
from lookalike.explorer.page_text import WARNING_STYLE, inert, text_block
from lookalike.explorer.state import ExplorerState


def status_html(
    state: ExplorerState, hits, error, query_tile, use_examples, positives, negatives, *_filters
) -> str:
    """The hit count, the query and the filters in force, always visible (values from the
    user, such as a shared link's, pass through ``inert``)."""
    if hits is None:
        head = "<b>Click the map</b> to search for the lookalikes of the tile under the cursor."
    else:
        head = f"<b>{len(hits)} hits</b> (k = {state.k}, {state.elapsed_ms:.0f} ms)"
    if use_examples and positives:
        query = f"{len(positives)} positive / {len(negatives)} negative examples"
    else:
        query = inert(query_tile) if query_tile else "none"
    filters = [inert(f) for f in state.describe_filters()]
    lines = [head, f"Query: {query}", "Filters: " + ("; ".join(filters) if filters else "none")]
    if state.searched_note:
        lines.insert(1, inert(state.searched_note))
    if hits is not None and code_note(state):
        lines.append(inert(code_note(state)))
    if positives or negatives:
        lines.append(f"Marked: {len(positives)} positive, {len(negatives)} negative")
    return "<br>".join(lines)


def status_pane(state: ExplorerState) -> pn.Column:
    status = text_block(
        pn.bind(
            status_html,
            state,
            state.param.hits,
            state.param.error,
            state.param.query_tile,
            state.param.use_examples,
            state.param.positives,
            state.param.negatives,
            state.param.zones,
            state.param.time_start,
            state.param.time_end,
            state.param.bbox,
            state.param.boxes,
            state.param.polygons,
            state.param.searched_note,
        ),
        css_classes=["status"],
        sizing_mode="stretch_width",
        margin=(0, 10),
        styles={"line-height": "1.5"},
    )
    alert = text_block(
        pn.bind(inert, state.param.error),
        css_classes=["error"],
        styles=WARNING_STYLE,
        visible=pn.bind(bool, state.param.error),
        sizing_mode="stretch_width",
    )
    return pn.Column(alert, status, sizing_mode="stretch_width")
