"""True shape on the whole planet's lon/lat map: a local view draws equal ground distances per
screen pixel in x and y at its centre (a square tile looks square), so one degree of longitude
is drawn cos(lat0) times as wide as one degree of latitude. The whole planet stays 2:1 in
degrees; between the two the correction grows as the view narrows, so zooming never jumps.

The map applies this in the browser after every pan or zoom (``static/basemap_follow.js``,
the same formula); Python uses it for the windows it sets itself.
"""

from __future__ import annotations

import math

FULL_BELOW_DEG = 10.0  # views at most this tall (degrees of latitude) keep true shape fully
NONE_ABOVE_DEG = 45.0  # views at least this tall are plain plate carrée (equal degrees)
MAX_LAT = 85.0  # the correction stops growing here (1 / cos grows without bound at the pole)


def shape_weight(y_span: float) -> float:
    """How much of the correction a view ``y_span`` degrees tall gets: 1 local, 0 global."""
    return min(1.0, max(0.0, (NONE_ABOVE_DEG - y_span) / (NONE_ABOVE_DEG - FULL_BELOW_DEG)))


def x_scale(y_span: float, lat0: float) -> float:
    """Degrees of longitude per degree of latitude on screen for a view ``y_span`` tall centred
    at ``lat0``: 1 / cos(lat0) for a local view, 1 for the planet, blended between."""
    full = 1.0 / math.cos(math.radians(min(abs(lat0), MAX_LAT)))
    return 1.0 + shape_weight(y_span) * (full - 1.0)


def true_shape_x_span(y_span: float, lat0: float, width_px: float, height_px: float) -> float:
    """The longitude span that gives a view ``y_span`` degrees tall at ``lat0``, drawn
    ``width_px`` x ``height_px``, its true shape."""
    return y_span * (width_px / height_px) * x_scale(y_span, lat0)


def ground_px_ratio(x_span: float, y_span: float, lat0: float, width_px: float, height_px: float) -> float:
    """Ground distance per screen pixel along x over that along y at the view's centre (1 is
    true shape)."""
    return (x_span / width_px * math.cos(math.radians(lat0))) / (y_span / height_px)


def js_constants(tolerance: float = 0.005) -> dict:
    """The constants ``static/basemap_follow.js`` applies true shape with."""
    return dict(full_below=FULL_BELOW_DEG, none_above=NONE_ABOVE_DEG, max_lat=MAX_LAT, tolerance=tolerance)
