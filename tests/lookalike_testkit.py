"""Helpers shared by the test modules: synthetic indexes, brute-force references, CLI runners,
GeoJSON checks. (A plain module, not a conftest, so test files can import it by name.)"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from shapely.geometry import shape

from lookalike.models.hashing import fit_itq

REPO = Path(__file__).resolve().parents[1]


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
    table = pd.DataFrame(
        dict(
            tile_id=[f"t{i:05d}" for i in range(n)],
            source=rng.choice(["alpha", "beta", "gamma"], n),
            zone=zone,
            lon=lon,
            lat=lat,
            time=times,
            label=rng.choice(["crater", "dune", "edge", "streak"], n),
        )
    )
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
    from lookalike.indexer.store import open_index, write_index

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


# ------------------------------------------------------------------ CLI
@contextlib.contextmanager
def environ(**values):
    """Temporarily set (or, with None, remove) environment variables."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_main(argv: list[str], **env) -> tuple[int, str, str]:
    """Run ``lookalike.cli.main`` in-process; returns (exit code, stdout, stderr).

    Exceptions other than SystemExit propagate, so a crash fails the calling test.
    """
    from lookalike.cli import main

    out, err = io.StringIO(), io.StringIO()
    with environ(**env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def run_cli(argv: list[str], timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """Run ``python -m lookalike`` in a subprocess from the repository root."""
    full_env = dict(os.environ)
    for k, v in env.items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = str(v)
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *map(str, argv)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(code: int, stderr: str, *needles: str) -> None:
    """Exit status 2 and exactly one stderr line ``lookalike: error: ...`` without a traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one stderr line, got:\n{stderr}"
    assert lines[0].startswith("lookalike: error:"), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"


# ------------------------------------------------------------------ GeoJSON
def strict_json(text: str):
    """json.loads that refuses NaN / Infinity, which RFC 8259 (and so RFC 7946) forbids."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def iter_rings(geometry: dict):
    polys = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    for poly in polys:
        yield poly[0], poly[1:]


def ring_area(ring) -> float:
    """Shoelace signed area: positive for counterclockwise rings."""
    xy = np.asarray(ring, float)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def check_rfc7946(collection: dict) -> None:
    assert collection["type"] == "FeatureCollection"
    assert "crs" not in collection  # RFC 7946 removed the crs member
    assert isinstance(collection["features"], list)
    for feature in collection["features"]:
        assert feature["type"] == "Feature"
        assert isinstance(feature["properties"], dict)
        geom = feature["geometry"]
        assert geom["type"] in ("Polygon", "MultiPolygon", "Point")
        if geom["type"] == "Point":
            lon, lat = geom["coordinates"]
            assert -180 <= lon <= 180 and -90 <= lat <= 90
            continue
        for exterior, holes in iter_rings(geom):
            assert len(exterior) >= 4 and exterior[0] == exterior[-1]  # closed linear ring
            assert ring_area(exterior) > 0, "exterior ring must be counterclockwise"
            for hole in holes:
                assert ring_area(hole) < 0
            for lon, lat in exterior:
                assert -180 <= lon <= 180 and -90 <= lat <= 90
        assert shape(geom).is_valid
