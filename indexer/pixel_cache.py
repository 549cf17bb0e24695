"""Decoded pictures kept on disk between processes: arrays that take seconds to make and are the
same every time (a source raster decoded onto its lon/lat grid, the levels of a basemap pyramid).

An entry is a folder of ``.npy`` files read back memory-mapped: no decoding, and its pages are
shared with the system's file cache rather than copied into each process. The folder is named by
what the entry is for (``slot``: e.g. a source path and its decoding settings), and its
``meta.json`` holds the full key (the source file's size and modification time, a format
version...), so an entry of a file that changed is a miss and is replaced, never served.

An entry is written into a temporary folder and renamed into place, so a crash never leaves a half
entry that loads; one whose files disagree with its ``meta.json`` is a miss. The cache is bounded
(``MAX_BYTES``): the entries used least recently are removed first. Nothing here raises for a
cache problem: a failed read is a miss, a failed write is logged, and the caller computes the
arrays as if there were no cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from lookalike.config import pixel_cache_dir
from lookalike.fileio import fsync_dir, save_npy

log = logging.getLogger(__name__)

FORMAT = 1
MAX_BYTES = 2 << 30  # the whole cache; the least recently used entries go first
META = "meta.json"


def _folder(slot: dict) -> Path:
    digest = hashlib.sha256(json.dumps(slot, sort_keys=True, default=str).encode()).hexdigest()
    return pixel_cache_dir() / digest[:32]


def _canonical(key: dict) -> dict:
    return json.loads(json.dumps(dict(key, format=FORMAT), sort_keys=True, default=str))


def load(slot: dict, key: dict) -> dict[str, np.ndarray] | None:
    """The arrays stored for ``slot`` under exactly ``key`` (read-only memory maps), or None."""
    folder = _folder(slot)
    try:
        meta = json.loads((folder / META).read_text())
        if meta.get("key") != _canonical(key):
            return None
        arrays = {}
        for name, (shape, dtype) in meta["arrays"].items():
            array = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            if list(array.shape) != shape or array.dtype.str != dtype:
                raise ValueError(f"{name}.npy holds {array.shape} {array.dtype}, not {shape} {dtype}")
            arrays[name] = np.asarray(array)  # a plain view: np.memmap's slicing costs more
        os.utime(folder / META)  # recently used: evicted last
        return arrays
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged: rebuilt by the caller
        log.warning("ignoring the cached pixels in %s: %s", folder, exc)
        return None


def save(slot: dict, key: dict, arrays: dict[str, np.ndarray]) -> None:
    """Store ``arrays`` for ``slot`` under ``key``, replacing what the slot held (best effort)."""
    folder = _folder(slot)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.mkdir(parents=True)
        for name, array in arrays.items():
            save_npy(tmp / f"{name}.npy", np.ascontiguousarray(array))
        meta = dict(
            key=_canonical(key),
            slot=slot,
            arrays={name: [list(a.shape), a.dtype.str] for name, a in arrays.items()},
        )
        (tmp / META).write_text(json.dumps(meta, sort_keys=True, default=str))
        for path in tmp.iterdir():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        if folder.exists():  # a folder cannot be renamed over another: move the old one aside
            old = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.old")
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
    except OSError as exc:
        log.warning("could not cache pixels in %s: %s", folder, exc)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    evict(MAX_BYTES)


def evict(max_bytes: int) -> None:
    """Remove the least recently used entries until the cache holds at most ``max_bytes``
    (and left-over temporary folders of writers that died an hour or more ago)."""
    root = pixel_cache_dir()
    entries = []
    try:
        for folder in root.iterdir():
            if folder.name.startswith("."):
                if time.time() - folder.stat().st_mtime > 3600:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            size = sum(f.stat().st_size for f in folder.iterdir())
            used = (folder / META).stat().st_mtime if (folder / META).exists() else 0.0
            entries.append((used, size, folder))
    except OSError as exc:
        log.warning("could not list the pixel cache %s: %s", root, exc)
        return
    total = sum(size for _, size, _ in entries)
    for _, size, folder in sorted(entries):
        if total <= max_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= size
