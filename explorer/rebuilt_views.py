"""Watchers of views that are rebuilt: the sidebar and the map are made again on every change
of index or projection, and the widgets of the previous build must stop following the state."""

from __future__ import annotations

from collections.abc import Callable

from lookalike.explorer.state import ExplorerState


def watch_state(state: ExplorerState, group: str, fn: Callable, names) -> None:
    """``state.param.watch(fn, names)``, remembered under ``group`` so that ``release_views``
    releases it when the group's view is rebuilt."""
    state._view_watchers.setdefault(group, []).append(state.param.watch(fn, names))


def release_views(state: ExplorerState, group: str) -> None:
    """Release the watchers of the previous build of ``group`` ('sidebar' or 'map')."""
    for watcher in state._view_watchers.pop(group, []):
        state.param.unwatch(watcher)
