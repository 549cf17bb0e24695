"""The indexes an explorer process serves, opened once and shared read-only by every session."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from lookalike.errors import LookalikeError
from lookalike.indexer.store import MANIFEST, Index, open_index

log = logging.getLogger(__name__)

# display names of the registered demo mosaics
BODY_NAMES = {"mars_8k": "Mars", "earth_8k": "Earth"}
MARS_RADIUS_M = 3_396_190.0

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
    """One servable index: ``name`` is its URL-safe key, ``label`` what the body selector shows."""

    name: str
    label: str
    path: Path

    @property
    def index(self) -> Index:
        return cached_index(self.path)

    @property
    def is_mars(self) -> bool:
        sources = self.index.manifest.get("sources") or {}
        if "mars" in str(self.index.manifest.get("basemap", "")):
            return True
        if any("mars" in name.lower() for name in sources):
            return True
        for desc in sources.values():
            crs = str(desc.get("crs", ""))
            if "Mars" in crs or str(int(MARS_RADIUS_M)) in crs:
                return True
        return False


class ServedIndexes:
    """The indexes a process serves: name -> ``Entry``, in the order given; names come from the
    index folder names."""

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise LookalikeError("the explorer needs at least one index")
        self.entries: dict[str, Entry] = {}
        for p in paths:
            path = Path(p).resolve()
            cached_index(path)  # fail early, at startup, on a broken index
            name = path.name
            while name in self.entries:
                name += "_"
            sources = list((cached_index(path).manifest.get("sources") or {}))
            label = BODY_NAMES.get(sources[0], path.name) if len(sources) == 1 else path.name
            if cached_index(path).manifest.get("placed_at"):  # chips placed on a planet
                label = f"{BODY_NAMES.get(cached_index(path).manifest.get('basemap'), '')} {path.name}".strip()
            if label in {e.label for e in self.entries.values()}:
                label = f"{label} ({path.name})"
            self.entries[name] = Entry(name, label, path)

    @property
    def default(self) -> str:
        return next(iter(self.entries))

    def __getitem__(self, name: str) -> Entry:
        if name not in self.entries:
            raise LookalikeError(f"no index named {name!r}; loaded: {', '.join(self.entries)}")
        return self.entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def labels(self) -> dict[str, str]:
        """label -> name, for a Select widget."""
        return {e.label: e.name for e in self.entries.values()}
