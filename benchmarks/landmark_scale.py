"""At what ground scale did the HiRISE landmark classifier learn? Two estimates, one JSON.

1. From the crops' observations: HiRISE v1's landmarks were cropped from reduced (browse) HiRISE
   images. The east-west width of each source observation's footprint (``hirise_observations.csv``)
   over a browse image's width in pixels gives metres per pixel.
2. From the classifier's own features: a real HiRISE scene is read at a series of ground scales,
   its salient regions cropped and encoded as the classifier encodes them, and each crop's mean
   cosine to its 5 nearest HiRISE v1 training crops is taken (median over crops). The scale whose
   crops look most like the training crops is the one the classifier learned; the v1 val crops
   give the in-domain level.

    python benchmarks/landmark_scale.py --json benchmarks/results/landmark_scale.json
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date

import numpy as np
import pandas as pd

from lookalike.config import data_dir
from lookalike.data.hirise import load_hirise_footprints
from lookalike.indexer.encoding import classifier_encoder
from lookalike.indexer.features import folder_features
from lookalike.indexer.product_times import hirise_observation_id
from lookalike.indexer.scenes import RasterCrops, RasterScene, ground_scale_m, open_scene
from lookalike.models.classifier import load_classifier
from lookalike.models.defaults import LANDMARK_GROUND_SCALES_M
from lookalike.models.saliency import DetectorConfig, detect
from lookalike.workflows.landmarks import crop_image, with_border

MARS_RADIUS_KM = 3389.5
BROWSE_WIDTH_PX = 512  # the reduced HiRISE browse images the v1 crops were cut from
SCENE = "scenes/mars_hirise_colour_5m/cog_hirise_mars.tif"
SCALES_M = (5.0, 5.75, 6.5, 8.0, 10.0)  # the scene is 5 m/px: it can only be read coarser


def footprint_estimate(root) -> dict:
    """Metres per browse pixel of the v1 source observations (median, quartiles)."""
    labels = pd.read_csv(root / "hirise_v1" / "labels.csv")
    ids = {hirise_observation_id(name) for name in labels["source_image"]}
    obs = load_hirise_footprints()
    obs = obs[obs["observation_id"].isin(ids)]
    lat = np.radians((obs["south"] + obs["north"]) / 2.0)
    width_km = np.radians((obs["east"] - obs["west"]) % 360.0) * MARS_RADIUS_KM * np.cos(lat)
    q1, median, q3 = np.percentile(width_km * 1000.0 / BROWSE_WIDTH_PX, [25, 50, 75])
    return dict(
        observations=int(len(obs)),
        browse_width_px=BROWSE_WIDTH_PX,
        median_width_km=round(float(np.median(width_km)), 3),
        m_per_px=dict(q1=round(q1, 2), median=round(median, 2), q3=round(q3, 2)),
    )


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _match(features: np.ndarray, train: np.ndarray) -> float:
    """Median over crops of the mean cosine to their 5 nearest training crops."""
    sims = _unit(features) @ train.T
    return float(np.median(np.sort(sims, axis=1)[:, -5:].mean(axis=1)))


def feature_estimate(root, model, encoder) -> dict:
    labels = pd.read_csv(root / "hirise_v1" / "labels.csv")
    split = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "val")}
    feats = {s: folder_features(root / "hirise_v1", t, encoder=encoder) for s, t in split.items()}
    train = _unit(feats["train"])
    val_p = model.predict_proba(feats["val"])
    rows = [
        dict(
            what="HiRISE v1 val crops",
            match=round(_match(feats["val"], train), 4),
            abstain_at_0_9=round(float((val_p.max(1) < 0.9).mean()), 3),
        )
    ]
    source = open_scene(root / SCENE)
    native = ground_scale_m(source)
    for scale in SCALES_M:
        with RasterScene(source, factor=max(1.0, scale / native)) as scene:
            regions = detect(scene, DetectorConfig())
            crops = with_border(regions, 30, scene.raster_shape, scene.offset)
            images = (crop_image(RasterCrops(scene), b, model.image_size) for b in crops)
            f = np.stack(list(encoder.features_stream(images)))
        p = model.predict_proba(f)
        rows.append(
            dict(
                what=f"{source.name} at {scale:g} m/px",
                m_per_px=scale,
                crops=int(len(crops)),
                match=round(_match(f, train), 4),
                abstain_at_0_9=round(float((p.max(1) < 0.9).mean()), 3),
            )
        )
    return dict(scene=SCENE, native_m_per_px=round(native, 3), rows=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    root = data_dir()
    model = load_classifier("hirise")
    encoder = classifier_encoder(model, batch_size=16)
    result = dict(
        machine=platform.processor() or platform.machine(),
        date=str(date.today()),
        shipped_m_per_px=LANDMARK_GROUND_SCALES_M["hirise"],
        footprints=footprint_estimate(root),
        features=feature_estimate(root, model, encoder),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
