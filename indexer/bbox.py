"""Lon/lat boxes ``(west, south, east, north)`` in degrees, as typed and as kept: parsing,
formatting and the test of points inside one. A box with west > east crosses 180 degrees."""

from __future__ import annotations

from lookalike.errors import OptionError

BBox = tuple[float, float, float, float]


def parse_bbox(text: str) -> BBox | None:
    """``'west,south,east,north'`` (commas or semicolons) -> four floats; blank text -> None.

    Only the shape is checked (OptionError unless four numbers); ``check_bbox`` checks degrees."""
    text = text.strip()
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise OptionError(f"bbox (west,south,east,north) needs 4 comma-separated numbers, got {text!r}")
    return values


def check_bbox(bbox: BBox) -> BBox:
    """``bbox`` itself if it is a box in degrees: south < north, longitudes within ±180."""
    west, south, east, north = bbox
    if not (-90 <= south < north <= 90 and -180 <= west <= 180 and -180 <= east <= 180):
        raise OptionError(f"bbox {format_bbox(bbox)} is not a box in degrees (south < north, lon in ±180)")
    return bbox


def format_bbox(bbox: BBox | None) -> str:
    """``'west,south,east,north'`` as short as the numbers allow; '' for no box."""
    return ",".join(f"{v:g}" for v in bbox) if bbox else ""


def in_bbox(lon, lat, bbox: BBox):
    """Boolean array: which points (lon, lat arrays, degrees) lie in ``bbox``, edges included."""
    west, south, east, north = bbox
    in_lon = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
    return in_lon & (lat >= south) & (lat <= north)
