"""The sidebar's collections of a body: a switch per collection (drawn on the map and searched
by a click), "Search in" (the finest collection under a click, or one chosen), and a date per
collection whose scenes of one place overlap in time (which acquisition the map draws)."""

from __future__ import annotations

import panel as pn

from lookalike.explorer.acquisitions import acquisitions, date_options
from lookalike.explorer.collection_choice import AUTO
from lookalike.explorer.page_text import text_block
from lookalike.explorer.rebuilt_views import watch_state
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.state import ExplorerState

AUTO_LABEL = "auto (the finest under the click)"
LATEST_LABEL = "latest"


def enter_body(state: ExplorerState, served: ServedIndexes, body: str, name: str | None = None) -> None:
    """Show ``body``'s map, searching collection ``name`` (by default the body's mosaic or first)."""
    collections = served.collections(body)
    name = name if name in collections else served.body_default(body)
    state.set_body(
        body, {n: e.index for n, e in collections.items()}, {n: e.label for n, e in collections.items()}, name
    )


def collection_controls(state: ExplorerState) -> list[pn.viewable.Viewable]:
    """The collection switches, "Search in" and the date selectors, bound to the state."""
    labels = state.collection_labels
    names = list(state.collections)
    if not names:
        return []
    switches = pn.widgets.CheckBoxGroup(
        name="Collections",
        options={labels[n]: n for n in names},
        value=[n for n in state.collections_on if n in names],
        inline=False,
        css_classes=["collections"],
    )

    def switched(event) -> None:
        if list(state.collections) == names:  # not a sidebar of the body shown before
            state.collections_on = [n for n in names if n in event.new]

    switches.param.watch(switched, "value")
    watch_state(state, "sidebar", lambda e: setattr(switches, "value", list(e.new)), "collections_on")
    search_in = pn.widgets.Select(
        name="Search in",
        options={AUTO_LABEL: AUTO, **{labels[n]: n for n in names}},
        value=state.search_in if state.search_in in names else AUTO,
        css_classes=["search-in"],
    )
    search_in.param.watch(lambda e: setattr(state, "search_in", e.new), "value")
    watch_state(state, "sidebar", lambda e: setattr(search_in, "value", e.new), "search_in")
    out = [text_block("<b>Collections</b> (drawn, and searched by a click)"), switches, search_in]
    for name in names:
        dates = date_options(acquisitions(state.collections[name]))
        if dates:
            out.append(date_selector(state, name, dates))
    return out


def date_selector(state: ExplorerState, name: str, dates: list[str]) -> pn.widgets.Select:
    """Which acquisition of each place of collection ``name`` the map draws: the latest, or the
    latest at or before a date."""
    select = pn.widgets.Select(
        name=f"{state.collection_labels.get(name, name)}: date drawn",
        options={LATEST_LABEL: "", **{d: d for d in dates}},
        value=state.scene_dates.get(name, ""),
        css_classes=["scene-date"],
    )

    def chosen(event) -> None:
        if state.scene_dates.get(name, "") != event.new:
            state.scene_dates = {**state.scene_dates, name: event.new}

    select.param.watch(chosen, "value")
    watch_state(state, "sidebar", lambda e: setattr(select, "value", e.new.get(name, "")), "scene_dates")
    return select
