"""Write a synthetic gigapixel GeoTIFF for the build benchmarks (memory must not grow with it).

    python benchmarks/gigapixel.py OUT.tif [--scale 6]

The Mars mosaic (``mars_8k``, 8192 x 4096) upsampled ``scale`` times (6: 49,152 x 24,576 =
1.21 gigapixels) with a seeded fine-grained texture added, so that tiles at the new resolution
are not blurry copies of each other. One band of uint8, tiled 512 x 512, DEFLATE, with
overviews (a cloud-optimised layout); written strip by strip, so making it needs little memory
either. Georeferenced like the mosaic: the whole planet in IAU_2015:49900.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from tqdm.auto import tqdm

from lookalike.data.registry import DATASETS, fetch

STRIP = 512


def write_gigapixel(out: Path, scale: int = 6, seed: int = 0) -> Path:
    ds = DATASETS["mars_8k"]
    Image.MAX_IMAGE_PIXELS = None
    grey = np.asarray(Image.open(fetch("mars_8k")).convert("L"), dtype=np.float32)
    height, width = grey.shape[0] * scale, grey.shape[1] * scale
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs=ds.crs,
        transform=from_bounds(*ds.bounds, width, height),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        predictor=2,
        bigtiff="yes",
    )
    rng = np.random.default_rng(seed)
    texture = rng.normal(0.0, 18.0, (STRIP, width // 4)).astype(np.float32)
    tmp = out.with_name(f".{out.name}.tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        for top in tqdm(range(0, height, STRIP), desc="writing", unit="strip"):
            rows = np.arange(top, min(top + STRIP, height)) // scale
            strip = np.repeat(grey[rows], scale, axis=1)
            noise = np.tile(np.roll(texture, top // STRIP * 97, axis=1), (1, 4))[: len(rows)]
            strip = np.clip(strip + noise, 0, 255).astype(np.uint8)
            dst.write(strip[None], window=rasterio.windows.Window(0, top, width, len(rows)))
        dst.build_overviews([2, 4, 8, 16, 32, 64], Resampling.average)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=int, default=6)
    args = parser.parse_args(argv)
    path = write_gigapixel(args.out, args.scale)
    with rasterio.open(path) as src:
        print(
            f"{path}: {src.width} x {src.height} = {src.width * src.height / 1e9:.2f} gigapixels, "
            f"{path.stat().st_size / 1e9:.2f} GB"
        )


if __name__ == "__main__":
    main()
