"""The demo data, built on first use: whole-planet indexes of the registered global mosaics, and
the registered real scenes (HiRISE, NAIP, Sentinel-2, Landsat) as collections on their bodies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from lookalike.config import data_dir, indexes_dir
from lookalike.data.hirise import hirise_path
from lookalike.data.registry import DATASETS, fetch
from lookalike.data.scenes import SCENE_COLLECTIONS, SceneCollection, missing_files
from lookalike.errors import LookalikeError
from lookalike.fileio import sha256_file
from lookalike.indexer.build import index_images, index_rasters
from lookalike.indexer.catalogue import attach_to_index, place_index_at_observations
from lookalike.indexer.defaults import DEFAULT_VIEWS
from lookalike.indexer.encoding import classifier_encoder
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.store import MANIFEST, open_index
from lookalike.indexer.thumbnails import basemap_image
from lookalike.models.classifier import load_classifier, resolve_classifier
from lookalike.models.defaults import LANDMARK_GROUND_SCALES_M
from lookalike.models.hashing import is_current_default, load_hash_model
from lookalike.workflows.indexing import build_index
from lookalike.workflows.landmarks import catalogue_info, classify_chips, find_landmarks

BODIES = {"mars": "mars_8k", "earth": "earth_8k"}
CLASSIFIER = "hirise"  # the shipped model that catalogues Mars landmarks
POLAR_CAPS = {"UPSN", "UPSS"}  # zones a whole-planet index has tiles in


def ensure_demo_index(
    body: str = "mars", root: str | Path | None = None, progress: bool = True, **options
) -> Path:
    """Path of the demo index of ``body`` ('mars' or 'earth'), building it if it is missing."""
    if body not in BODIES:
        raise LookalikeError(f"unknown body {body!r}; choose from {', '.join(BODIES)}")
    name = BODIES[body]
    out = indexes_dir(root) / name
    _set_aside_if_stale(out)
    if not (out / MANIFEST).exists():
        ds = DATASETS[name]
        source = RasterSource(fetch(name), name=name, crs=ds.crs, bounds=ds.bounds)
        print(f"building the {body} demo index in {out} (once; interrupted builds resume)")
        index_rasters([source], out, progress=progress, **options)
        # decoded now into the pixel cache, so the explorer's first start is as quick as later ones
        basemap_image(open_index(out))
    _remove(_aside(out))
    if body == "mars":
        ensure_landmarks(out, [name], progress=progress)
    return out


def ensure_landmarks(
    path: Path, scenes: list[str], progress: bool = True, scale: float | None = None
) -> None:
    """Find, classify and catalogue the landmarks of a demo index's scenes (paths or mosaic
    names) once, read at ``scale`` m/px (None: as they are); all posteriors are kept: the
    explorer's confidence slider chooses. Again when the shipped classifier changed."""
    if _catalogued_by_shipped(open_index(path, verify=False).manifest, scale):
        return
    names = ", ".join(Path(s).name for s in scenes)
    print(f"finding landmarks in {names} with the shipped classifier (once)")
    classifier = load_classifier(CLASSIFIER)
    encoder = classifier_encoder(classifier, batch_size=16)
    found = [
        find_landmarks(s, classifier, threshold=0.0, progress=progress, encoder=encoder, ground_scale=scale)
        for s in scenes
    ]
    attach_to_index(
        path,
        pd.concat(found, ignore_index=True),
        replace=True,
        info=dict(landmarks=dict(catalogue_info("raster", CLASSIFIER, classifier), ground_scale_m=scale)),
    )


def _catalogued_by_shipped(manifest: dict, scale: float | None = None) -> bool:
    """Whether the index's landmark catalogue was made by the shipped classifier as it is now
    (and, for scenes, at the ground scale ``scale``)."""
    made = manifest.get("landmarks") or {}
    return (
        "landmarks" in manifest["files"]
        and made.get("model_sha256") == sha256_file(resolve_classifier(CLASSIFIER))
        and made.get("ground_scale_m") == scale
    )


def hirise_layer(root: str | Path | None = None, progress: bool = True) -> Path | None:
    """The searchable layer of labelled HiRISE landmark crops, placed at their observations'
    footprints and times and classified, built once when the data cache holds ``hirise_v1``
    and ``hirise_observations.csv``; None (with a message) when it does not."""

    images, out = data_dir() / "hirise_v1", indexes_dir(root) / "hirise_landmarks"
    if not (images / "labels.csv").is_file() or not hirise_path().is_file():
        print(f"no HiRISE landmark layer: {images}/labels.csv or {hirise_path()} is missing")
        return None
    _set_aside_if_stale(out)
    if not (out / MANIFEST).exists():
        print(f"building the HiRISE landmark layer in {out} (once)")
        index_images(images, images / "labels.csv", out, progress=progress)
    _remove(_aside(out))
    manifest = open_index(out, verify=False).manifest
    if "placed_at" not in manifest:
        place_index_at_observations(out)
    if not _catalogued_by_shipped(manifest):
        classify_chips(out, images, CLASSIFIER, progress=progress)
    return out


def scene_collections(body: str, root: str | Path | None = None, progress: bool = True) -> list[Path]:
    """The registered scene collections of ``body`` (``data.scenes``), each indexed once at its
    native resolution from the data cache; for one whose files are not there, a line saying
    which download would add it."""
    paths = []
    for collection in SCENE_COLLECTIONS.values():
        if collection.body != body:
            continue
        missing = missing_files(collection)
        if missing:
            print(
                f"no {collection.name} collection: {len(missing)} of its files are not in the data "
                f"cache {data_dir()}; `lookalike fetch {collection.name}` downloads them "
                f"({collection.description})"
            )
            continue
        paths.append(_scene_index(collection, indexes_dir(root) / collection.name, progress))
    return paths


def _scene_index(collection: SceneCollection, out: Path, progress: bool) -> Path:
    _set_aside_if_stale(out)
    if not (out / MANIFEST).exists():
        print(f"building the {collection.name} collection in {out} (once; interrupted builds resume)")
        folder = collection.paths()[0].parent
        stacked = {name for stack in collection.stacks for name in stack}
        singles = [str(p) for p in collection.paths() if p.name not in stacked]
        stacks = [[str(folder / name) for name in stack] for stack in collection.stacks]
        build_index(out, rasters=singles, stacks=stacks, progress=progress)
    _remove(_aside(out))
    if collection.landmarks:
        scale = LANDMARK_GROUND_SCALES_M.get(collection.landmarks)
        ensure_landmarks(out, [str(p) for p in collection.paths()], progress=progress, scale=scale)
    return out


def _aside(out: Path) -> Path:
    return out.with_name(f"{out.name}.previous")


def _set_aside_if_stale(out: Path) -> None:
    """Move a demo index made with another default code or views, or a whole-planet index made
    before the polar caps were tiled, out of the way, so that it is built again; the old one
    stays (renamed) until the new one is complete."""
    if not (out / MANIFEST).exists():
        return
    try:
        index = open_index(out, verify=False)
        stale = (
            not is_current_default(load_hash_model(index.hash_model_path))
            or index.views != DEFAULT_VIEWS
            or (out.name in BODIES.values() and not POLAR_CAPS <= set(index.tiles["zone"].unique()))
        )
    except (LookalikeError, KeyError, TypeError):
        stale = True  # unreadable: build it again rather than serve it
    if stale:
        _remove(_aside(out))
        out.rename(_aside(out))
        print(f"{out} was made with an earlier default code or tiling; building it again")


def _remove(path: Path | None) -> None:
    if path is not None and path.exists():
        shutil.rmtree(path)


def demo_indexes(
    bodies: list[str],
    root: str | Path | None = None,
    hirise: bool = True,
    progress: bool = True,
    scenes: bool = True,
) -> list[Path]:
    """The indexes ``lookalike demo`` serves, each built once: one per body, the HiRISE
    landmark layer beside Mars when the data cache holds it (and ``hirise`` is set), and the
    registered real scenes of each body as its collections (with ``scenes``)."""
    paths = [ensure_demo_index(body, root, progress=progress) for body in bodies]
    if "mars" in bodies and hirise:
        layer = hirise_layer(root, progress=progress)
        paths += [layer] if layer else []
    for body in bodies if scenes else []:
        paths += scene_collections(body, root, progress=progress)
    return paths
