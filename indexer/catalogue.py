"""The landmark catalogue of an index: classified landmarks tied to tiles, counted per scene.

A landmark is one row of a table with at least ``label`` (class), ``posterior`` (calibrated
confidence), a lon/lat box (``lon_min``, ``lat_min``, ``lon_max``, ``lat_max``), its centre
(``lon``, ``lat``) and ``row``, the index row of the tile it belongs to (-1: none). Landmarks found
in a raster (``workflows.landmarks.find_landmarks``) belong to the tile whose centre is nearest
among the tiles containing the landmark's centre; a labelled image chip is its own tile.

Counts are per *scene*: the tile table's ``scene`` column when it has one (for HiRISE crops, the
observation), otherwise each tile is its own scene. The facet and filter functions are pure
functions of the tables, shared by the CLI, the Python API and the explorer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.data.hirise import load_hirise_footprints
from lookalike.errors import LookalikeError
from lookalike.indexer.locate import tiles_under
from lookalike.indexer.store import open_index, update_tables
from lookalike.indexer.tiling import Zone

BOX_COLUMNS = ("lon_min", "lat_min", "lon_max", "lat_max")
REQUIRED = ("label", "posterior", "lon", "lat", *BOX_COLUMNS)

# words a user may type for a class, beyond the class names themselves
SYNONYMS = {
    "dune": ("dark_dune", "bright_dune"),
    "dunes": ("dark_dune", "bright_dune"),
    "craters": ("crater",),
    "slope streak": ("streak",),
    "slope streaks": ("streak",),
    "streaks": ("streak",),
    "edges": ("edge",),
    "image edge": ("edge",),
}


def check_landmarks(landmarks: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in landmarks]
    if missing:
        raise LookalikeError(f"the landmark table lacks column(s) {', '.join(missing)}")


def attach(tiles: pd.DataFrame, landmarks: pd.DataFrame) -> pd.DataFrame:
    """The landmarks with ``row`` set to the tile each belongs to (raster landmarks)."""
    check_landmarks(landmarks)
    out = landmarks.reset_index(drop=True).copy()
    out["row"] = tiles_under(tiles, out["lon"].to_numpy(), out["lat"].to_numpy())
    return out


def scene_keys(tiles: pd.DataFrame) -> np.ndarray:
    """The scene of every tile: ``scene`` when the table has it, else the tile itself."""
    column = tiles["scene"] if "scene" in tiles else tiles["tile_id"]
    return column.astype(str).to_numpy()


def classes_of(landmarks: pd.DataFrame | None) -> list[str]:
    """Class names present in a catalogue (classifier order when it recorded one)."""
    if landmarks is None:
        return []
    probability_columns = [c[2:] for c in landmarks.columns if c.startswith("p_")]
    present = sorted(set(landmarks["label"].astype(str)) - set(probability_columns))
    return probability_columns + present


def _confident(landmarks: pd.DataFrame, min_confidence: float) -> pd.DataFrame:
    return landmarks[
        (landmarks["posterior"].to_numpy() >= min_confidence) & (landmarks["row"].to_numpy() >= 0)
    ]


def scene_class_counts(
    tiles: pd.DataFrame,
    landmarks: pd.DataFrame,
    min_confidence: float = 0.0,
    tile_mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Landmarks per (scene, class) at or above ``min_confidence``, among tiles in ``tile_mask``."""
    keys = scene_keys(tiles)
    lm = _confident(landmarks, min_confidence)
    if tile_mask is not None:
        lm = lm[np.asarray(tile_mask, bool)[lm["row"].to_numpy()]]
    counts = pd.crosstab(
        pd.Series(keys[lm["row"].to_numpy()], name="scene"),
        pd.Series(lm["label"].astype(str).to_numpy(), name="label"),
    )
    return counts


def landmark_mask(
    tiles: pd.DataFrame,
    landmarks: pd.DataFrame | None,
    classes: list[str],
    min_confidence: float = 0.0,
    min_count: int = 1,
) -> np.ndarray:
    """Tiles whose scene holds at least ``min_count`` landmarks of one of ``classes`` (each counted
    alone) at or above ``min_confidence``."""
    if landmarks is None:
        raise LookalikeError("this index has no landmark catalogue to filter by class")
    known = set(classes_of(landmarks)) | set(landmarks["label"].astype(str))
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise LookalikeError(
            f"unknown landmark class(es) {', '.join(unknown)}; "
            f"this index has {', '.join(sorted(known)) or 'none'}"
        )
    counts = scene_class_counts(tiles, landmarks, min_confidence)
    wanted = [c for c in classes if c in counts.columns]
    if not wanted:
        return np.zeros(len(tiles), bool)
    passing = counts.index[(counts[wanted] >= max(1, int(min_count))).any(axis=1)]
    return np.isin(scene_keys(tiles), passing.to_numpy())


def facet_counts(
    tiles: pd.DataFrame,
    landmarks: pd.DataFrame | None,
    min_confidence: float = 0.0,
    min_count: int = 1,
    tile_mask: np.ndarray | None = None,
) -> dict[str, int]:
    """Class -> number of scenes (among tiles in ``tile_mask``) holding at least ``min_count``
    landmarks of that class at or above ``min_confidence``: the Image Class facet's counts."""
    classes = classes_of(landmarks)
    if not classes:
        return {}
    counts = scene_class_counts(tiles, landmarks, min_confidence, tile_mask)
    return {c: int((counts[c] >= max(1, int(min_count))).sum()) if c in counts else 0 for c in classes}


def visible_landmarks(
    landmarks: pd.DataFrame | None,
    classes: list[str] = (),
    min_confidence: float = 0.0,
    tile_mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Landmarks to draw: of ``classes`` (all when empty), confident enough, on tiles in ``tile_mask``."""
    if landmarks is None:
        return pd.DataFrame(columns=[*REQUIRED, "row"])
    lm = _confident(landmarks, min_confidence)
    if classes:
        lm = lm[lm["label"].isin(list(classes))]
    if tile_mask is not None:
        lm = lm[np.asarray(tile_mask, bool)[lm["row"].to_numpy()]]
    return lm


def parse_classes(text: str, known: list[str]) -> list[str]:
    """Class names for free text ("crater", "Dunes, streak"): exact names, plurals and synonyms."""
    out: list[str] = []
    lookup = {k.lower().replace("_", " "): k for k in known}
    for word in [w.strip().lower() for w in text.replace(";", ",").split(",")]:
        if not word:
            continue
        word_spaced = word.replace("_", " ")
        if word_spaced in lookup:
            found = [lookup[word_spaced]]
        elif word_spaced.removesuffix("s") in lookup:
            found = [lookup[word_spaced.removesuffix("s")]]
        else:
            found = [c for c in SYNONYMS.get(word_spaced, ()) if c in known]
        if not found:
            raise LookalikeError(f"no landmark class matches {word!r}; classes here: {', '.join(known)}")
        out += [c for c in found if c not in out]
    return out


# ------------------------------------------------------------------ building catalogues
def crop_landmarks(tiles: pd.DataFrame, probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One landmark per tile of an image-chip index, from the classifier's probabilities."""
    probabilities = np.asarray(probabilities, float)
    best = probabilities.argmax(axis=1)
    out = pd.DataFrame(
        {
            "landmark_id": tiles["tile_id"].astype(str).to_numpy(),
            "scene": scene_keys(tiles),
            "row": np.arange(len(tiles), dtype=np.int64),
            "label": np.asarray(classes, dtype=object)[best],
            "posterior": probabilities[np.arange(len(best)), best].astype(np.float32),
        }
    )
    for name in BOX_COLUMNS + ("lon", "lat"):
        out[name] = _box_column(tiles, name)
    out["time"] = tiles["time"].to_numpy() if "time" in tiles else pd.NaT
    for i, c in enumerate(classes):
        out[f"p_{c}"] = probabilities[:, i].astype(np.float32)
    return out


def _box_column(tiles: pd.DataFrame, name: str) -> np.ndarray:
    if name in ("lon", "lat"):
        return tiles[name].to_numpy(float) if name in tiles else np.full(len(tiles), np.nan)
    if "lon0" not in tiles:
        return np.full(len(tiles), np.nan)
    axis = "lon" if name.startswith("lon") else "lat"
    corners = tiles[[f"{axis}{i}" for i in range(4)]].to_numpy(float)
    return corners.min(axis=1) if name.endswith("min") else corners.max(axis=1)


def place_at_observations(
    tiles: pd.DataFrame, observations: pd.DataFrame, column: str = "source_image"
) -> tuple[pd.DataFrame, int]:
    """Give image chips the footprint, centre and time of the HiRISE observation named in
    ``column`` (a product id such as ``ESP_011283_2265_RED``; its first three parts are the
    observation id). Returns the table and the number of chips with no known observation,
    which keep empty footprints and are never found by place or time."""

    if column not in tiles:
        raise LookalikeError(f"the tile table has no {column!r} column to join observations on")
    obs_id = tiles[column].astype(str).str.split("_").str[:3].str.join("_")
    joined = observations.set_index("observation_id").reindex(obs_id.to_numpy())
    out = tiles.copy()
    west, south = joined["west"].to_numpy(float), joined["south"].to_numpy(float)
    east, north = joined["east"].to_numpy(float), joined["north"].to_numpy(float)
    for i, (x, y) in enumerate(((west, south), (east, south), (east, north), (west, north))):
        out[f"lon{i}"], out[f"lat{i}"] = x.astype(np.float32), y.astype(np.float32)
    out["lon"], out["lat"] = (west + east) / 2, (south + north) / 2
    out["time"] = pd.to_datetime(joined["time"].to_numpy(), utc=True)
    out["scene"] = obs_id.to_numpy()
    known = np.isfinite(out["lon"].to_numpy())
    out["zone"] = [
        Zone.at(lo, la).label if ok else ""
        for lo, la, ok in zip(out["lon"].to_numpy(), out["lat"].to_numpy(), known)
    ]
    return out, int((~known).sum())


def catalogue_summary(
    tiles: pd.DataFrame, landmarks: pd.DataFrame | None, min_confidence: float = 0.0
) -> dict:
    """Counts for ``lookalike info``: landmarks and scenes per class."""
    if landmarks is None:
        return {}
    lm = landmarks[landmarks["posterior"].to_numpy() >= min_confidence]
    return dict(
        landmarks=int(len(lm)),
        on_indexed_tiles=int((lm["row"].to_numpy() >= 0).sum()),
        min_confidence=min_confidence,
        by_class={c: int(n) for c, n in lm["label"].value_counts().items()},
        scenes_by_class=facet_counts(tiles, landmarks, min_confidence),
    )


def attach_to_index(
    path: str | Path, landmarks: pd.DataFrame, replace: bool = False, info: dict | None = None
) -> pd.DataFrame:
    """Add raster landmarks to an index's catalogue (replacing it with ``replace``); ``info``
    goes into the manifest (e.g. which model made the catalogue)."""

    index = open_index(path)
    new = attach(index.tiles, landmarks)
    if index.landmarks is not None and not replace:
        new = pd.concat([index.landmarks, new], ignore_index=True)
        if "landmark_id" in new:
            new = new.drop_duplicates("landmark_id", keep="last").reset_index(drop=True)
    update_tables(path, landmarks=new, info=info)
    return new


def place_index_at_observations(path: str | Path, observations: str | Path | None = None) -> int:
    """Place the chips of an image-folder index at their HiRISE observations' footprints and
    times (``data.hirise``); returns how many chips have no known observation."""

    index = open_index(path)
    tiles, unplaced = place_at_observations(index.tiles, load_hirise_footprints(observations))
    landmarks = index.landmarks
    if landmarks is not None:  # chips classified before placing: their boxes follow the chips
        landmarks = landmarks.copy()
        rows = landmarks["row"].to_numpy()
        placed = tiles.iloc[np.clip(rows, 0, None)]
        for name in BOX_COLUMNS + ("lon", "lat"):
            landmarks[name] = np.where(rows >= 0, _box_column(placed, name), landmarks[name].to_numpy(float))
        landmarks["scene"] = np.where(rows >= 0, scene_keys(placed), landmarks["scene"].astype(str))
    update_tables(
        path,
        tiles=tiles,
        landmarks=landmarks,
        info=dict(placed_at="HiRISE observation footprints", basemap="mars_8k"),
    )
    return unplaced
