"""``lookalike bench encode``: tiles/s of plain eager PyTorch against the project's encoder path
on identical tiles, in one process, with the bit error rate of the resulting codes."""

from __future__ import annotations

import time

import numpy as np
import torch

from indexer.encoding import Encoder


def sample_tiles(n: int, size: int = 128, seed: int = 0) -> tuple[np.ndarray, str]:
    """Real Mars tiles when the mosaic is in the data cache, else random pixels."""
    try:
        from data.registry import DATASETS, fetch
        from indexer.sources import RasterSource
        from indexer.tiling import TileGrid

        ds = DATASETS["mars_8k"]
        source = RasterSource(fetch("mars_8k", download=False), name="mars_8k", crs=ds.crs, bounds=ds.bounds)
        tiles = []
        for _, pixels in source.tiles(TileGrid(size, size // 2, source.native_gsd)):
            tiles.append(pixels)
            if len(tiles) == n:
                break
        return np.stack(tiles), "mars_8k tiles"
    except Exception:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "random pixels"


def _rate(encoder: Encoder, tiles: np.ndarray, repeat: int) -> tuple[float, np.ndarray]:
    encoder.features(tiles[: encoder.batch_size])  # warm-up: allocations, kernels
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        feats = encoder.features(tiles)
        best = min(best, time.perf_counter() - t0)
    return len(tiles) / best, feats


def bench_encode(n: int = 256, batch_size: int = 64, repeat: int = 2) -> dict:
    """Eager NCHW fp32 (reference) vs the project path (BN folded, channels_last)."""
    from models.hashing import default_hash_path, load_hash_model

    tiles, what = sample_tiles(n)
    eager = Encoder(batch_size=batch_size, optimize=False)
    eager.model = eager.model.to(memory_format=torch.contiguous_format)
    ours = Encoder(batch_size=batch_size)
    rates = {}
    # interleave the two so background load hits both alike
    eager_rate, f_eager = _rate(eager, tiles, repeat)
    ours_rate, f_ours = _rate(ours, tiles, repeat)
    rates.update(eager_tiles_per_s=eager_rate, ours_tiles_per_s=ours_rate)
    hash_model = load_hash_model(default_hash_path())
    a = np.unpackbits(hash_model.encode(f_eager), axis=1)
    b = np.unpackbits(hash_model.encode(f_ours), axis=1)
    return dict(n=len(tiles), tiles=what, batch_size=batch_size, threads=torch.get_num_threads(),
                device=str(ours.device), **rates, ratio=ours_rate / eager_rate,
                bit_error_rate=float((a != b).mean()),
                max_feature_diff=float(np.abs(f_eager - f_ours).max()),
                ours="BatchNorm folded into convolutions, channels_last, inference_mode",
                reference="plain eager PyTorch, NCHW, inference_mode")
