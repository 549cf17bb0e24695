"""The indexes an explorer process serves, opened once and shared read-only by every session,
and grouped by body: one map per body, each index a collection on it."""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lookalike.errors import LookalikeError
from lookalike.indexer.bodies import body_of_manifest
from lookalike.indexer.store import MANIFEST, Index, open_index

log = logging.getLogger(__name__)

# display names of the registered demo mosaics
BODY_NAMES = {"mars_8k": "Mars", "earth_8k": "Earth"}
MOSAICS = {"mars": "mars_8k", "earth": "earth_8k"}  # body key -> its registered mosaic

_open: dict[Path, tuple[tuple, Index]] = {}
_refused: dict[Path, tuple] = {}  # the manifest stamp of a generation that failed to open
_lock = threading.Lock()


def _manifest_stamp(path: Path) -> tuple:
    try:
        st = os.stat(path / MANIFEST)
    except OSError:
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns


def cached_index(path: str | Path) -> Index:
    """``open_index(path)``, verified once per generation; codes stay memory-mapped and shared.

    Every write to an index replaces its manifest, so a changed manifest (an ``--append``, a
    new landmark catalogue, ``--ann``) opens the new generation for what asks next; pages
    already holding the previous one keep it (its files stay mapped). A manifest that cannot
    be opened keeps the generation that could.
    """
    path = Path(path).resolve()
    stamp = _manifest_stamp(path)
    cached = _open.get(path)
    if cached is not None and (stamp in (cached[0], _refused.get(path)) or not stamp):
        return cached[1]
    with _lock:
        cached = _open.get(path)
        if cached is not None and stamp in (cached[0], _refused.get(path)):
            return cached[1]
        try:
            index = open_index(path)
        except LookalikeError:
            if cached is None:
                raise
            _refused[path] = stamp  # not tried again until the manifest changes once more
            log.warning("%s changed on disk but cannot be opened; serving the generation before", path)
            return cached[1]
        _open[path] = (stamp, index)
        return index


@dataclass(frozen=True)
class Entry:
    """One served index, a collection of its body: ``name`` is its URL-safe key, ``label`` what
    the sidebar shows, ``body`` the key of the body it lies on."""

    name: str
    label: str
    path: Path
    body: str = ""

    @property
    def index(self) -> Index:
        return cached_index(self.path)

    @property
    def is_mars(self) -> bool:
        return self.body == "mars"

    @property
    def is_mosaic(self) -> bool:
        """Whether the index is a registered global mosaic (the body's basemap)."""
        return any(name in BODY_NAMES for name in (self.index.manifest.get("sources") or {}))

    @property
    def gsd(self) -> float:
        """The collection's finest ground sample distance (m/px), NaN when unknown."""
        tiling = self.index.manifest.get("tiling") or {}
        try:
            return float(tiling.get("gsd"))
        except (TypeError, ValueError):
            return math.nan


@dataclass
class BodyMap:
    """One body's map: its ``key`` (URL-safe), ``label`` for the Body selector and the served
    collections on it (names, in the order given; the mosaic, if served, is ``base``)."""

    key: str
    label: str
    collections: list[str] = field(default_factory=list)
    base: str | None = None
    mosaic: str | None = None  # the registered mosaic of the body (mars_8k, earth_8k)


class ServedIndexes:
    """The indexes a process serves: name -> ``Entry`` (``entries``), in the order given, names
    from the index folder names; and grouped by the body they lie on (``bodies``), one map each.

    The body comes from each manifest (``indexer.bodies.body_of_manifest``); chips that lie
    nowhere get a body of their own, named after the index folder.
    """

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise LookalikeError("the explorer needs at least one index")
        self.entries: dict[str, Entry] = {}
        self.bodies: dict[str, BodyMap] = {}
        for p in paths:
            path = Path(p).resolve()
            index = cached_index(path)  # fail early, at startup, on a broken index
            name = path.name
            while name in self.entries:
                name += "_"
            found = body_of_manifest(index.manifest)
            key, label = (found.key, found.name) if found is not None else (name, name)
            while key in self.bodies and found is None:
                key += "_"
            body = self.bodies.setdefault(key, BodyMap(key, label, mosaic=MOSAICS.get(key)))
            entry = Entry(name, collection_label(name, index.manifest), path, key)
            if entry.label in {self.entries[n].label for n in body.collections}:
                entry = Entry(name, f"{entry.label} ({name})", path, key)
            self.entries[name] = entry
            body.collections.append(name)
            if body.base is None and entry.is_mosaic:
                body.base = name

    @property
    def default(self) -> str:
        return next(iter(self.entries))

    @property
    def default_body(self) -> str:
        return self.entries[self.default].body

    def __getitem__(self, name: str) -> Entry:
        if name not in self.entries:
            raise LookalikeError(f"no index named {name!r}; loaded: {', '.join(self.entries)}")
        return self.entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def body(self, key: str) -> BodyMap:
        if key not in self.bodies:
            raise LookalikeError(f"no body named {key!r}; served: {', '.join(self.bodies)}")
        return self.bodies[key]

    def collections(self, body: str) -> dict[str, Entry]:
        """The collections on a body, name -> ``Entry``."""
        return {name: self.entries[name] for name in self.body(body).collections}

    def body_default(self, body: str) -> str:
        """The collection a body's map starts searching: its mosaic, else its first collection."""
        group = self.body(body)
        return group.base or group.collections[0]

    def labels(self) -> dict[str, str]:
        """label -> body key, for the Body selector: bodies only, one entry each."""
        return {group.label: key for key, group in self.bodies.items()}


def collection_label(name: str, manifest: dict) -> str:
    """How the sidebar names a collection: a registered mosaic by its dataset name, other
    indexes by their folder name."""
    sources = list(manifest.get("sources") or {})
    if len(sources) == 1 and sources[0] in BODY_NAMES:
        return f"{BODY_NAMES[sources[0]]} mosaic ({sources[0]})"
    return name
