"""Synthetic tile tables and indexes shared by the unit tests (no real data, no backbone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.hashing import fit_itq


def synthetic_tiles(n: int, seed: int = 0, half: float = 0.5) -> pd.DataFrame:
    """``n`` tiles scattered over the globe with square footprints of +-``half`` degrees."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-180, 180, n)
    lat = rng.uniform(-60, 60, n)
    zone = [f"{int((lo + 180) // 6) % 60 + 1}{'N' if la >= 0 else 'S'}" for lo, la in zip(lon, lat)]
    start = pd.Timestamp("2010-01-01", tz="UTC").value
    end = pd.Timestamp("2020-01-01", tz="UTC").value
    times = pd.to_datetime(rng.integers(start, end, n), utc=True).to_series().reset_index(drop=True)
    times[rng.random(n) < 0.2] = pd.NaT
    table = pd.DataFrame(dict(
        tile_id=[f"t{i:05d}" for i in range(n)],
        source=rng.choice(["alpha", "beta", "gamma"], n),
        zone=zone, lon=lon, lat=lat, time=times,
        label=rng.choice(["crater", "dune", "edge", "streak"], n)))
    # clockwise from top-left like the tiler; longitudes wrapped into [-180, 180)
    for i, (dx, dy) in enumerate([(-half, half), (half, half), (half, -half), (-half, -half)]):
        table[f"lon{i}"] = ((lon + dx + 180) % 360 - 180).astype(np.float32)
        table[f"lat{i}"] = (lat + dy).astype(np.float32)
    return table


def random_codes(n: int, bits: int, seed: int = 0, values: int = 256) -> np.ndarray:
    """Packed codes; a small ``values`` makes many duplicate bytes and so many tied distances."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, values, size=(n, bits // 8), dtype=np.uint8)


def hash_bytes(bits: int, dim: int = 16) -> bytes:
    return fit_itq(np.random.default_rng(0).standard_normal((64, dim)), bits).to_bytes()


def make_index(path: Path, n: int = 500, bits: int = 64, seed: int = 0, values: int = 256):
    from indexer.store import open_index, write_index

    tiles = synthetic_tiles(n, seed)
    codes = random_codes(n, bits, seed, values)
    write_index(path, codes, tiles, bits=bits, hash_model=hash_bytes(bits), info=dict(kind="test"))
    return open_index(path)


def popcount_reference(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distances the slow, obvious way: Python ints and bin().count('1')."""
    q = int.from_bytes(bytes(np.asarray(query, np.uint8)), "big")
    return np.array([bin(int.from_bytes(bytes(row), "big") ^ q).count("1") for row in codes])


def stable_top_k(distances: np.ndarray, k: int, rows: np.ndarray | None = None):
    """Reference ranking: stable sort by distance (ties keep row order), first k."""
    rows = np.arange(len(distances)) if rows is None else np.asarray(rows)
    order = sorted(range(len(distances)), key=lambda i: (int(distances[i]), int(rows[i])))[:k]
    return rows[order], np.asarray(distances)[order]
