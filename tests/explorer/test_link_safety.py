"""A shared link is untrusted input: its values never become markup, never show a traceback or a
server folder, and out-of-range values open the app with a message."""

from __future__ import annotations

import html

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike.explorer.page_text import _MARKUP, inert
from lookalike.explorer.public_messages import MESSAGE_LIMIT
from lookalike.explorer.served import cached_index
from lookalike.explorer.state import ExplorerState
from lookalike.explorer.status import status_html

SCRIPT = "<img src=x onerror=alert(1)>"


@pytest.fixture
def state(explorer_index) -> ExplorerState:
    return ExplorerState(index=cached_index(explorer_index), index_name="mars_small")


@given(st.text())
def test_inert_text_keeps_every_character_and_no_markup(text):
    out = inert(text)
    assert html.unescape(out) == text
    assert not (set(out) & (_MARKUP - {"&", "#"}))


def test_markup_in_a_link_is_shown_as_text(state):
    state.apply_url_params({"tile": SCRIPT, "from": "<b>2010</b>", "classes": SCRIPT})
    shown = inert(state.error) + status_html(
        state, state.hits, state.error, state.query_tile, state.use_examples, state.positives, state.negatives
    )
    assert "<img" not in shown and "<b>2010" not in shown
    assert "img src" in html.unescape(shown)  # the value is shown, as text


@pytest.mark.parametrize("k", ["-5", "0", "100000", "1.5", "many"])
def test_k_out_of_range_in_a_link_is_a_message(state, k):
    state.apply_url_params({"k": k, "zones": "31N"})
    assert "malformed" in state.error
    assert state.k == state.param.k.default and state.zones == []  # nothing of the link applied


def test_unknown_tile_names_no_server_folder(state):
    state.apply_url_params({"tile": "nonsense"})
    assert "nonsense" in state.error and "mars_small" in state.error
    assert str(state.index.path) not in state.error and str(state.index.path.parent) not in state.error


def test_over_long_values_are_refused_and_not_echoed(state):
    state.apply_url_params({"tile": "x" * 5000})
    assert "too long" in state.error and "xxxxxxxx" not in state.error
    state.apply_url_params({"tile": "y" * 1500})  # within the limit: quoted, cut short
    assert "yyy" in state.error and len(state.error) <= MESSAGE_LIMIT


def test_public_message_hides_absolute_paths(state):
    message = state.public_message(
        f"cannot read /srv/data/secret/{state.index_name}.tif or {state.index.path}/codes-000001.npy"
    )
    assert "/srv" not in message and str(state.index.path) not in message
    assert "secret" not in message and f"{state.index_name}.tif" in message
