"""Share links: the query-string parameters that reproduce a session's search, and their checked
reading back. A link is untrusted input, so every value is checked before anything is applied."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from lookalike.explorer.projection import PROJECTIONS
from lookalike.explorer.public_messages import clip, printable
from lookalike.indexer.tiling import Zone

if TYPE_CHECKING:
    from lookalike.explorer.state import ExplorerState

# the longest value of a share-link parameter that is read at all (regions hold drawn shapes)
URL_VALUE_LIMIT = 2_000
URL_VALUE_LIMITS = {"regions": 200_000, "pos": 50_000, "neg": 50_000}


def link_params(state: ExplorerState) -> dict[str, str]:
    """Query-string parameters that reproduce the search of ``state`` (empty values left out)."""
    # the link calls the projection "view", as the page's "Map view" menu does
    out = {
        "body": state.body,
        "index": state.index_name,
        "view": "" if state.projection == "global" else state.projection,
        "tile": state.query_tile,
        "k": str(state.k) if state.k != state.param.k.default else "",
        "zones": ",".join(state.zones),
        "from": state.time_start,
        "to": state.time_end,
        "bbox": ",".join(f"{v:g}" for v in state.bbox) if state.bbox else "",
        "pos": ",".join(state.positives),
        "neg": ",".join(state.negatives),
        "examples": "1" if state.use_examples else "",
        "classes": ",".join(state.landmark_classes),
        "conf": f"{state.min_confidence:g}"
        if state.min_confidence != state.param.min_confidence.default
        else "",
        "min_n": str(state.min_landmarks) if state.min_landmarks != 1 else "",
        "regions": json.dumps({"boxes": state.boxes, "polygons": state.polygons}, separators=(",", ":"))
        if (state.boxes or state.polygons)
        else "",
    }
    return {k: v for k, v in out.items() if v}


def too_long(params: dict[str, str]) -> list[str]:
    """The parameters of a link whose values are too long to be read at all, sorted."""
    return sorted(
        key for key, value in params.items() if len(value) > URL_VALUE_LIMITS.get(key, URL_VALUE_LIMIT)
    )


def link_updates(
    params: dict[str, str], k_bounds: tuple[int, int], class_names: Callable[[], list[str]]
) -> tuple[dict, str]:
    """The parameter updates a link stands for, and a notice about the landmark classes it asks
    for that ``class_names()`` lacks ('' if none). Raises ValueError (or TypeError,
    AttributeError, RecursionError, LookalikeError) on a malformed value."""
    updates: dict = {}
    notice = ""
    if params.get("k"):
        updates["k"] = int(params["k"])
        low, high = k_bounds
        if not low <= updates["k"] <= high:
            raise ValueError(f"k must be between {low} and {high}")
    if params.get("view"):
        if params["view"] not in PROJECTIONS:
            raise ValueError(f"view must be one of {', '.join(PROJECTIONS)}")
        updates["projection"] = params["view"]
    if params.get("zones"):
        updates["zones"] = [Zone.parse(z).label for z in params["zones"].split(",") if z]
    updates["time_start"] = params.get("from", "")
    updates["time_end"] = params.get("to", "")
    if params.get("bbox"):
        updates["bbox"] = _numbers(params["bbox"].split(","), 4, "bbox")
    if params.get("regions"):
        regions = json.loads(params["regions"])
        updates["boxes"] = [_numbers(b, 4, "a drawn box") for b in regions.get("boxes", [])]
        updates["polygons"] = [
            [_numbers(p, 2, "a polygon point") for p in poly] for poly in regions.get("polygons", [])
        ]
    updates["positives"] = [t for t in params.get("pos", "").split(",") if t]
    updates["negatives"] = [t for t in params.get("neg", "").split(",") if t]
    updates["use_examples"] = params.get("examples") == "1"
    classes = [c for c in params.get("classes", "").split(",") if c]
    known = set(class_names())
    dropped = [c for c in classes if c not in known]
    if dropped:
        asked = clip(printable(", ".join(dropped)), 120)
        notice = (
            f"The link asks for landmark class(es) {asked}, which this index does not have; ignoring them."
        )
    updates["landmark_classes"] = [c for c in classes if c in known]
    if params.get("conf"):
        updates["min_confidence"] = float(params["conf"])
        if not 0.0 <= updates["min_confidence"] <= 1.0:
            raise ValueError("conf must be between 0 and 1")
    if params.get("min_n"):
        updates["min_landmarks"] = int(params["min_n"])
        if updates["min_landmarks"] < 1:
            raise ValueError("min_n must be at least 1")
    updates["query_tile"] = params.get("tile", "")
    return updates, notice


def malformed(exc: Exception) -> str:
    """The message for a link whose values cannot be applied: one line of at most MESSAGE_LIMIT."""
    return clip(
        f"The link's search parameters are malformed ({clip(printable(str(exc)), 200)}); ignoring them."
    )


def _numbers(values, n: int, what: str) -> tuple[float, ...]:
    """``values`` (a list from a link) as ``n`` finite floats; ValueError otherwise."""
    if isinstance(values, (str, bytes, dict)) or len(values) != n:
        raise ValueError(f"{what} needs {n} numbers")
    numbers = tuple(float(v) for v in values)
    if not all(np.isfinite(numbers)):
        raise ValueError(f"{what} needs {n} finite numbers")
    return numbers
