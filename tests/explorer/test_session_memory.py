"""A closed page's session must be collectable: nothing process-wide may keep its state alive."""

from __future__ import annotations

import gc
import weakref

import holoviews as hv

from lookalike.explorer import panel_internals
from lookalike.explorer.collection_controls import enter_body
from lookalike.explorer.map_view import MapView
from lookalike.explorer.served import ServedIndexes
from lookalike.explorer.state import ExplorerState


def test_a_dropped_map_lets_its_session_state_go(explorer_index):
    hv.extension("bokeh", logo=False)
    served = ServedIndexes([explorer_index])
    entry = served[served.default]
    state = ExplorerState()
    enter_body(state, served, served.default_body)
    view = MapView(state, served, served.default_body)
    pane = view.panel()
    root = pane.get_root()  # renders the plot: HoloViews stores its options process-wide
    state.click(float(entry.index.tiles["lon"].iat[0]), float(entry.index.tiles["lat"].iat[0]))
    alive = weakref.ref(state)
    panel_internals.release_offline_root(pane, root)  # what Panel does when a session is destroyed
    del state, view, pane, root
    gc.collect()
    assert alive() is None


def test_sessions_dropped_together_share_one_collection(monkeypatch):
    """A full collection holds every session up: closed sessions dropped within the delay share
    one, and a later drop gets its own."""
    import time
    from types import SimpleNamespace

    from lookalike.explorer import sessions

    calls = []
    monkeypatch.setattr(sessions, "RELEASE_DELAY_S", 0.05)
    monkeypatch.setattr(sessions, "gc", SimpleNamespace(collect=lambda: calls.append("collect")))
    release = sessions.MemoryRelease()
    for _ in range(10):
        release(None)
    time.sleep(0.5)
    assert calls == ["collect"]
    release(None)
    time.sleep(0.5)
    assert calls == ["collect", "collect"]
