"""Acquisition times that products carry in their names and labels, with no option needed.

- NAIP: the file name ends in the date, ``m_4709963_se_14_1_20090818.tif``;
- HiRISE: the product id (``ESP_014038_1415_RED``) in the file name or, for a cube renamed by
  its user, in its ISIS label, joined with the PDS observation index
  (``hirise_observations.csv`` in the data cache) for the observation's start time;
- any other product: ``time_from_name(name, pattern)`` with a user's regular expression, or a
  sidecar CSV of ``source,time`` (``read_sidecar_times``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from lookalike.data.hirise import observation_time
from lookalike.data.times import utc_timestamp
from lookalike.errors import LookalikeError, OptionError, SourceError

# m_QQQQQQQ_QQ_ZZ_R_YYYYMMDD[_...]: quarter quad, UTM zone, resolution, then the acquisition date
NAIP_NAME = re.compile(
    r"(?<![a-z0-9])m_\d{7}_(?:ne|nw|se|sw)_\d{1,2}_\d{1,3}_(\d{8})(?![a-z0-9])", re.IGNORECASE
)
# HiRISE observation ids: mission phase, orbit number, target code (latitude code)
HIRISE_ID = re.compile(r"(?<![A-Z0-9])((?:ESP|PSP|AEB|TRA|INT|CAL|TRB)_\d{6}_\d{4})(?!\d)")


def naip_time(name: str) -> str | None:
    """The date a NAIP file name ends in (``YYYYMMDD``), or None."""
    match = NAIP_NAME.search(name)
    return match.group(1) if match else None


def hirise_observation_id(*texts: str) -> str | None:
    """The first HiRISE observation id in ``texts`` (a file name, then an ISIS label), or None."""
    for text in texts:
        match = HIRISE_ID.search(text or "")
        if match:
            return match.group(1)
    return None


def product_time(path: str, label: str = "") -> tuple[pd.Timestamp | None, str | None]:
    """(UTC time, where it came from) for a product that names its date, else (None, None).

    ``label``: the product's own label text (an ISIS cube's), searched after the file name.
    """
    name = Path(path).name
    date = naip_time(name)
    if date:
        return utc_timestamp(date, "NAIP date", SourceError), "naip file name"
    obs = hirise_observation_id(name, label)
    if obs is None:
        return None, None
    try:
        time = observation_time(obs)
    except LookalikeError as exc:  # the observation index is not in the data cache
        warnings.warn(f"{name}: HiRISE observation {obs} carries no time here ({exc})", stacklevel=2)
        return None, None
    return (time, f"hirise observation {obs}") if time is not None else (None, None)


def time_from_name(name: str, pattern: str) -> pd.Timestamp | None:
    """The time ``pattern`` (a regular expression) finds in ``name``: its group ``time``, else its
    first group, else the whole match; ``YYYYMMDD``, ``YYYY-MM-DD`` or ISO 8601."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise OptionError(f"--time-from-name {pattern!r} is not a regular expression ({exc})") from None
    match = regex.search(Path(name).name)
    if match is None:
        return None
    text = (
        match.group("time")
        if "time" in regex.groupindex
        else (match.group(1) if regex.groups else match.group(0))
    )
    return utc_timestamp(text, f"time in the name {Path(name).name}", OptionError)


def read_sidecar_times(csv: str | Path) -> dict[str, pd.Timestamp]:
    """``source,time`` rows of a CSV, keyed by the source's file name (paths are reduced to it)."""
    path = Path(csv)
    if not path.is_file():
        raise SourceError(f"times CSV {path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SourceError(f"times CSV {path} cannot be parsed ({exc})") from None
    if not {"source", "time"} <= set(table.columns):
        raise SourceError(
            f"times CSV {path} needs the columns source,time (it has {', '.join(table.columns) or 'none'})"
        )
    return {
        Path(row.source).name: utc_timestamp(row.time, f"time of {row.source} in {path}", SourceError)
        for row in table.itertuples()
    }
