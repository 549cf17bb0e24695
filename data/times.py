"""Times as users and files give them, read one way: a UTC timestamp, or a one-line error."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd

from lookalike.errors import LookalikeError


def utc_timestamp(
    value, what: str = "time", error: type[LookalikeError] = LookalikeError
) -> pd.Timestamp | None:
    """A UTC timestamp from ISO 8601 text, TIFF's ``YYYY:MM:DD HH:MM:SS``, a datetime or a
    Timestamp; None for None or blank text. A time without a zone is taken as UTC. Anything
    else raises ``error`` naming ``what`` was being read."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = value if isinstance(value, (datetime.date, np.datetime64)) else str(value).strip()
    if isinstance(text, str) and len(text) >= 10 and text[4] == ":" and text[7] == ":":
        text = text[:4] + "-" + text[5:7] + "-" + text[8:]
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        ts = pd.NaT
    if pd.isna(ts):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:79] + "…"
        raise error(f"cannot parse {what} {shown}; use ISO 8601, e.g. 2021-06-30")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
