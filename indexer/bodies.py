"""Which body a raster lies on, and the geographic CRS every position on that body is given in.

An index is a collection on one body. The body comes from the source CRS: a body named in its
CRS, datum or ellipsoid (``GCS_Mars``, ``D_MARS``, ``Moon (2015) - Sphere``: every body PROJ's
IAU catalogue knows), else from the ellipsoid's size for Earth, Mars and the Moon (local spheres
and national datums name no body). Positions are then given in the body's reference:

- Earth: WGS 84 lon/lat (RFC 7946's GeoJSON, the web maps), reached from a national grid on
  another datum through PROJ's best available transformation (datum shifts included);
- another body: its IAU 2015 sphere, planetocentric, east-positive (``IAU_2015:49900`` on Mars).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import pyproj
from pyproj.database import query_crs_info
from pyproj.enums import PJType

from lookalike.errors import OptionError

EARTH_REFERENCE = "EPSG:4326"
# equatorial radii (metres) that only these bodies have: every Earth ellipsoid in use lies in
# the first range; Mars's local and polar spheres in the second
_RADII = {
    "earth": (6_356_000.0, 6_380_000.0),
    "mars": (3_370_000.0, 3_400_000.0),
    "moon": (1_730_000.0, 1_740_000.0),
}


@dataclass(frozen=True)
class Body:
    """A body: its lower-case key (``mars``), display name and reference lon/lat CRS."""

    key: str
    name: str
    reference: str

    def reference_crs(self) -> pyproj.CRS:
        return _crs(self.reference)


@lru_cache(maxsize=1)
def known_bodies() -> dict[str, Body]:
    """Every body of PROJ's IAU 2015 catalogue (its sphere, planetocentric), Earth on WGS 84."""
    bodies = {}
    for info in query_crs_info(auth_name="IAU_2015", pj_types=PJType.GEOGRAPHIC_2D_CRS):
        if info.code.endswith("00") and " (2015)" in info.name:
            name = info.name.split(" (2015)")[0]
            bodies[name.lower()] = Body(name.lower(), name, f"IAU_2015:{info.code}")
    bodies["earth"] = Body("earth", "Earth", EARTH_REFERENCE)
    return bodies


def body_named(key: str) -> Body:
    """The body called ``key`` (any case), or a clear error listing a few known ones."""
    body = known_bodies().get(key.strip().lower())
    if body is None:
        raise OptionError(
            f"unknown body {key!r}: use a body PROJ knows, e.g. earth, mars, moon, "
            "mercury, venus, phobos, europa"
        )
    return body


@lru_cache(maxsize=64)
def _crs(text: str) -> pyproj.CRS:
    return pyproj.CRS(text)


def _words(crs: pyproj.CRS) -> str:
    names = [crs.name, crs.ellipsoid.name if crs.ellipsoid else ""]
    if crs.datum is not None:
        names.append(crs.datum.name)
    return " " + re.sub(r"[^a-z]+", " ", " ".join(names).lower()) + " "


def body_of_crs(crs: pyproj.CRS) -> Body | None:
    """The body ``crs`` lies on, or None when neither its names nor its size tell."""
    geodetic = crs.geodetic_crs or crs
    words = _words(geodetic)
    for key, body in known_bodies().items():
        if f" {key} " in words or (key == "moon" and " lunar " in words):
            return body
    radius = geodetic.ellipsoid.semi_major_metre if geodetic.ellipsoid else None
    for key, (low, high) in _RADII.items():
        if radius is not None and low <= radius <= high:
            return known_bodies()[key]
    return None


def reference_geographic(crs: pyproj.CRS, body: Body | None = None) -> pyproj.CRS:
    """The lon/lat CRS a source in ``crs`` gives its positions in: its body's reference, or the
    source's own geographic CRS for a body PROJ does not know."""
    body = body or body_of_crs(crs)
    if body is None:
        return pyproj.CRS((crs.geodetic_crs or crs).to_json_dict())
    return body.reference_crs()


# registered mosaics a chip index can be placed on (``basemap`` in its manifest)
_BASEMAP_BODIES = {"mars_8k": "mars", "earth_8k": "earth"}


def body_of_manifest(manifest: dict) -> Body | None:
    """The body an index lies on: the one its manifest records (``--body`` or its sources' CRS),
    else its sources' CRS or the mosaic its chips were placed on; None for chips that lie nowhere
    (an image folder without footprints)."""
    if manifest.get("body"):
        return body_named(manifest["body"])
    for desc in (manifest.get("sources") or {}).values():
        if isinstance(desc, dict) and desc.get("body"):
            return body_named(desc["body"])
        if isinstance(desc, dict) and desc.get("crs"):
            try:
                body = body_of_crs(pyproj.CRS.from_user_input(desc["crs"]))
            except pyproj.exceptions.CRSError:
                continue
            if body is not None:
                return body
    basemap = manifest.get("basemap")
    return known_bodies()[_BASEMAP_BODIES[basemap]] if basemap in _BASEMAP_BODIES else None
