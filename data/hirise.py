"""Real HiRISE observation footprints (MRO, 2006-2022) from the PDS cumulative index.

The file ``hirise_observations.csv`` lives in the data cache (``$LOOKALIKE_DATA``, see
``lookalike.config.data_dir``). Longitudes there are planetocentric, east-positive in 0..360; they
are returned in -180..180 like the tile table of an index.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.config import data_dir
from lookalike.data.times import utc_timestamp
from lookalike.errors import LookalikeError

HIRISE_FILE = "hirise_observations.csv"
COLUMNS = (
    "observation_id",
    "minimum_latitude",
    "maximum_latitude",
    "westernmost_longitude",
    "easternmost_longitude",
    "start_time",
)


def hirise_path() -> Path:
    return data_dir() / HIRISE_FILE


def load_hirise_footprints(path: str | Path | None = None) -> pd.DataFrame:
    """Footprints as a DataFrame: observation_id, west, south, east, north (degrees), time (UTC).

    Footprints that cross 180 degrees are cut at it (they are a few kilometres wide, so the loss
    is invisible at map scale). Raises ``LookalikeError`` naming the file when it is missing or
    lacks the expected columns.
    """
    path = Path(path) if path else hirise_path()
    if not path.is_file():
        raise LookalikeError(
            f"HiRISE footprints not found: {path} is missing; set LOOKALIKE_DATA "
            f"to a folder holding {HIRISE_FILE}"
        )
    return _load(str(path), path.stat().st_mtime_ns).copy()


@lru_cache(maxsize=4)
def _load(path: str, _mtime: int) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, usecols=list(COLUMNS))
    except ValueError as exc:  # a missing column
        raise LookalikeError(f"{path} is not a HiRISE observation table ({exc})") from None
    west = _wrap(raw["westernmost_longitude"].to_numpy(float))
    east = _wrap(raw["easternmost_longitude"].to_numpy(float))
    east = np.where(east < west, 180.0, east)  # crosses the antimeridian: keep the west part
    table = pd.DataFrame(
        {
            "observation_id": raw["observation_id"].astype(str),
            "west": west,
            "south": raw["minimum_latitude"].to_numpy(float),
            "east": east,
            "north": raw["maximum_latitude"].to_numpy(float),
            "time": pd.to_datetime(raw["start_time"], utc=True, errors="coerce"),
        }
    )
    table = table.dropna(subset=["west", "south", "east", "north"]).reset_index(drop=True)
    table["date"] = table["time"].dt.strftime("%Y-%m-%d")
    return table


def _wrap(lon: np.ndarray) -> np.ndarray:
    return np.where(lon > 180.0, lon - 360.0, lon)


def in_time_range(table: pd.DataFrame, start=None, end=None) -> pd.DataFrame:
    """Rows of ``table`` observed between ``start`` and ``end`` (either may be None)."""
    mask = np.ones(len(table), bool)
    if start is not None:
        mask &= (table["time"] >= utc_timestamp(start)).fillna(False).to_numpy()
    if end is not None:
        mask &= (table["time"] <= utc_timestamp(end)).fillna(False).to_numpy()
    return table[mask]


def observation_time(observation_id: str, path: str | Path | None = None) -> pd.Timestamp | None:
    """The start time (UTC) of a HiRISE observation (``ESP_014038_1415``), None when the PDS
    index does not list it; raises ``LookalikeError`` when the index file is missing."""
    path = Path(path) if path else hirise_path()
    if not path.is_file():
        raise LookalikeError(
            f"HiRISE observation times not found: {path} is missing; set "
            f"LOOKALIKE_DATA to a folder holding {HIRISE_FILE}"
        )
    times = _times(str(path), path.stat().st_mtime_ns)
    return times.get(observation_id.upper())


@lru_cache(maxsize=4)
def _times(path: str, mtime: int) -> dict[str, pd.Timestamp]:
    table = _load(path, mtime)
    known = table.dropna(subset=["time"])
    return dict(zip(known["observation_id"].str.upper(), known["time"]))
