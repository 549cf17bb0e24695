"""Lon/lat boxes (``indexer.bbox``): parsing, formatting, checking, and points inside one."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.errors import OptionError
from lookalike.indexer.bbox import check_bbox, format_bbox, in_bbox, parse_bbox


def test_parse_and_format_round_trip():
    assert parse_bbox("-90, -30.5;0,30") == (-90.0, -30.5, 0.0, 30.0)
    assert parse_bbox("  ") is None
    assert format_bbox((-90.0, -30.5, 0.0, 30.0)) == "-90,-30.5,0,30"
    assert format_bbox(None) == ""
    assert parse_bbox(format_bbox((170.0, -10.0, -170.0, 10.0))) == (170.0, -10.0, -170.0, 10.0)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,3,4,5"])
def test_parse_refuses_what_is_not_four_numbers(text):
    with pytest.raises(OptionError, match="4 comma-separated numbers"):
        parse_bbox(text)


def test_check_keeps_boxes_in_degrees_only():
    assert check_bbox((170.0, -10.0, -170.0, 10.0)) == (170.0, -10.0, -170.0, 10.0)  # across 180
    for box in [(0.0, 10.0, 5.0, 10.0), (0.0, -91.0, 5.0, 0.0), (-181.0, 0.0, 5.0, 1.0)]:
        with pytest.raises(OptionError, match="not a box in degrees"):
            check_bbox(box)


def test_in_bbox_includes_edges_and_crosses_180():
    lon, lat = np.array([0.0, 5.0, 6.0, 179.0, -179.0]), np.array([0.0, 30.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(in_bbox(lon, lat, (0.0, 0.0, 5.0, 30.0)), [True, True, False, False, False])
    np.testing.assert_array_equal(
        in_bbox(lon, lat, (170.0, -1.0, -170.0, 1.0)), [False, False, False, True, True]
    )
