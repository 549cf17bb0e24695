"""Dynamic landmarking: salient regions of large scenes, cropped, classified and catalogued.

Following the HiRISE landmarks of the PDS Imaging Atlas (Wagstaff et al., "Deep Mars"): the
saliency detector (``models.saliency``) finds regions that stand out from their surroundings,
each is cropped with a 30 px border, classified (crater, dark_dune, bright_dune, streak, edge,
other), and kept when the calibrated posterior reaches a threshold. Labelled image chips in an
index are classified the same way into its landmark catalogue (``classify_chips``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_bytes, sha256_file
from lookalike.indexer.catalogue import attach_to_index, crop_landmarks
from lookalike.indexer.encoding import classifier_encoder, encoder_fits
from lookalike.indexer.export import footprint_geometry, json_value, write_geojson
from lookalike.indexer.features import folder_features
from lookalike.indexer.scenes import (
    RasterCrops,
    RasterScene,
    ground_scale_m,
    open_scene,
    pixel_boxes_to_lonlat,
)
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.store import open_index, update_tables
from lookalike.models.classifier import ProbeClassifier, load_classifier, resolve_classifier
from lookalike.models.defaults import LANDMARK_GROUND_SCALES_M
from lookalike.models.saliency import DetectorConfig, detect

COLUMNS = (
    "landmark_id",
    "scene",
    "x0",
    "y0",
    "x1",
    "y1",
    "lon_min",
    "lat_min",
    "lon_max",
    "lat_max",
    "lon",
    "lat",
    "label",
    "posterior",
    "time",
    "saliency",
)


# scenes within this ratio of the wanted ground scale are read at their own pixel size
SCALE_SLACK = 1.25


# ------------------------------------------------------------------ landmarks
def ground_scale_for(spec: str | float | None, model: str | Path) -> float | None:
    """The ground scale (m/px) to find landmarks at: ``"auto"`` the one the shipped classifier
    ``model`` learned from (None for other models: each scene's own), ``"native"`` or None each
    scene's own, a number that scale."""
    if spec is None or spec == "native":
        return None
    if spec == "auto":
        return LANDMARK_GROUND_SCALES_M.get(str(model))
    try:
        value = float(spec)
    except (TypeError, ValueError):
        raise LookalikeError(f"ground scale must be auto, native or metres per pixel, got {spec!r}") from None
    if not value > 0:
        raise LookalikeError(f"ground scale must be a positive number of metres per pixel, got {spec!r}")
    return value


def scale_factor(source: RasterSource, ground_scale: float | None) -> float:
    """Raster pixels per scene pixel that read ``source`` at ``ground_scale`` m/px: 1 for None,
    for a scene already about that fine, or coarser (a scene is never enlarged)."""
    if ground_scale is None:
        return 1.0
    factor = ground_scale / ground_scale_m(source)
    return factor if factor > SCALE_SLACK else 1.0


def crop_image(scene, box, size: int = 224) -> np.ndarray:
    """A crop as the classifier saw its training images: grey, invalid pixels black, resized
    (PIL bilinear) to ``size`` and repeated to RGB, (size, size, 3) uint8."""

    x0, y0, x1, y1 = (int(v) for v in box[:4])
    gray, valid = scene.read(y0, y1, x0, x1)
    g = (
        scene.to_uint8(gray)
        if hasattr(scene, "to_uint8")
        else np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    )
    g = np.where(valid, g, 0).astype(np.uint8)
    im = Image.fromarray(g, mode="L").convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def with_border(
    boxes: np.ndarray, border: int, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Boxes grown by ``border`` pixels and clipped to a raster of ``shape`` (H, W); ``offset``
    moves window coordinates into raster coordinates first. Returns int64 (M, 4)."""
    b = np.asarray(boxes, float).reshape(-1, np.shape(boxes)[-1] if np.ndim(boxes) == 2 else 4)[:, :4]
    b = np.rint(b + np.array([offset[0], offset[1], offset[0], offset[1]], float))
    b += np.array([-border, -border, border, border], float)
    h, w = shape
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    return b.astype(np.int64)


def landmark_id(scene: str, box) -> str:
    """Stable id of a landmark: its scene and crop box in raster pixels."""
    x0, y0, x1, y1 = (int(v) for v in box[:4])
    return f"{scene}:{x0}:{y0}:{x1}:{y1}"


def empty_landmarks(classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            c: pd.Series(dtype=t)
            for c, t in (
                ("landmark_id", object),
                ("scene", object),
                ("x0", np.int64),
                ("y0", np.int64),
                ("x1", np.int64),
                ("y1", np.int64),
                ("lon_min", float),
                ("lat_min", float),
                ("lon_max", float),
                ("lat_max", float),
                ("lon", float),
                ("lat", float),
                ("label", object),
                ("posterior", float),
                ("time", "datetime64[ns, UTC]"),
                ("saliency", float),
            )
        }
    )
    for c in classes:
        frame[f"p_{c}"] = pd.Series(dtype=float)
    return frame


def find_landmarks(
    source,
    classifier="hirise",
    threshold: float = 0.9,
    border: int = 30,
    *,
    window: tuple[int, int, int, int] | None = None,
    band: int | None = None,
    crs: str | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    time: str | None = None,
    name: str | None = None,
    encoder=None,
    progress: bool = True,
    batch_size: int = 16,
    ground_scale: float | None = None,
    **settings,
) -> pd.DataFrame:
    """Salient regions of a scene, cropped with ``border`` px, classified, kept at ``threshold``.

    ``source``: a raster path, a registered mosaic name (``mars_8k``) or a ``RasterSource``.
    ``classifier``: a shipped model name, a model file or a ``ProbeClassifier``. ``window``
    (x0, y0, x1, y1, raster pixels) limits the search to part of a big scene. ``settings`` are
    ``DetectorConfig`` fields. ``ground_scale`` (m/px) reads a finer scene averaged to that scale
    first (regions, the border and crops at that scale, as the classifier learned them).
    Columns: see ``COLUMNS`` plus ``p_<class>`` per class; pixel boxes are the crops (border
    included, clipped to the raster) in raster pixels; rows below the threshold are dropped (0
    keeps all), best posterior first.
    """

    if not 0.0 <= threshold <= 1.0:
        raise LookalikeError(f"threshold must be within [0, 1], got {threshold}")
    if border < 0:
        raise LookalikeError(f"border must be >= 0 pixels, got {border}")
    model = classifier if isinstance(classifier, ProbeClassifier) else load_classifier(classifier)
    src = (
        source
        if isinstance(source, RasterSource)
        else open_scene(source, name=name, crs=crs, bounds=bounds, time=time)
    )
    cfg = DetectorConfig(**settings)
    with RasterScene(src, window, band, scale_factor(src, ground_scale)) as scene:
        regions = detect(scene, cfg, progress=progress)
        crops = with_border(regions, border, scene.raster_shape, scene.offset)
        if not len(crops):
            return empty_landmarks(model.classes)
        encoder = _fitting_encoder(encoder, model, batch_size)
        proba = _classify_crops(scene, crops, model, encoder, src.name, progress)
        geo = pixel_boxes_to_lonlat(crops, scene.transform, scene.crs, src.geographic)
        native = _raster_pixels(crops, scene.factor, src._meta["shape"])
    return _landmark_frame(src, regions, native, geo, proba, model, threshold)


def _raster_pixels(boxes: np.ndarray, factor: float, shape: tuple[int, int]) -> np.ndarray:
    """Boxes in scene pixels read ``factor`` x coarser -> the raster's own pixels (int64)."""
    if factor == 1.0:
        return boxes
    h, w = shape
    out = np.rint(np.asarray(boxes, float) * factor).astype(np.int64)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


def _fitting_encoder(encoder, model: ProbeClassifier, batch_size: int):
    """``encoder``, or the classifier's own when None; an error when it gives other features."""
    if encoder is None:
        return classifier_encoder(model, batch_size=batch_size)
    if not encoder_fits(encoder, model):
        raise LookalikeError(
            f"the classifier needs features of {model.backbone} at "
            f"{model.image_size} px over {model.views} view(s)"
            f"{' with its fine-tuned tail' if model.tail else ''}; the encoder "
            f"gives {encoder.name} at {encoder.image_size} px over {encoder.views}"
        )
    return encoder


def _classify_crops(
    scene: RasterScene, crops: np.ndarray, model: ProbeClassifier, encoder, name: str, progress: bool
) -> np.ndarray:
    """The classifier's posteriors of the crops (pixel boxes) of ``scene``, one row a crop."""
    # crops are read straight from the raster, so a border may reach beyond the window
    full = RasterCrops(scene)
    images = (crop_image(full, b, model.image_size) for b in crops)
    feats = np.stack(
        list(
            tqdm(
                encoder.features_stream(images),
                total=len(crops),
                desc=f"classifying {name}",
                unit="crop",
                disable=not progress,
            )
        )
    )
    return model.predict_proba(feats)


def _landmark_frame(
    src: RasterSource,
    regions: np.ndarray,
    crops: np.ndarray,
    geo: np.ndarray,
    proba: np.ndarray,
    model: ProbeClassifier,
    threshold: float,
) -> pd.DataFrame:
    """The landmark rows of classified crops: ``COLUMNS`` plus ``p_<class>``, those at or above
    ``threshold``, best posterior first."""
    best = proba.argmax(1)
    frame = pd.DataFrame(
        dict(
            landmark_id=[landmark_id(src.name, b) for b in crops],
            scene=src.name,
            x0=crops[:, 0],
            y0=crops[:, 1],
            x1=crops[:, 2],
            y1=crops[:, 3],
            lon_min=geo[:, 0],
            lat_min=geo[:, 1],
            lon_max=geo[:, 2],
            lat_max=geo[:, 3],
            lon=geo[:, 4],
            lat=geo[:, 5],
            label=np.asarray(model.classes)[best],
            posterior=proba.max(1),
            time=pd.Series([src.acquired] * len(crops), dtype="datetime64[ns, UTC]"),
            saliency=regions[:, 4],
        )
    )
    for j, c in enumerate(model.classes):
        frame[f"p_{c}"] = proba[:, j]
    frame = frame[frame["posterior"] >= threshold]
    return frame.sort_values("posterior", ascending=False, kind="stable").reset_index(drop=True)


def landmarks_to_geojson(frame: pd.DataFrame) -> dict:
    """RFC 7946 FeatureCollection of the landmarks' lon/lat boxes with their properties."""

    features = []
    for rec in frame.to_dict("records"):
        lons = np.array([rec["lon_min"], rec["lon_max"], rec["lon_max"], rec["lon_min"]])
        lats = np.array([rec["lat_min"], rec["lat_min"], rec["lat_max"], rec["lat_max"]])
        props = {key: json_value(value) for key, value in rec.items()}
        features.append({"type": "Feature", "geometry": footprint_geometry(lons, lats), "properties": props})
    return {"type": "FeatureCollection", "features": features}


def summarize(frame: pd.DataFrame, threshold: float) -> dict:
    """Counts by class and scene (the CLI's JSON summary)."""
    return dict(
        n=int(len(frame)),
        threshold=threshold,
        by_class={str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()},
        by_scene={str(k): int(v) for k, v in frame["scene"].value_counts().sort_index().items()},
    )


def classify_chips(
    path: str | Path, root: str | Path, model: str | Path = "hirise", progress: bool = True
) -> pd.DataFrame:
    """Classify every image chip of an image-folder index and make them its landmark catalogue
    (one landmark per chip, ``label`` the predicted class; the CSV's own label stays in the
    tile table)."""

    index = open_index(path)
    if "path" not in index.tiles:
        raise LookalikeError(
            f"{path} is not an index of image chips; find landmarks in rasters with `lookalike landmarks`"
        )
    classifier = load_classifier(model)
    features = folder_features(root, index.tiles, encoder=classifier_encoder(classifier), progress=progress)
    landmarks = crop_landmarks(index.tiles, classifier.predict_proba(features), classifier.classes)
    update_tables(path, landmarks=landmarks, info=dict(landmarks=catalogue_info("chips", model, classifier)))
    return landmarks


def catalogue_info(kind: str, spec: str | Path, classifier: ProbeClassifier) -> dict:
    """What an index's manifest records of the model that made its landmark catalogue."""
    return dict(
        kind=kind,
        model=str(spec),
        model_sha256=sha256_file(resolve_classifier(spec)),
        classes=classifier.classes,
    )


def landmark_table(
    scenes: Sequence[str | Path],
    out: str | Path,
    *,
    model: str = "hirise",
    threshold: float = 0.9,
    border: int = 30,
    window: tuple[int, int, int, int] | None = None,
    band: int | None = None,
    crs: str | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    time: str | None = None,
    max_regions: int = 500,
    geojson: str | Path | None = None,
    index: str | Path | None = None,
    replace: bool = False,
    ground_scale: str | float | None = "auto",
) -> dict:
    """Find, crop and classify the landmarks of ``scenes`` (paths or mosaic names), write them to
    the Parquet table ``out`` (and ``geojson``), and optionally add them to the catalogue of
    ``index``; returns the summary ``lookalike landmarks`` prints. ``ground_scale``: see
    ``ground_scale_for`` (by default, the scale the shipped classifier learned from)."""
    if not 0.0 <= threshold <= 1.0:
        raise LookalikeError(f"--threshold must be within [0, 1], got {threshold}")
    if window and len(scenes) > 1:
        raise LookalikeError("--window picks part of one scene; give a single scene with it")
    classifier = load_classifier(model)
    scale = ground_scale_for(ground_scale, model)
    # every scene is opened (and its window and bands checked) before the network is built
    sources = [open_scene(ref, crs=crs, bounds=bounds, time=time) for ref in scenes]
    read_at = {}
    for src in sources:
        with RasterScene(src, window, band, scale_factor(src, scale)) as scene:
            native = ground_scale_m(src)
            read_at[src.name] = dict(
                native_m=round(native, 4), read_m=round(native * scene.factor, 4), pixels=list(scene.shape)
            )
    encoder = classifier_encoder(classifier, batch_size=16)
    frames = [
        find_landmarks(
            src,
            classifier,
            threshold,
            border,
            window=window,
            band=band,
            max_regions=max_regions,
            encoder=encoder,
            ground_scale=scale,
        )
        for src in sources
    ]
    found = [f for f in frames if len(f)]
    frame = pd.concat(found, ignore_index=True) if found else empty_landmarks(classifier.classes)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(Path(out), buf.getvalue())
    if geojson:
        write_geojson(geojson, landmarks_to_geojson(frame))
    summary = summarize(frame, threshold)
    summary["ground_scale"] = read_at
    if index:
        info = dict(catalogue_info("raster", model, classifier), ground_scale_m=scale)
        catalogue = attach_to_index(index, frame, replace=replace, info=dict(landmarks=info))
        summary.update(
            index=str(index),
            catalogued=int(len(catalogue)),
            on_indexed_tiles=int((catalogue["row"] >= 0).sum()),
        )
    summary.update(model=str(model), scenes=len(scenes), out=str(out), geojson=geojson)
    return summary
