"""The pictures of a body's map: its basemap (the mosaic) with the scenes of its collections
drawn on top, at the resolution the view needs.

A scene is decoded once per process onto the body's lon/lat grid (``indexer.thumbnails``:
small scenes whole, large ones decimated on load) and kept as an RGBA pyramid (full, 1/2,
1/4 ... resolution; alpha is the scene's valid data, black collars included as invalid). For
each view the browser asks for, the scenes in view are resampled from the coarsest level with a
pixel per screen pixel and composited over the mosaic: zoomed into a scene, the map shows the
scene's own pixels. Scenes are drawn on the whole planet's map; the polar views show the mosaic.
"""

from __future__ import annotations

import io
import math
import threading

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.explorer import basemap
from lookalike.explorer.acquisitions import acquisitions
from lookalike.explorer.projection import MapProjection
from lookalike.explorer.served import ServedIndexes
from lookalike.indexer.bodies import body_named
from lookalike.indexer.thumbnails import SourceImage, basemap_image, source_image

MIN_SCENE_LEVEL_PX = 256  # a scene's coarsest pyramid level is about this wide
MAX_SCENES = 64  # scenes drawn in one picture at most (the finest ones)
_scene_pyramids: dict[tuple, list[basemap.Level]] = {}
_lock = threading.Lock()


def body_basemap(served: ServedIndexes, key: str) -> SourceImage:
    """The picture under a body's map: the served mosaic's, else the mosaic that placed chips
    sit on, else the body's registered mosaic from the data cache, else a blank planet.
    Raises ``LookalikeError`` for a body that is only chips lying nowhere."""
    group = served.body(key)
    if group.base is not None:
        return basemap_image(served[group.base].index)
    for name in group.collections:
        if served[name].index.manifest.get("basemap"):
            return basemap_image(served[name].index)
    if group.mosaic is not None:
        try:
            return basemap_image(_MosaicOnly(group.mosaic))
        except LookalikeError:
            pass
    if all("lon0" not in served[name].index.table for name in group.collections):
        raise LookalikeError(f"{group.label} has no places to draw")
    return blank_planet(key)


class _MosaicOnly:
    """Stands in for an index whose basemap is a registered mosaic (``basemap_image``)."""

    def __init__(self, mosaic: str) -> None:
        self.manifest, self.path = {"basemap": mosaic}, mosaic


def blank_planet(key: str) -> SourceImage:
    """A black planet in the body's lon/lat: the map of a body whose mosaic is not at hand."""
    rgb = np.zeros((2, 4, 3), np.uint8)
    return SourceImage(
        f"blank:{key}",
        rgb,
        np.zeros((2, 4), bool),
        (-180.0, -90.0, 180.0, 90.0),
        body_named(key).reference_crs(),
    )


def scene_pyramid(image: SourceImage) -> list[basemap.Level]:
    """A scene's RGBA pyramid, finest first, made once per process."""
    key = (image.name, image.bounds, image.shape)
    levels = _scene_pyramids.get(key)
    if levels is None:
        with _lock:
            levels = _scene_pyramids.get(key)
            if levels is None:
                alpha = (image.valid & (image.rgb.max(axis=2) > 0)).astype(np.uint8) * 255
                rgba = np.dstack([image.rgb, alpha])
                levels = _scene_pyramids[key] = basemap.halved_levels(rgba, image.bounds, MIN_SCENE_LEVEL_PX)
    return levels


def composite(
    out: np.ndarray, levels: list[basemap.Level], x0: float, y0: float, x1: float, y1: float
) -> None:
    """Draw a scene over ``out`` (RGB, the box x0..x1, y0..y1 in lon/lat) where it has data."""
    from PIL import Image

    height, width = out.shape[:2]
    level = basemap.level_for(levels, (x1 - x0) / width)
    window = basemap.view_window(level, x0, y0, x1, y1, width, height)
    if window is None:
        return
    (ox0, ox1, oy0, oy1), box = window
    # nearest when enlarging: zoomed in, the scene's own pixels show as pixels
    resample = Image.NEAREST if (ox1 - ox0) > (box[2] - box[0]) else Image.BILINEAR
    part = np.asarray(Image.fromarray(level.pixels).resize((ox1 - ox0, oy1 - oy0), resample, box=box))
    alpha = part[..., 3:4].astype(np.float32) / 255.0
    region = out[oy0:oy1, ox0:ox1]
    region[:] = (region * (1.0 - alpha) + part[..., :3] * alpha + 0.5).astype(np.uint8)


def scenes_in_view(
    served: ServedIndexes,
    body: str,
    pairs: list[tuple[str, str]],
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: int,
) -> list[SourceImage]:
    """The decoded scenes of ``pairs`` (collection, source) of ``body`` that are in the box and
    at least a pixel wide in a picture ``width`` pixels wide, coarsest first. Raises
    ``LookalikeError`` for a pair that is not a served scene of that body."""
    group = served.body(body)
    chosen = []
    for collection, source in pairs:
        if collection not in group.collections or collection == group.base:
            raise LookalikeError(f"no scene collection {collection!r} on {group.label}")
        index = served[collection].index
        desc = (index.manifest.get("sources") or {}).get(source)
        acq = next((a for a in acquisitions(index) if a.source == source), None)
        if desc is None or acq is None:
            raise LookalikeError(f"no scene {source!r} in {collection!r}")
        west, south, east, north = acq.bounds
        if east < x0 or west > x1 or north < y0 or south > y1:
            continue
        if (east - west) / (x1 - x0) * width < 1.0:
            continue  # less than a pixel: its outline and marker show where it is
        chosen.append((acq.gsd, source, desc))
    chosen.sort(key=lambda c: -c[0] if math.isfinite(c[0]) else -math.inf)
    return [source_image(source, desc) for _, source, desc in chosen[-MAX_SCENES:]]


def view_jpeg(
    base: SourceImage,
    projection: MapProjection,
    scenes: list[SourceImage],
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: int,
    height: int,
    quality: int = basemap.JPEG_QUALITY,
) -> bytes:
    """JPEG of a box of a body's map: the basemap, and on the planet's map the scenes over it."""
    from PIL import Image

    rgb = basemap.render_view(basemap.pyramid(base, projection), x0, y0, x1, y1, width, height)
    if not projection.polar:
        for scene in scenes:
            composite(rgb, scene_pyramid(scene), x0, y0, x1, y1)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
